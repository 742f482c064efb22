import SwitchboardCore

/// How to reach and talk to NATS. Plain values with defaults; the executable fills them from flags,
/// environment and a file.
public struct NATSConfiguration: Sendable {
    /// Server URLs (`nats://host:port`, `tls://host:port`); the client fails over between them.
    public var servers: [String]
    /// Shown by the server in its connection list (`nats-server` monitoring), e.g. `router-1`.
    public var name: String?
    public var user: String?
    public var password: String?
    public var token: String?
    /// A `.creds` file (user JWT and NKey seed), as `nsc` and `switchboard nats-config` write it.
    public var credentialsFile: String?
    /// A user JWT and its NKey seed held in memory (a caller's per-call media credential).
    public var credentials: Credentials?
    /// A file holding an NKey seed alone (`SU...`), for servers that list users by NKey.
    public var nkeySeedFile: String?
    /// Where request replies arrive (`<prefix>.<random>.<n>`): a role's own part of `_INBOX` on a bus with
    /// per-role permissions (see `BusRole.inboxPrefix`). Nil: this connection makes no requests and subscribes
    /// to no inbox (a caller's per-call media connection may not).
    public var inboxPrefix: String? = "_INBOX"
    public var tls: TLS?
    public var reconnect = Reconnect()
    /// Time allowed to open the TCP connection and finish the handshake.
    public var connectTimeout: Duration = .seconds(2)
    /// Messages a subscription buffers for a slow consumer before it drops (and counts) new ones.
    public var pendingLimit = 65_536
    /// Bytes of payload a subscription buffers, likewise (a flood of large messages cannot grow memory
    /// without bound). The reply inbox keeps to both too.
    public var pendingBytesLimit = 64 * 1024 * 1024
    /// Threads that deliver messages to every subscription of this process, however many there are.
    public var deliveryThreads = 2

    public struct Credentials: Sendable, Equatable {
        public var jwt: String
        public var seed: String
        public init(jwt: String, seed: String) {
            self.jwt = jwt
            self.seed = seed
        }

        /// Reads a `.creds` file's text: the JWT and the seed between their BEGIN/END lines.
        public init(creds text: String) throws(SwitchboardError) {
            func block(_ name: String) -> String? {
                guard let begin = text.range(of: "-----BEGIN \(name)-----"), let end = text.range(of: "------END \(name)------"),
                      begin.upperBound < end.lowerBound else { return nil }
                return text[begin.upperBound..<end.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard let jwt = block("NATS USER JWT"), let seed = block("USER NKEY SEED"), !jwt.isEmpty, !seed.isEmpty else {
                throw SwitchboardError(.invalidArgument, "not a NATS credentials file (a user JWT and a seed)")
            }
            self.init(jwt: jwt, seed: seed)
        }
    }

    public struct TLS: Sendable {
        /// CA bundle that signed the server's certificate.
        public var caFile: String?
        /// Client certificate and key, for servers that verify clients.
        public var certificateFile: String?
        public var keyFile: String?
        /// Host name to expect in the server's certificate when it differs from the URL's host.
        public var expectedHostname: String?
        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, expectedHostname: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.expectedHostname = expectedHostname
        }
    }

    public struct Reconnect: Sendable {
        public var enabled = true
        /// Attempts per server before giving up; -1 retries for ever (a long-lived process wants that).
        public var maxAttempts = -1
        public var wait: Duration = .milliseconds(250)
        public var jitter: Duration = .milliseconds(100)
        /// Bytes of publishes buffered while reconnecting; publishes beyond it fail with an error.
        public var bufferBytes = 8 * 1024 * 1024
        public init() {}
    }

    public init(servers: [String] = ["nats://127.0.0.1:4222"], name: String? = nil) {
        self.servers = servers
        self.name = name
    }
}

