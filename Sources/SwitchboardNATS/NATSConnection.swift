import CNATS
import Foundation
import Logging
import SwitchboardCore
import Synchronization

/// A connection to NATS over nats.c: publish, subscribe, request/reply, flush, drain.
///
/// One object owns the `natsConnection *` and destroys it exactly once (in `deinit`). Every method is safe to
/// call from any task; nats.c locks internally. No method blocks a thread of Swift's cooperative pool:
/// requests are a publish plus a continuation resumed by the reply (see `RequestMultiplexer`), and the few
/// calls that block in nats.c (connect, flush, round-trip ping) run on a thread of their own.
public final class NATSConnection: @unchecked Sendable {  // `handle` is immutable; nats.c is thread-safe; state below is in Mutexes
    let handle: OpaquePointer
    private let sink: NATSEventSink
    private let requests: RequestMultiplexer?
    public let configuration: NATSConfiguration
    public let logger: Logger
    /// Largest payload the server accepts, learned at connect.
    public let maxPayload: Int

    /// Connection events (disconnected, reconnected, closed, errors); they are also logged.
    public var events: AsyncStream<NATSConnectionEvent> { sink.events }

    private init(handle: OpaquePointer, sink: NATSEventSink, configuration: NATSConfiguration, logger: Logger) throws(SwitchboardError) {
        self.handle = handle
        self.sink = sink
        self.configuration = configuration
        self.logger = logger
        self.maxPayload = Int(natsConnection_GetMaxPayload(handle))
        self.requests = try configuration.inboxPrefix.map { prefix throws(SwitchboardError) in
            try RequestMultiplexer(connection: handle, inboxPrefix: prefix, pendingLimit: configuration.pendingLimit,
                                   pendingBytes: configuration.pendingBytesLimit)
        }
    }

    deinit {
        sink.markClosing()
        requests?.failAll(SwitchboardError(.connectionClosed, "connection released"))
        natsConnection_Destroy(handle)  // closes first if still open; nats.c reports `closed` on its own thread
    }

    /// Connects to the first reachable server of `configuration.servers`.
    public static func connect(_ configuration: NATSConfiguration, logger: Logger = Logger(label: "switchboard.nats")) async throws(SwitchboardError) -> NATSConnection {
        NATSLibrary.open(deliveryThreads: configuration.deliveryThreads)
        let identity = try configuration.identity()
        var attempt = 0
        while true {
            attempt += 1
            let sink = NATSEventSink(logger: logger, identity: identity)
            do {
                return try await connect(configuration, sink: sink, logger: logger)
            } catch where sink.unsendableSignature.load(ordering: .relaxed) && attempt < 8 {
                continue  // one nonce in 256 gets a signature nats.c cannot send: the next nonce will do
            }
        }
    }

    private static func connect(_ configuration: NATSConfiguration, sink: NATSEventSink, logger: Logger) async throws(SwitchboardError) -> NATSConnection {
        let options = try NATSOptions(configuration, sink: sink)
        let handle = try await onBlockingThread("nats-connect") { () throws(SwitchboardError) -> UncheckedHandle in
            var nc: OpaquePointer?
            let status = natsConnection_Connect(&nc, options.handle)
            guard status == NATS_OK, let nc else {
                throw SwitchboardError.nats(status, "cannot connect to \(configuration.servers.map(redactedURL).joined(separator: ","))")
            }
            return UncheckedHandle(nc)
        }
        // From here nats.c may call the sink until it reports `closed`; keep it alive until then.
        sink.retainUntilClosed()
        do {
            let connection = try NATSConnection(handle: handle.pointer, sink: sink, configuration: configuration, logger: logger)
            logger.info("nats connected", metadata: ["nats.url": "\(connection.connectedURL.map(redactedURL) ?? "?")"])
            return connection
        } catch {
            natsConnection_Destroy(handle.pointer)
            throw error
        }
    }

    // MARK: - Publish

    /// Publishes `payload` to `subject`, with optional headers and reply subject. Returns once nats.c has
    /// taken the message (sent at once: the connection is in send-as-soon-as-possible mode).
    public func publish(_ subject: String, payload: [UInt8], headers: NATSHeaders = NATSHeaders(), replyTo: String? = nil) throws(SwitchboardError) {
        try Subject.validate(subject)
        if let replyTo { try Subject.validate(replyTo) }
        try publishValidated(subject, payload: payload, headers: headers, replyTo: replyTo)
    }

