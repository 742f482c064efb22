import SwitchboardCore

/// How to reach Redis. Plain values with defaults.
public struct RedisConfiguration: Sendable {
    public var endpoint: Endpoint
    /// Connections in the pool, each on a thread of its own.
    public var poolSize = 4
    public var connectTimeout: Duration = .seconds(2)
    /// Time one command (or one pipeline) may take before it fails with `timeout`, counted from the call,
    /// so time spent waiting for a free connection counts; a caller may pass a deadline of its own instead.
    public var commandTimeout: Duration = .seconds(2)
    /// Commands that may wait for a free connection; one more fails at once with `unavailable`. A server
    /// that cannot keep up then sheds load at the door instead of making every caller wait out its timeout.
    public var maxQueuedCommands = 1024
    /// Largest command or pipeline accepted, in argument bytes.
    public var maxCommandBytes = 64 * 1024 * 1024

    public var host: String { endpoint.host }
    public var port: Int { endpoint.port }
    public var username: String? { endpoint.user }
    public var password: String? { endpoint.password }
    /// Database number from the URL path (`redis://host:6379/2`), 0 by default.
    public var database: Int

    /// Parses `redis://[[user]:password@]host[:port][/db]`.
    public init(url: String) throws(SwitchboardError) {
        let endpoint = try Endpoint.parse(url, defaultScheme: "redis", defaultPort: 6379)
        guard endpoint.scheme == "redis" else {
            throw SwitchboardError(.invalidArgument, "unsupported Redis URL scheme '\(endpoint.scheme)' (only redis:// ; TLS is not supported by this hiredis)")
        }
        var database = 0
        if let path = endpoint.path {
            guard let db = Int(path), (0...15_999).contains(db) else {
                throw SwitchboardError(.invalidArgument, "bad Redis database '\(path)' in '\(endpoint.redacted)'")
            }
            database = db
        }
        self.endpoint = endpoint
        self.database = database
    }

    func validate() throws(SwitchboardError) {
        guard (1...256).contains(poolSize) else { throw SwitchboardError(.invalidArgument, "Redis pool size must be 1...256") }
        guard maxQueuedCommands >= 1 else { throw SwitchboardError(.invalidArgument, "Redis maxQueuedCommands must be at least 1") }
        guard connectTimeout > .zero, commandTimeout > .zero else {
            throw SwitchboardError(.invalidArgument, "Redis timeouts must be positive")
        }
    }
}
