import Foundation
import SwitchboardCore

/// The deploy policy in Redis (`<kp>:deploy`: fields `policy`, JSON, and `revision`), its history (stream
/// `<kp>:deploy:history`) and placements per version (`<kp>:deploy:stats:<10 s bucket>`). A change is one
/// script, conditional on the revision it was made from, so two operators cannot overwrite each other; every
/// read comes with Redis's clock, which the rollback window is measured on.
public struct DeployStore: Sendable {
    public let redis: RedisClient
    public let keys: RedisKeys
    /// History entries kept (about).
    public var historyLength = 1000

    public init(redis: RedisClient, keys: RedisKeys) {
        self.redis = redis
        self.keys = keys
    }

    static let readScript = RedisScript("""
        -- KEYS[1]: the policy hash. Returns {policy JSON or '', Redis's clock in ms}.
        local t = redis.call('TIME')
        local now = string.format('%.0f', math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000))
        return {redis.call('HGET', KEYS[1], 'policy') or '', now}
        """)

    /// The policy in force (`.none` if there is none yet) and Redis's clock now (Unix ms).
    public func read(deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> (policy: DeployPolicy, nowMillis: Int64) {
        let reply = try await redis.evaluate(Self.readScript, keys: [keys.deploy], deadline: deadline).array ?? []
        guard reply.count == 2, let text = reply[0].string, let now = reply[1].int else {
            throw SwitchboardError(.serverError, "unexpected reply reading the deploy policy")
        }
        guard !text.isEmpty else { return (.none, now) }
        return (try Self.decodePolicy(text), now)
    }

    /// A policy as Redis keeps it, read back like network input.
    public static func decodePolicy(_ text: String) throws(SwitchboardError) -> DeployPolicy {
        let policy: DeployPolicy
        do {
            policy = try JSONDecoder().decode(DeployPolicy.self, from: Data(text.utf8))
        } catch {
            throw SwitchboardError(.badMessage, "the deploy policy in Redis cannot be read: \(error)")
        }
        try policy.validate()
        return policy
    }

    static let writeScript = RedisScript("""
        -- KEYS[1]: the policy hash, KEYS[2]: the history stream. ARGV: expected revision, new revision, policy
        -- JSON, history length, then the history entry's field/value pairs. Returns {1, revision} when written,
        -- {0, current revision} when the policy changed since it was read.
        local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
        if current ~= tonumber(ARGV[1]) then return {0, current} end
        redis.call('HSET', KEYS[1], 'policy', ARGV[3], 'revision', ARGV[2])
        local entry = {}
        for i = 5, #ARGV do entry[#entry + 1] = ARGV[i] end
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
        return {1, tonumber(ARGV[2])}
        """)

    /// Writes `policy` if the one in Redis is still at `stored` (by default the revision before `policy`'s);
    /// `conflict` (naming the current revision) when another change came first.
    public func write(_ policy: DeployPolicy, over stored: Int64? = nil, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) {
        try policy.validate()
        let json = String(decoding: WireCodec.encode(policy), as: UTF8.self)
        let expected = stored ?? policy.revision - 1
        var arguments = [String(expected), String(policy.revision), json, String(historyLength)]
        for (field, value) in DeployHistoryEntry(policy: policy).fields { arguments += [field, value] }
        let reply = try await redis.evaluate(Self.writeScript, keys: [keys.deploy, keys.deployHistory], arguments: arguments,
                                             deadline: deadline).array ?? []
        guard reply.count == 2, let written = reply[0].int, let revision = reply[1].int else {
            throw SwitchboardError(.serverError, "unexpected reply writing the deploy policy")
        }
        guard written == 1 else {
            throw SwitchboardError(.conflict, "the deploy policy changed meanwhile: it is at revision \(revision) now, not \(expected); look again (switchboard deploy status) and retry",
                                   context: ["revision": "\(revision)"])
        }
    }

    /// The latest changes, newest first.
    public func history(limit: Int) async throws(SwitchboardError) -> [DeployHistoryEntry] {
        guard (1...1000).contains(limit) else { throw SwitchboardError(.invalidArgument, "limit must be 1-1000, got \(limit)") }
        let reply = try await redis.send(["XREVRANGE", keys.deployHistory, "+", "-", "COUNT", String(limit)])
        return (reply.array ?? []).compactMap { item in
            guard let parts = item.array, parts.count == 2, let flat = parts[1].array else { return nil }
            var fields: [String: String] = [:]
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let key = flat[i].string { fields[key] = flat[i + 1].string ?? "" }
            }
            return DeployHistoryEntry(fields: fields)
        }
    }

