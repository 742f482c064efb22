import SwitchboardCore

/// How to reach Redis. Plain values with defaults.
public struct RedisConfiguration: Sendable {
    /// The server (`redis://`), or for `redis-sentinel://` the first Sentinel (for logs; see `sentinel`).
    public var endpoint: Endpoint
    /// Sentinels that name the primary (`redis-sentinel://`); nil: `endpoint` is the server.
    public var sentinel: Sentinel?
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
    /// Replicas that must hold a write before it counts as done (`WAIT` in the same round trip): with 1, a
    /// write a caller was told succeeded survives the primary's loss and a failover. A write fewer replicas
    /// confirm within its deadline fails with `unavailable` (the primary has it; a failover may lose it).
    /// 0: Redis's own asynchronous replication (the default for `redis://`; 1 for `redis-sentinel://`).
    public var replicasToAck: Int

    public var host: String { endpoint.host }
    public var port: Int { endpoint.port }
    public var username: String?
    public var password: String?
    /// Database number from the URL path (`redis://host:6379/2`), 0 by default.
    public var database: Int

    /// The Sentinels of a primary.
    public struct Sentinel: Sendable, Equatable {
        public var addresses: [Endpoint]
        /// The name the Sentinels monitor the primary under (`sentinel monitor <name> ...`).
        public var primaryName: String
        /// The Sentinels' own credentials (`requirepass` in sentinel.conf), apart from the primary's.
        public var username: String?
        public var password: String?
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]` or
    /// `redis-sentinel://[[user]:password@]host1[:26379],host2[:26379]/<primary name>[/db]` (the credentials
    /// are the primary's; the Sentinels' own are `sentinel.password`).
    public init(url: String) throws(SwitchboardError) {
        let text = url.trimmingCharacters(in: .whitespaces)
        if text.lowercased().hasPrefix("redis-sentinel://") {
            let (sentinel, username, password, database) = try Self.parseSentinel(text)
            let first = sentinel.addresses[0]
            self.init(endpoint: Endpoint(scheme: "redis-sentinel", host: first.host, port: first.port, path: sentinel.primaryName),
                      sentinel: sentinel, username: username, password: password, database: database, replicasToAck: 1)
            return
        }
        let endpoint = try Endpoint.parse(text, defaultScheme: "redis", defaultPort: 6379)
        guard endpoint.scheme == "redis" else {
            throw SwitchboardError(.invalidArgument, "unsupported Redis URL scheme '\(endpoint.scheme)' (redis:// or redis-sentinel:// ; TLS is not supported by this hiredis)")
        }
        self.init(endpoint: endpoint, sentinel: nil, username: endpoint.user, password: endpoint.password,
                  database: try Self.database(endpoint.path, in: endpoint.redacted), replicasToAck: 0)
    }

    private init(endpoint: Endpoint, sentinel: Sentinel?, username: String?, password: String?, database: Int, replicasToAck: Int) {
        self.endpoint = endpoint
        self.sentinel = sentinel
        self.username = username
        self.password = password
        self.database = database
        self.replicasToAck = replicasToAck
    }

    private static func parseSentinel(_ text: String) throws(SwitchboardError)
        -> (sentinel: Sentinel, username: String?, password: String?, database: Int)
    {
        let url = Substring(text.dropFirst("redis-sentinel://".count))
        // The path starts at the first `/` after the user info (a password may hold `/`).
        let hostStart = url.lastIndex(of: "@").map { url.index(after: $0) } ?? url.startIndex
        let slash = url[hostStart...].firstIndex(of: "/") ?? url.endIndex
        var authority = url[..<slash]
        let (user, password) = Endpoint.takeUserInfo(from: &authority)
        // After the hosts: /<primary name>[/db]
        let path = slash == url.endIndex ? [] : url[url.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
        guard let name = path.first.map(String.init), !name.isEmpty else {
            throw SwitchboardError(.invalidArgument, "a Sentinel URL names the primary: redis-sentinel://host1:26379,host2:26379/<primary name>[/db]")
        }
        guard path.count <= 2 else { throw SwitchboardError(.invalidArgument, "too many path parts in the Sentinel URL") }
        var addresses: [Endpoint] = []
        for host in authority.split(separator: ",") {
            addresses.append(try Endpoint.parse("redis://" + host, defaultScheme: "redis", defaultPort: 26379))
        }
        guard !addresses.isEmpty else { throw SwitchboardError(.invalidArgument, "no Sentinel address in the Sentinel URL") }
        guard addresses.count <= 16 else { throw SwitchboardError(.invalidArgument, "at most 16 Sentinels in the URL") }
        do {
            try WireCheck.text(name, "Sentinel primary name", max: 128)
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        let database = try database(path.count == 2 && !path[1].isEmpty ? String(path[1]) : nil, in: "the Sentinel URL")
        return (Sentinel(addresses: addresses, primaryName: name), user, password, database)
    }

    private static func database(_ path: String?, in url: String) throws(SwitchboardError) -> Int {
        guard let path else { return 0 }
        guard let db = Int(path), (0...15_999).contains(db) else {
            throw SwitchboardError(.invalidArgument, "bad Redis database '\(path)' in '\(url)'")
        }
        return db
    }

    /// The address for logs and status output, passwords hidden.
    public var redacted: String {
        guard let sentinel else { return endpoint.redacted }
        let hosts = sentinel.addresses.map { "\($0.host.contains(":") ? "[\($0.host)]" : $0.host):\($0.port)" }
        return "redis-sentinel://\(password == nil ? "" : ":***@")\(hosts.joined(separator: ","))/\(sentinel.primaryName)\(database == 0 ? "" : "/\(database)")"
    }

    /// How to reach one Sentinel: a direct configuration with the Sentinels' credentials.
    func sentinelConnection(_ index: Int) -> RedisConfiguration {
        var c = self
        c.sentinel = nil
        c.endpoint = sentinel!.addresses[index]
        c.username = sentinel!.username
        c.password = sentinel!.password
        c.database = 0
        c.replicasToAck = 0
        c.commandTimeout = connectTimeout
        return c
    }

    func validate() throws(SwitchboardError) {
        guard (1...256).contains(poolSize) else { throw SwitchboardError(.invalidArgument, "Redis pool size must be 1...256") }
        guard maxQueuedCommands >= 1 else { throw SwitchboardError(.invalidArgument, "Redis maxQueuedCommands must be at least 1") }
        guard connectTimeout > .zero, commandTimeout > .zero else {
            throw SwitchboardError(.invalidArgument, "Redis timeouts must be positive")
        }
        guard (0...16).contains(replicasToAck) else { throw SwitchboardError(.invalidArgument, "Redis replicas to ack must be 0...16") }
    }
}
