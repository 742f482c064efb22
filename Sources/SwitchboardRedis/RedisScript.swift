import SwitchboardCore

/// A Lua script, run by its SHA-1 (`EVALSHA`) so only the hash crosses the wire; `RedisClient.evaluate`
/// loads it when Redis does not know it.
public struct RedisScript: Sendable, Equatable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hex(source)
    }
}
