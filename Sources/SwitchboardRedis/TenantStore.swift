import CCrypto
import Foundation
import SwitchboardCore

/// Tenant API keys: random, shown once, stored only as a SHA-256 hash.
public enum APIKey {
    /// `sbk_` and 48 hex digits (192 random bits from OpenSSL).
    public static func generate() -> String {
        var bytes = [UInt8](repeating: 0, count: 24)
        precondition(RAND_bytes(&bytes, Int32(bytes.count)) == 1, "OpenSSL's random source failed")
        return "sbk_" + hex(bytes)
    }

    /// Hex SHA-256 of the key. Keys are random, so a plain hash is safe to store: nothing to guess from it.
    public static func hash(_ key: String) -> String {
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        let bytes = Array(key.utf8)
        _ = SHA256(bytes, bytes.count, &digest)
        return hex(digest)
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0xf)]] }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Tenants kept in Redis: each tenant's policy and the hashes of its keys (`<kp>:tenants`, id → JSON), and an
/// index from key hash to tenant (`<kp>:tenant-keys`). Changes are scripts, so the two never disagree.
public struct TenantStore: Sendable {
    public struct Record: Codable, Sendable, Equatable {
        public var policy: TenantPolicy
        public var keyHashes: [String]

        enum CodingKeys: String, CodingKey {
            case policy
            case keyHashes = "key_hashes"
        }
    }

    public let redis: RedisClient
    public let keys: RedisKeys

    public init(redis: RedisClient, keys: RedisKeys) {
        self.redis = redis
        self.keys = keys
    }

    static let createScript = RedisScript("""
        -- KEYS: tenants, key index. ARGV: id, record JSON, key hash.
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
        return 1
        """)

    static let replaceScript = RedisScript("""
        -- KEYS: tenants, key index. ARGV: id, record JSON, key hashes to drop (comma-separated), key hash to add or ''.
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        for hash in string.gmatch(ARGV[3], '[^,]+') do redis.call('HDEL', KEYS[2], hash) end
        if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[4], ARGV[1]) end
        return 1
        """)

    static let deleteScript = RedisScript("""
        -- KEYS: tenants, key index. ARGV: id, its key hashes (comma-separated).
        if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
        for hash in string.gmatch(ARGV[2], '[^,]+') do redis.call('HDEL', KEYS[2], hash) end
        return 1
        """)

    /// Creates a tenant; returns its first API key (shown once: only its hash is kept).
    public func create(_ policy: TenantPolicy) async throws(SwitchboardError) -> String {
        try policy.validate()
        let key = APIKey.generate()
        let record = Record(policy: policy, keyHashes: [APIKey.hash(key)])
        let created = try await redis.evaluate(Self.createScript, keys: [keys.tenants, keys.tenantKeys],
                                               arguments: [policy.id, Self.json(record), APIKey.hash(key)])
        guard created.int == 1 else { throw SwitchboardError(.conflict, "tenant '\(policy.id)' exists already") }
        return key
    }

    public func get(_ id: String, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> Record {
        guard let json = try await redis.send(["HGET", keys.tenants, id], deadline: deadline).string else {
            throw SwitchboardError(.notFound, "no tenant '\(id)'")
        }
        return try Self.record(json, id)
    }

    /// Every tenant, sorted by id.
    public func list() async throws(SwitchboardError) -> [Record] {
        var records: [Record] = []
        for (id, json) in try await redis.hashGetAll(keys.tenants) { records.append(try Self.record(json, id)) }
        return records.sorted { $0.policy.id < $1.policy.id }
    }

    /// Replaces a tenant's limits; its keys stay.
    public func update(_ policy: TenantPolicy) async throws(SwitchboardError) {
        try policy.validate()
        var record = try await get(policy.id)
        record.policy = policy
        try await replace(record, dropping: [], adding: nil)
    }

    /// Issues a new key; the old ones stop working unless `keepOld` (for a handover, then rotate again).
    public func rotateKey(_ id: String, keepOld: Bool = false) async throws(SwitchboardError) -> String {
        var record = try await get(id)
        let key = APIKey.generate(), hash = APIKey.hash(key)
        let dropped = keepOld ? [] : record.keyHashes
        record.keyHashes = (keepOld ? record.keyHashes : []) + [hash]
        try await replace(record, dropping: dropped, adding: hash)
        return key
    }

    public func delete(_ id: String) async throws(SwitchboardError) {
        let record = try await get(id)
        let deleted = try await redis.evaluate(Self.deleteScript, keys: [keys.tenants, keys.tenantKeys],
                                               arguments: [id, record.keyHashes.joined(separator: ",")])
        guard deleted.int == 1 else { throw SwitchboardError(.notFound, "no tenant '\(id)'") }
    }

    /// The tenant a key belongs to; `authenticationFailed` for an unknown key.
    public func authenticate(_ key: String, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> TenantPolicy {
        guard key.hasPrefix("sbk_"), key.utf8.count <= 128,
              let id = try await redis.send(["HGET", keys.tenantKeys, APIKey.hash(key)], deadline: deadline).string
        else { throw SwitchboardError(.authenticationFailed, "unknown API key") }
        do {
            return try await get(id, deadline: deadline).policy
        } catch where error.code == .notFound {
            throw SwitchboardError(.authenticationFailed, "unknown API key")
        }
    }

    private func replace(_ record: Record, dropping: [String], adding: String?) async throws(SwitchboardError) {
        let replaced = try await redis.evaluate(Self.replaceScript, keys: [keys.tenants, keys.tenantKeys],
                                                arguments: [record.policy.id, Self.json(record), dropping.joined(separator: ","),
                                                            adding ?? ""])
        guard replaced.int == 1 else { throw SwitchboardError(.notFound, "no tenant '\(record.policy.id)'") }
    }

    private static func json(_ record: Record) -> String { String(decoding: WireCodec.encode(record), as: UTF8.self) }

    /// A tenant's record as Redis keeps it, read back like network input.
    static func record(_ json: String, _ id: String) throws(SwitchboardError) -> Record {
        let record: Record
        do {
            record = try JSONDecoder().decode(Record.self, from: Data(json.utf8))
        } catch {
            throw SwitchboardError(.internalError, "tenant '\(id)' is stored in a form this build cannot read: \(error)")
        }
        do {
            try record.policy.validate()  // read back like network input
        } catch {
            throw SwitchboardError(.internalError, "tenant '\(id)' is stored with limits this build refuses: \(error.message)")
        }
        return record
    }
}
