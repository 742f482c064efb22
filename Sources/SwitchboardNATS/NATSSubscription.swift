import CNATS
import Logging
import SwitchboardCore
import Synchronization

/// A subscription, as an `AsyncSequence` of messages.
///
/// Ending the loop, cancelling its task or releasing the last reference unsubscribes. `drain()` stops new
/// messages and ends the sequence after the ones already received have been handed out.
public final class NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage
    public let subject: String
    public let queue: String?
    fileprivate let core: SubscriptionCore
    private let stream: AsyncStream<NATSMessage>

    init(connection: NATSConnection, subject: String, queue: String?, pendingLimit: Int, pendingBytes: Int,
         handler: (@Sendable (NATSMessage) -> Void)? = nil) throws(SwitchboardError) {
        self.subject = subject
        self.queue = queue
        let limit = Swift.max(1, pendingLimit), bytes = Swift.max(1, pendingBytes)
        let (stream, continuation) = AsyncStream.makeStream(of: NATSMessage.self, bufferingPolicy: .bufferingOldest(limit))
        self.stream = stream
        core = SubscriptionCore(continuation: continuation, subject: subject, logger: connection.logger, maxPendingBytes: bytes,
                                handler: handler)
        try core.start(connection: connection.handle, queue: queue, pendingLimit: limit, pendingBytes: bytes)
        continuation.onTermination = { [core] (reason: AsyncStream<NATSMessage>.Continuation.Termination) in
            if case .cancelled = reason { core.unsubscribe() }
        }
    }

    deinit { core.unsubscribe() }

    /// Messages dropped because the consumer fell more than the pending limit behind.
    public var droppedCount: Int { core.dropped }

    /// Stops delivery at once; the sequence ends.
    public func unsubscribe() { core.unsubscribe() }

    /// Stops taking new messages, lets the consumer receive those already here, then ends the sequence.
    /// Returns when the subscription is complete.
    public func drain() async throws {
        try core.drain()
        await core.waitUntilComplete()
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        // Holding the subscription keeps it subscribed while someone iterates it.
        let subscription: NATSSubscription
        var base: AsyncStream<NATSMessage>.AsyncIterator
        public mutating func next() async -> NATSMessage? {
            let message = await base.next()
            if let message { subscription.core.consumed(message) }
            return message
        }
        public mutating func next(isolation actor: isolated (any Actor)?) async -> NATSMessage? {
            let message = await base.next(isolation: actor)
            if let message { subscription.core.consumed(message) }
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(subscription: self, base: stream.makeAsyncIterator())
    }
}

/// The part of a subscription nats.c calls into. nats.c holds one retained reference to it (the callbacks'
/// `void *`) from subscribe until it calls the on-complete callback; this object destroys the
/// `natsSubscription *` exactly once, when the last reference goes.
final class SubscriptionCore: @unchecked Sendable {  // `handle` is written once in start() before any callback; counters are atomics
    private let continuation: AsyncStream<NATSMessage>.Continuation
    private let subject: String
    private let logger: Logger
    private var handle: OpaquePointer?
    private let droppedCounter = Atomic<Int>(0)
    /// Payload bytes handed to the stream and not yet taken by the consumer.
    private let pendingBytes = Atomic<Int>(0)
    private let maxPendingBytes: Int
    private let completion = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    /// Set for handler subscriptions: called on the delivery thread instead of buffering.
    private let handler: (@Sendable (NATSMessage) -> Void)?

    init(continuation: AsyncStream<NATSMessage>.Continuation, subject: String, logger: Logger, maxPendingBytes: Int,
         handler: (@Sendable (NATSMessage) -> Void)?) {
        self.continuation = continuation
        self.subject = subject
        self.logger = logger
        self.maxPendingBytes = maxPendingBytes
        self.handler = handler
    }

    deinit {
        if let handle { natsSubscription_Destroy(handle) }
    }