    /// Publishes a reply to a request message. Throws `.invalidArgument` if the message has no reply subject.
    public func reply(to message: NATSMessage, payload: [UInt8], headers: NATSHeaders = NATSHeaders()) throws(SwitchboardError) {
        guard let replyTo = message.replyTo else {
            throw SwitchboardError(.invalidArgument, "message on '\(message.subject)' has no reply subject")
        }
        try publishValidated(replyTo, payload: payload, headers: headers, replyTo: nil)
    }

    func publishValidated(_ subject: String, payload: [UInt8], headers: NATSHeaders, replyTo: String?) throws(SwitchboardError) {
        guard payload.count <= maxPayload else {
            throw SwitchboardError(.tooLarge, "payload of \(payload.count) bytes is over the server's limit of \(maxPayload)",
                                   context: ["nats.subject": subject])
        }
        let status: natsStatus = payload.withUnsafeBufferPointer { buffer in
            let raw = UnsafeRawPointer(buffer.baseAddress)
            if headers.isEmpty {  // fast path: no message object
                guard let replyTo else { return natsConnection_Publish(handle, subject, raw, Int32(buffer.count)) }
                return natsConnection_PublishRequest(handle, subject, replyTo, raw, Int32(buffer.count))
            }
            let data = raw?.assumingMemoryBound(to: CChar.self)
            var msg: OpaquePointer?
            var status = natsMsg_Create(&msg, subject, replyTo, data, Int32(buffer.count))
            guard status == NATS_OK, let msg else { return status }
            defer { natsMsg_Destroy(msg) }
            for field in headers.fields where status == NATS_OK {
                status = natsMsgHeader_Add(msg, field.name, field.value)
            }
            return status == NATS_OK ? natsConnection_PublishMsg(handle, msg) : status
        }
        try check(status, "publish to '\(subject)'", connection: handle)
    }

    /// The connection a placed call's audio goes over: on a closed bus a new one with the call's own credential
    /// (`placement.media.credentials`: this call's subjects and nothing else, no inbox), else this one.
    public func connection(for placement: Placement, name: String) async throws(SwitchboardError) -> NATSConnection {
        guard let text = placement.media.credentials else { return self }
        var config = configuration
        config.name = name
        config.user = nil
        config.password = nil
        config.token = nil
        config.credentialsFile = nil
        config.nkeySeedFile = nil
        config.credentials = try NATSConfiguration.Credentials(creds: text)
        config.inboxPrefix = nil
        return try await NATSConnection.connect(config, logger: logger)
    }

    // MARK: - Subscribe

    /// Subscribes to `subject` (wildcards allowed), in `queue` group when given: each message of the subject
    /// goes to one member of the group. Iterate the result; leaving the loop or cancelling its task
    /// unsubscribes. Messages beyond `pendingLimit` (or `pendingBytes` of payload) waiting for the consumer are
    /// dropped and counted.
    public func subscribe(to subject: String, queue: String? = nil, pendingLimit: Int? = nil,
                          pendingBytes: Int? = nil) throws(SwitchboardError) -> NATSSubscription {
        try Subject.validate(subject, allowWildcards: true)
        if let queue { try Subject.validateQueueGroup(queue) }
        return try NATSSubscription(connection: self, subject: subject, queue: queue,
                                    pendingLimit: pendingLimit ?? configuration.pendingLimit,
                                    pendingBytes: pendingBytes ?? configuration.pendingBytesLimit)
    }

    /// Subscribes with a handler that nats.c's delivery thread calls for each message, in order, one at a
    /// time: no hop to another thread, for request handlers on the hot path (offers, route requests). The
    /// handler must return quickly and never block; start a task for anything that waits. The returned
    /// subscription yields no messages; use it to unsubscribe or drain.
    public func subscribe(to subject: String, queue: String? = nil,
                          handler: @escaping @Sendable (NATSMessage) -> Void) throws(SwitchboardError) -> NATSSubscription {
        try Subject.validate(subject, allowWildcards: true)
        if let queue { try Subject.validateQueueGroup(queue) }
        return try NATSSubscription(connection: self, subject: subject, queue: queue,
                                    pendingLimit: configuration.pendingLimit, pendingBytes: configuration.pendingBytesLimit,
                                    handler: handler)
    }

    // MARK: - Request

