import SwitchboardCore

/// Workers' drains in Redis (`<kp>:drains`: one field per worker, its `DrainRequest` as JSON). A drain is kept
/// here so it outlives the router that asked for it and the worker's reconnects: routers read all of them at
/// start and now and then; a worker reads its own at start, on reconnect and every refresh.
public struct DrainStore: Sendable {
    public let redis: RedisClient
    public let keys: RedisKeys

    public init(redis: RedisClient, keys: RedisKeys) {
        self.redis = redis
        self.keys = keys
    }

    /// Keeps `request` as its worker's drain (replacing any before).
    public func save(_ request: DrainRequest) async throws(SwitchboardError) {
        _ = try await redis.send(["HSET", keys.drains, request.workerID, String(decoding: WireCodec.encode(request), as: UTF8.self)])
    }

    /// `workerID`'s drain, nil when it has none.
    public func load(_ workerID: String) async throws(SwitchboardError) -> DrainRequest? {
        guard let text = try await redis.send(["HGET", keys.drains, workerID]).string else { return nil }
        return try DrainRequest.decodeStored(text)
    }

    /// Every worker's drain. A record that cannot be read (or names another worker than its field) is left out
    /// and its worker returned in `unreadable`.
    public func loadAll() async throws(SwitchboardError) -> (drains: [String: DrainRequest], unreadable: [String]) {
        var drains: [String: DrainRequest] = [:], unreadable: [String] = []
        for (worker, text) in try await redis.hashGetAll(keys.drains) {
            if let request = try? DrainRequest.decodeStored(text), request.workerID == worker {
                drains[worker] = request
            } else {
                unreadable.append(worker)
            }
        }
        return (drains, unreadable.sorted())
    }

    /// Takes `workerID`'s drain out, whatever it is.
    public func remove(_ workerID: String) async throws(SwitchboardError) {
        _ = try await redis.send(["HDEL", keys.drains, workerID])
    }

    /// Takes `request` out only if it is still its worker's drain: a drain written since (another router's) is
    /// left. True when it was taken out.
    @discardableResult
    public func remove(ifStill request: DrainRequest) async throws(SwitchboardError) -> Bool {
        let removed = try await redis.evaluate(Self.removeIfStillScript, keys: [keys.drains],
                                               arguments: [request.workerID, request.requestedBy, String(request.requestedAtMillis)])
        return removed.int == 1
    }

    /// Deletes the drain of worker ARGV[1] if it is the request asked by ARGV[2] at ARGV[3] (Unix ms).
    static let removeIfStillScript = RedisScript("""
        local stored = redis.call('HGET', KEYS[1], ARGV[1])
        if not stored then return 0 end
        local ok, request = pcall(cjson.decode, stored)
        if ok and type(request) == 'table' and request.requested_by == ARGV[2]
            and request.requested_at_ms == tonumber(ARGV[3]) then
            return redis.call('HDEL', KEYS[1], ARGV[1])
        end
        return 0
        """)
}