    /// Messages dropped by our buffer plus those nats.c dropped before handing them to us.
    var dropped: Int {
        var inLibrary: Int64 = 0
        if let handle { _ = natsSubscription_GetDropped(handle, &inLibrary) }
        return droppedCounter.load(ordering: .relaxed) + Int(inLibrary)
    }

    func start(connection: OpaquePointer, queue: String?, pendingLimit: Int, pendingBytes: Int) throws(SwitchboardError) {
        let context = Unmanaged.passRetained(self)
        var sub: OpaquePointer?
        let status = queue.map { natsConnection_QueueSubscribe(&sub, connection, subject, $0, onNATSMessage, context.toOpaque()) }
            ?? natsConnection_Subscribe(&sub, connection, subject, onNATSMessage, context.toOpaque())
        guard status == NATS_OK, let sub else {
            context.release()
            throw SwitchboardError.nats(status, "subscribe to '\(subject)'", connection: connection)
        }
        handle = sub
        // Both nats.c's queue (messages in flight to the delivery thread) and our buffer hold at most the limits.
        _ = natsSubscription_SetPendingLimits(sub, Int32(clamping: pendingLimit), Int32(clamping: pendingBytes))
        let completeStatus = natsSubscription_SetOnCompleteCB(sub, onNATSSubscriptionComplete, context.toOpaque())
        if completeStatus != NATS_OK {
            // Already closed (the connection went away in between): no callback will come.
            complete()
            context.release()
        }
    }

    func deliver(_ message: NATSMessage) {
        if let handler { return handler(message) }
        let size = message.payload.count
        let pending = pendingBytes.wrappingAdd(size, ordering: .relaxed).newValue
        guard pending <= maxPendingBytes else {
            pendingBytes.wrappingSubtract(size, ordering: .relaxed)
            return countDropped()
        }
        if case .dropped = continuation.yield(message) {
            pendingBytes.wrappingSubtract(size, ordering: .relaxed)
            countDropped()
        }
    }

    /// The consumer took `message` from the stream.
    func consumed(_ message: NATSMessage) {
        pendingBytes.wrappingSubtract(message.payload.count, ordering: .relaxed)
    }

    private func countDropped() {
        let count = droppedCounter.wrappingAdd(1, ordering: .relaxed).newValue
        if count == 1 || count % 1000 == 0 {
            logger.warning("slow consumer: dropping messages", metadata: ["nats.subject": "\(subject)", "dropped": "\(count)"])
        }
    }

    func unsubscribe() {
        guard let handle, !isComplete else { return }
        _ = natsSubscription_Unsubscribe(handle)
    }

    func drain() throws {
        guard let handle, !isComplete else { return }
        let status = natsSubscription_Drain(handle)
        if status != NATS_OK && status != NATS_DRAINING && status != NATS_INVALID_SUBSCRIPTION {
            throw SwitchboardError.nats(status, "drain subscription '\(subject)'")
        }
    }

    private var isComplete: Bool { completion.withLock { $0.done } }

    /// nats.c will deliver nothing more.
    func complete() {
        let waiters = completion.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        continuation.finish()
        waiters.forEach { $0.resume() }
    }

    func waitUntilComplete() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let now = completion.withLock { state -> Bool in
                if state.done { return true }
                state.waiters.append(waiter)
                return false
            }
            if now { waiter.resume() }
        }
    }
}

private let onNATSMessage: natsMsgHandler = { _, _, msg, closure in
    guard let msg else { return }
    let core = Unmanaged<SubscriptionCore>.fromOpaque(closure!).takeUnretainedValue()
    let message = NATSMessage(copying: msg)
    natsMsg_Destroy(msg)
    core.deliver(message)
}

private let onNATSSubscriptionComplete: natsOnCompleteCB = { closure in
    let context = Unmanaged<SubscriptionCore>.fromOpaque(closure!)
    context.takeUnretainedValue().complete()
    context.release()  // the reference taken at subscribe; nats.c calls nothing more
}