    /// Sends a request and waits for the first reply, up to `timeout`. Throws `.noResponders` at once when
    /// nobody listens on `subject`, `.timeout` when no reply comes in time, `.cancelled` if the task is.
    public func request(_ subject: String, payload: [UInt8], headers: NATSHeaders = NATSHeaders(),
                        timeout: Duration = .seconds(2)) async throws(SwitchboardError) -> NATSMessage {
        try Subject.validate(subject)
        guard let requests else { throw SwitchboardError(.invalidArgument, "this connection was made without a reply inbox: it makes no requests") }
        do {
            return try await requests.request(on: self, subject: subject, payload: payload, headers: headers, timeout: timeout)
        } catch let error as SwitchboardError {
            throw error
        } catch {
            throw SwitchboardError(.internalError, "request to '\(subject)': \(error)")  // every path above throws ours
        }
    }

    // MARK: - Lifecycle

    /// Waits until the server has processed everything sent so far.
    public func flush(timeout: Duration = .seconds(2)) async throws(SwitchboardError) {
        let handle = UncheckedHandle(self.handle)
        let ms = timeout.milliseconds
        try await onBlockingThread("nats-flush") { () throws(SwitchboardError) in
            try check(natsConnection_FlushTimeout(handle.pointer, ms), "flush", connection: handle.pointer)
        }
    }

    /// One PING/PONG round trip to the server.
    public func roundTrip() async throws(SwitchboardError) -> Duration {
        let handle = UncheckedHandle(self.handle)
        let nanos = try await onBlockingThread("nats-rtt") { () throws(SwitchboardError) -> Int64 in
            var rtt: Int64 = 0
            try check(natsConnection_GetRTT(handle.pointer, &rtt), "round trip", connection: handle.pointer)
            return rtt
        }
        return .nanoseconds(nanos)
    }

    /// Graceful shutdown: stop every subscription taking new messages, deliver what they already have,
    /// flush what was published, then close. Returns when the connection is closed (or `timeout` passed,
    /// in which case nats.c closes it anyway).
    public func drain(timeout: Duration = .seconds(5)) async throws {
        sink.markClosing()
        let status = natsConnection_DrainTimeout(handle, timeout.milliseconds)
        if status != NATS_OK && status != NATS_DRAINING && !sink.isClosed {
            throw SwitchboardError.nats(status, "drain", connection: handle)
        }
        await sink.waitUntilClosed()
        requests?.failAll(SwitchboardError(.connectionClosed, "connection drained"))
    }

    /// Closes at once: pending requests fail with `.connectionClosed`, subscriptions end.
    public func close() {
        sink.markClosing()
        natsConnection_Close(handle)
        requests?.failAll(SwitchboardError(.connectionClosed, "connection closed"))
    }

    /// Waits until the connection is closed (by `close`, `drain`, or nats.c giving up reconnecting).
    public func waitUntilClosed() async { await sink.waitUntilClosed() }

    public var isConnected: Bool { natsConnection_Status(handle) == NATS_CONN_STATUS_CONNECTED }
    public var isClosed: Bool { natsConnection_Status(handle) == NATS_CONN_STATUS_CLOSED }

    public var connectedURL: String? { readString { natsConnection_GetConnectedUrl(handle, $0, $1) } }
    public var serverID: String? { readString { natsConnection_GetConnectedServerId(handle, $0, $1) } }

    private func readString(_ body: (UnsafeMutablePointer<CChar>, Int) -> natsStatus) -> String? {
        var buffer = [CChar](repeating: 0, count: 512)
        let status = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
        guard status == NATS_OK else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? nil : text
    }
}

/// A C handle carried across a thread hop. Only for handles whose owner outlives the hop.
struct UncheckedHandle: @unchecked Sendable {  // the owner keeps the handle alive for the duration of the call
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}

/// Process-wide nats.c set-up, done once.
enum NATSLibrary {
    private static let opened = Mutex(false)

    static func open(deliveryThreads: Int) {
        opened.withLock { done in
            guard !done else { return }
            done = true
            _ = nats_Open(-1)
            // Subscriptions share this pool of delivery threads instead of one thread each.
            _ = nats_SetMessageDeliveryPoolSize(Int32(max(1, deliveryThreads)))
        }
    }
}

extension NATSConnection {
    /// The version of nats.c this process runs with.
    public static var libraryVersion: String { String(cString: nats_GetVersion()) }
}

/// A server URL without the user and password it may carry, for logs and errors.
func redactedURL(_ url: String) -> String {
    (try? Endpoint.parse(url, defaultScheme: "nats", defaultPort: 4222).redacted) ?? "(a NATS URL that does not parse)"
}

