import CNATS
import Foundation
import Logging
import SwitchboardCore
import Synchronization

/// What happens to a connection, as nats.c reports it from its own threads.
public enum NATSConnectionEvent: Sendable, Equatable {
    case disconnected
    case reconnected(url: String?)
    case closed
    /// An asynchronous error: a slow consumer, a permission violation, a protocol error.
    case error(code: String, message: String)
}

/// Receives nats.c's connection callbacks and turns them into an `AsyncStream` and log lines.
///
/// nats.c holds a retained reference to this object (through the callbacks' `void *`) from the moment the
/// connection is created until it reports `closed`; then the reference is released, exactly once.
final class NATSEventSink: Sendable {
    let logger: Logger
    /// The identity nats.c asks for (through the callbacks below) at every connect and reconnect: a user JWT
    /// (nil for an NKey user) and the key that signs the server's nonce. The sink lives exactly as long as
    /// nats.c may call.
    let identity: (jwt: String?, key: NKey)?
    /// Set when a nonce's signature began with a zero byte: nats.c 3.4.1 drops such a signature from its
    /// CONNECT (its base64 encoder stops at a leading NUL), so the attempt is abandoned and made again with the
    /// next nonce (see `NATSConnection.connect`).
    let unsendableSignature = Atomic<Bool>(false)
    let events: AsyncStream<NATSConnectionEvent>
    private let continuation: AsyncStream<NATSConnectionEvent>.Continuation
    private struct State {
        var closed = false
        /// We asked for the close: the disconnect that comes with it is no news.
        var closing = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// The reference nats.c holds through the callbacks' `void *`, from connect until `closed`.
        var heldByConnection: Unmanaged<NATSEventSink>?
    }
    private let state = Mutex(State())

    init(logger: Logger, identity: (jwt: String?, key: NKey)? = nil) {
        self.logger = logger
        self.identity = identity
        (events, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
    }

    func emit(_ event: NATSConnectionEvent) {
        continuation.yield(event)
    }

    /// Called once the connection exists: nats.c may call back until it reports `closed`.
    func retainUntilClosed() {
        state.withLock { state in
            if !state.closed && state.heldByConnection == nil { state.heldByConnection = Unmanaged.passRetained(self) }
        }
    }

    func markClosed() {
        let (waiters, held) = state.withLock { state in
            state.closed = true
            defer { state.waiters = []; state.heldByConnection = nil }
            return (state.waiters, state.heldByConnection)
        }
        continuation.yield(.closed)
        continuation.finish()
        for waiter in waiters { waiter.resume() }
        held?.release()  // nats.c calls nothing after `closed`
    }

    var isClosed: Bool { state.withLock { $0.closed } }
    var isClosing: Bool { state.withLock { $0.closing } }
    func markClosing() { state.withLock { $0.closing = true } }

    /// Returns once the connection has reported `closed`.
    func waitUntilClosed() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.closed { return true }
                state.waiters.append(waiter)
                return false
            }
            if resumeNow { waiter.resume() }
        }
    }

    /// Installs the callbacks on `options`; nats.c copies them into the connection.
    func install(on options: OpaquePointer) throws(SwitchboardError) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        try check(natsOptions_SetDisconnectedCB(options, natsDisconnected, context), "setting the disconnect handler")
        try check(natsOptions_SetReconnectedCB(options, natsReconnected, context), "setting the reconnect handler")
        try check(natsOptions_SetClosedCB(options, natsClosed, context), "setting the close handler")
        try check(natsOptions_SetErrorHandler(options, natsAsyncError, context), "setting the error handler")
    }
}

private func sink(_ closure: UnsafeMutableRawPointer?) -> NATSEventSink {
    Unmanaged<NATSEventSink>.fromOpaque(closure!).takeUnretainedValue()
}

private func connectedURL(_ nc: OpaquePointer?) -> String? {
    guard let nc else { return nil }
    var buffer = [CChar](repeating: 0, count: 512)
    guard natsConnection_GetConnectedUrl(nc, &buffer, buffer.count) == NATS_OK else { return nil }
    let url = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return url.isEmpty ? nil : url
}

private let natsDisconnected: natsConnectionHandler = { _, closure in
    let sink = sink(closure)
    if sink.isClosing { sink.logger.debug("nats disconnected for close") } else { sink.logger.warning("nats disconnected") }
    sink.emit(.disconnected)
}

private let natsReconnected: natsConnectionHandler = { nc, closure in
    let sink = sink(closure)
    let url = connectedURL(nc)
    sink.logger.notice("nats reconnected", metadata: ["nats.url": "\(url ?? "?")"])
    sink.emit(.reconnected(url: url))
}

private let natsClosed: natsConnectionHandler = { _, closure in
    let sink = sink(closure)
    sink.logger.info("nats connection closed")
    sink.markClosed()
}

private let natsAsyncError: natsErrHandler = { nc, sub, status, closure in
    let sink = sink(closure)
    let error = SwitchboardError.nats(status, "asynchronous error", connection: nc)
    var subject = ""
    if let sub, let s = natsSubscription_GetSubject(sub) { subject = String(cString: s) }
    sink.logger.error("nats error", metadata: ["error.code": "\(error.code)", "error": "\(error.message)", "nats.subject": "\(subject)"])
    sink.emit(.error(code: error.code.rawValue, message: error.message))
}

/// nats.c asks for the user JWT.
let onNATSUserJWT: natsUserJWTHandler = { jwt, _, closure in
    let sink = Unmanaged<NATSEventSink>.fromOpaque(closure!).takeUnretainedValue()
    guard let token = sink.identity?.jwt, let jwt else { return NATS_ERR }
    jwt.pointee = strdup(token)  // nats.c frees it
    return NATS_OK
}

/// nats.c asks for the server's nonce signed (Ed25519 through OpenSSL).
let onNATSSignNonce: natsSignatureHandler = { errorText, signature, length, nonce, closure in
    let sink = Unmanaged<NATSEventSink>.fromOpaque(closure!).takeUnretainedValue()
    guard let key = sink.identity?.key, let nonce, let signature, let length,
          let signed = try? key.sign(Array(String(cString: nonce).utf8)) else { return NATS_ERR }
    guard signed.first != 0 else {
        sink.unsendableSignature.store(true, ordering: .relaxed)
        errorText?.pointee = strdup("this nonce's signature begins with a zero byte, which nats.c cannot send; trying again")
        return NATS_ERR
    }
    guard let buffer = malloc(signed.count)?.assumingMemoryBound(to: UInt8.self) else { return NATS_NO_MEMORY }
    buffer.initialize(from: signed, count: signed.count)
    signature.pointee = buffer  // nats.c frees it
    length.pointee = Int32(signed.count)
    return NATS_OK
}
