import CNATS
import Foundation
import SwitchboardCore
import Synchronization

/// Request/reply without blocking a thread: one wildcard inbox subscription per connection
/// (`_INBOX.<nuid>.*`), a numbered reply subject per request, and a continuation per request that the reply,
/// the timeout, a no-responders status or cancellation resumes, whichever comes first (exactly once: the
/// continuation is taken out of the table under the lock by whoever resumes it).
///
/// Timeouts share one sweeper task that wakes every `sweepInterval` while requests are waiting and sleeps
/// otherwise: a timer per request cost a thread wake-up per request, even for requests long answered. (A
/// dispatch timer source re-armed from many threads crashed libdispatch's manager thread now and then on
/// Linux, so this uses a task.)
final class RequestMultiplexer: @unchecked Sendable {  // `subscription` is set once in init; the table is in a Mutex
    private struct Waiting {
        var continuation: CheckedContinuation<NATSMessage, any Error>
        var subject: String
        var timeout: Duration
    }

    private struct Table {
        var nextID: UInt64 = 0
        var waiting: [UInt64: Waiting] = [:]
        var deadlines = DeadlineQueue()
        var closed: SwitchboardError?
    }

    /// How late a timeout may fire; one wake-up expires every request due in that window.
    static let sweepInterval: Duration = .milliseconds(5)

    private let prefix: String
    private let table = Mutex(Table())
    private var subscription: OpaquePointer?
    /// Wakes the sweeper when the first request of a busy spell starts waiting.
    private let wake: AsyncStream<Void>.Continuation
    private var sweeper: Task<Void, Never>?

    init(connection: OpaquePointer, inboxPrefix: String, pendingLimit: Int, pendingBytes: Int) throws(SwitchboardError) {
        let (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        try Subject.validate(inboxPrefix)
        prefix = inboxPrefix + "." + Identifiers.random(bytes: 11) + "."
        let context = Unmanaged.passRetained(self)
        var sub: OpaquePointer?
        let status = natsConnection_Subscribe(&sub, connection, prefix + "*", onNATSReply, context.toOpaque())
        guard status == NATS_OK, let sub else {
            context.release()
            throw SwitchboardError.nats(status, "subscribing to the reply inbox", connection: connection)
        }
        subscription = sub
        sweeper = Task.detached { [weak self] in
            for await _ in wakeups {
                while let self, self.expireDue() {
                    try? await Task.sleep(for: Self.sweepInterval)
                }
            }
        }
        // Bounded like any subscription: anyone who sees a reply subject can publish to the inbox.
        _ = natsSubscription_SetPendingLimits(sub, Int32(clamping: pendingLimit), Int32(clamping: pendingBytes))
        if natsSubscription_SetOnCompleteCB(sub, onNATSReplyInboxComplete, context.toOpaque()) != NATS_OK {
            context.release()
        }
    }

    deinit {
        sweeper?.cancel()
        wake.finish()
        if let subscription { natsSubscription_Destroy(subscription) }
    }

    func request(on connection: NATSConnection, subject: String, payload: [UInt8], headers: NATSHeaders,
                 timeout: Duration) async throws -> NATSMessage {
        let id = table.withLock { table -> UInt64 in
            table.nextID &+= 1
            return table.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                let deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0, timeout.milliseconds)) * 1_000_000
                let closed = table.withLock { table -> SwitchboardError? in
                    if let closed = table.closed { return closed }
                    table.waiting[id] = Waiting(continuation: continuation, subject: subject, timeout: timeout)
                    if table.deadlines.count == 0 { wake.yield() }
                    table.deadlines.insert(.init(deadline: deadline, id: id))
                    return nil
                }
                if let closed { return continuation.resume(throwing: closed) }
                if Task.isCancelled {
                    return resume(id, with: .failure(SwitchboardError(.cancelled, "request to '\(subject)' cancelled")))
                }
                do {
                    try connection.publishValidated(subject, payload: payload, headers: headers, replyTo: prefix + String(id))
                } catch {
                    return resume(id, with: .failure(error))
                }
            }
        } onCancel: {
            resume(id, with: .failure(SwitchboardError(.cancelled, "request to '\(subject)' cancelled")))
        }
    }

    /// Resumes request `id` if it is still waiting; later calls for the same id do nothing.
    func resume(_ id: UInt64, with result: Result<NATSMessage, any Error>) {
        let waiting = table.withLock { $0.waiting.removeValue(forKey: id) }
        waiting?.continuation.resume(with: result)
    }

    /// Times out every request whose deadline has passed; returns whether any deadline is still pending.
    private func expireDue() -> Bool {
        let (expired, pending) = table.withLock { table -> ([Waiting], Bool) in
            let due = table.deadlines.popDue(at: DispatchTime.now().uptimeNanoseconds)
            return (due.compactMap { table.waiting.removeValue(forKey: $0) }, table.deadlines.count > 0)
        }
        for request in expired {
            request.continuation.resume(throwing: SwitchboardError(.timeout, "no reply from '\(request.subject)' within \(request.timeout)",
                                                                   context: ["nats.subject": request.subject]))
        }
        return pending
    }

    func failAll(_ error: SwitchboardError) {
        let waiting = table.withLock { table -> [Waiting] in
            table.closed = error
            table.deadlines = DeadlineQueue()
            defer { table.waiting = [:] }
            return Array(table.waiting.values)
        }
        waiting.forEach { $0.continuation.resume(throwing: error) }
    }

    fileprivate func receive(_ msg: OpaquePointer) {
        // The token after the prefix is the request id.
        let subject = natsMsg_GetSubject(msg)!
        let token = String(cString: subject + prefix.utf8.count)
        guard let id = UInt64(token) else { return }
        if natsMsg_IsNoResponders(msg) {
            resume(id, with: .failure(SwitchboardError(.noResponders, "no responders on the requested subject")))
        } else {
            resume(id, with: .success(NATSMessage(copying: msg)))
        }
    }
}

private let onNATSReply: natsMsgHandler = { _, _, msg, closure in
    guard let msg else { return }
    Unmanaged<RequestMultiplexer>.fromOpaque(closure!).takeUnretainedValue().receive(msg)
    natsMsg_Destroy(msg)
}

private let onNATSReplyInboxComplete: natsOnCompleteCB = { closure in
    Unmanaged<RequestMultiplexer>.fromOpaque(closure!).release()
}
