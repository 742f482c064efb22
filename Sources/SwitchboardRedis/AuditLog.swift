import SwitchboardCore

/// The audit stream of operator actions (`<kp>:audit`): who, what, when, outcome. Appended by routers (API
/// actions) and workers (drains a signal started); trimmed near `length` entries.
public struct AuditLog: Sendable {
    public let redis: RedisClient
    public let keys: RedisKeys
    public var length: Int

    public init(redis: RedisClient, keys: RedisKeys, length: Int = 10_000) {
        self.redis = redis
        self.keys = keys
        self.length = length
    }

    public func append(_ entry: AuditEntry) async throws(SwitchboardError) {
        var command = ["XADD", keys.audit, "MAXLEN", "~", String(length), "*"]
        for (field, value) in entry.fields { command += [field, value] }
        _ = try await redis.send(command)
    }

    /// The latest entries, newest first.
    public func entries(limit: Int) async throws(SwitchboardError) -> [AuditEntry] {
        guard (1...10_000).contains(limit) else { throw SwitchboardError(.invalidArgument, "limit must be 1-10000, got \(limit)") }
        let reply = try await redis.send(["XREVRANGE", keys.audit, "+", "-", "COUNT", String(limit)])
        return (reply.array ?? []).compactMap { item in
            guard let parts = item.array, parts.count == 2, let id = parts[0].string, let flat = parts[1].array else { return nil }
            var fields: [String: String] = [:]
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let key = flat[i].string { fields[key] = flat[i + 1].string ?? "" }
            }
            return AuditEntry(id: id, fields: fields)
        }
    }
}