    // MARK: - Placements per version

    /// Placements are counted in buckets of this length; "the last minute" is the six latest.
    public static let statsBucket: Int64 = 10_000

    static let countScript = RedisScript("""
        -- KEYS[1]: a prefix for bucket keys. ARGV: bucket length ms, ttl ms; then field, count pairs. The bucket
        -- is Redis's clock's.
        local t = redis.call('TIME')
        local now = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
        local key = KEYS[1] .. string.format('%.0f', now - now % tonumber(ARGV[1]))
        for i = 3, #ARGV, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
        redis.call('PEXPIRE', key, ARGV[2])
        return 1
        """)

    /// Adds a router's counts (`version|result` → n) to the current bucket.
    public func count(_ counts: [String: Int], deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) {
        guard !counts.isEmpty else { return }
        var arguments = [String(Self.statsBucket), String(Self.statsBucket * 9)]
        for (field, n) in counts.sorted(by: { $0.key < $1.key }) { arguments += [field, String(n)] }
        _ = try await redis.evaluate(Self.countScript, keys: [keys.deployStats("")], arguments: arguments, deadline: deadline)
    }

    /// Counts over the last minute (the six latest buckets, the current one partial): `version|result` → n.
    public func lastMinute(nowMillis: Int64) async throws(SwitchboardError) -> [String: Int] {
        let current = nowMillis - nowMillis % Self.statsBucket
        let buckets = (0..<6).map { current - Int64($0) * Self.statsBucket }
        let replies = try await redis.pipeline(buckets.map { RedisCommand(["HGETALL", keys.deployStats(String($0))]) })
        var totals: [String: Int] = [:]
        for reply in replies {
            let flat = reply.array ?? []
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let field = flat[i].string, let n = flat[i + 1].int { totals[field, default: 0] += Int(clamping: n) }
            }
        }
        return totals
    }
}

/// One change of the deploy policy, as the history stream keeps it.
public struct DeployHistoryEntry: Codable, Sendable, Equatable {
    public var revision: Int64
    public var action: String
    public var active: String
    public var canary: String?
    public var canaryPercent: Double?
    public var atMillis: Int64
    public var actor: String

    enum CodingKeys: String, CodingKey {
        case revision, action, active, canary, actor
        case canaryPercent = "canary_percent", atMillis = "at_ms"
    }

    public init(policy: DeployPolicy) {
        revision = policy.revision
        action = policy.action?.rawValue ?? "deploy"
        active = policy.active ?? ""
        canary = policy.canary?.version
        canaryPercent = policy.canary?.percent
        atMillis = policy.changedAtMillis
        actor = policy.changedBy
    }

    var fields: [(String, String)] {
        var fields = [("revision", String(revision)), ("action", action), ("active", active), ("at_ms", String(atMillis)),
                      ("actor", actor)]
        if let canary, let canaryPercent { fields += [("canary", canary), ("canary_percent", String(canaryPercent))] }
        return fields
    }

    init?(fields: [String: String]) {
        guard let revision = fields["revision"].flatMap(Int64.init), let action = fields["action"], let active = fields["active"],
              let at = fields["at_ms"].flatMap(Int64.init) else { return nil }
        self.revision = revision
        self.action = action
        self.active = active
        canary = fields["canary"]
        canaryPercent = fields["canary_percent"].flatMap(Double.init).flatMap { $0.isFinite ? $0 : nil }
        atMillis = at
        actor = fields["actor"] ?? ""
    }
}
