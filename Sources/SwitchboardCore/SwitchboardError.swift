/// The one error type of Switchboard: a `Code` that callers switch on and that the HTTP API and the CLI map
/// to a status and an exit code, plus a human message and optional context (the C library's own text, a
/// subject, a key...).
///
/// A struct with an open set of codes rather than an enum, so a new code is not a breaking change
/// (see docs/decisions/0002-error-struct.md).
public struct SwitchboardError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Input and protocol
        /// Bytes that do not decode as the expected message (schema, encoding, version).
        public static let badMessage = Code(rawValue: "bad_message")
        /// A caller's argument is out of range or malformed (a subject, a URL, a setting).
        public static let invalidArgument = Code(rawValue: "invalid_argument")
        /// A message or payload over its size limit.
        public static let tooLarge = Code(rawValue: "too_large")

        // Connections and requests
        public static let connectionFailed = Code(rawValue: "connection_failed")
        public static let connectionClosed = Code(rawValue: "connection_closed")
        public static let authenticationFailed = Code(rawValue: "authentication_failed")
        /// A valid credential, but not one that may do this (a tenant's key on an operator endpoint).
        public static let forbidden = Code(rawValue: "forbidden")
        public static let tlsFailed = Code(rawValue: "tls_failed")
        public static let timeout = Code(rawValue: "timeout")
        public static let noResponders = Code(rawValue: "no_responders")
        public static let cancelled = Code(rawValue: "cancelled")
        public static let slowConsumer = Code(rawValue: "slow_consumer")

        /// The server answered with an error (a Redis error reply, a NATS protocol error).
        public static let serverError = Code(rawValue: "server_error")
        /// Audio that the codec cannot encode or decode.
        public static let codecError = Code(rawValue: "codec_error")
        // Cluster
        /// No worker could take the call (none eligible, all full or refusing, the deadline passed).
        public static let noCapacity = Code(rawValue: "no_capacity")
        /// The named call, worker or resource does not exist.
        public static let notFound = Code(rawValue: "not_found")
        /// The thing to create exists already, or it is not in a state for what was asked.
        public static let conflict = Code(rawValue: "conflict")
        /// No live worker runs the version named (a deploy or rollback to it would place nothing).
        public static let versionNotFound = Code(rawValue: "version_not_found")
        /// A tenant's rate of new calls is used up for now; retry after the time the error says.
        public static let rateLimited = Code(rawValue: "rate_limited")
        /// A tenant holds as many live calls as it may.
        public static let quotaExceeded = Code(rawValue: "quota_exceeded")
        /// A tenant used its call minutes or spending for the month (new calls only; live calls go on).
        public static let usageLimit = Code(rawValue: "usage_limit")
        /// A byte range wholly past the end of what was asked for (HTTP 416).
        public static let rangeNotSatisfiable = Code(rawValue: "range_not_satisfiable")
        /// A dependency (NATS, Redis) is unreachable; try again.
        public static let unavailable = Code(rawValue: "unavailable")

        /// A failure inside a library that fits no other code; the message carries the library's text.
        public static let internalError = Code(rawValue: "internal_error")
    }

    public var code: Code
    public var message: String
    /// Extra facts for logs: the C library's status name, a subject, a server address.
    public var context: [String: String]
    /// The scheduler's reasoning, when a caller asked why a call could not be placed.
    public var explanation: Scheduler.Explanation?

    public init(_ code: Code, _ message: String, context: [String: String] = [:]) {
        self.code = code
        self.message = message
        self.context = context
    }

    public var description: String {
        guard !context.isEmpty else { return "\(code): \(message)" }
        let facts = context.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "\(code): \(message) (\(facts))"
    }
}
