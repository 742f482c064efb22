/// Moving a live call to another worker, make before break, as a state machine: the worker holding the call
/// stops sending and checkpoints (`hold`); another worker is offered the call with that checkpoint (it claims
/// the call in Redis before it accepts); only then does the first let go (`release`). No taker: the first
/// goes on (`unhold`). Pure: the shell carries out each action and feeds back what came of it, failures and
/// timeouts included.
///
/// An offer that failed is not yet a verdict: a worker whose accept came too late (a slow claim, a starved
/// process) has the call all the same, since its claim in Redis is what moves it. So the record is read
/// (`readOwner`) before the first worker is told to go on: a record naming another worker is a move made.
public struct CallMove: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public enum Action: Equatable, Sendable {
        case hold
        case offer(Checkpoint)
        /// Read which worker the call's record names now.
        case readOwner
        case release(to: String)
        case unhold
        case finish(Outcome)
    }

    public enum Outcome: Equatable, Sendable {
        /// On `to` now; the caller's audio paused `pause` (hold to accept). `released`: the first worker
        /// confirmed letting go (if not, the new epoch makes it let go at its next write).
        case moved(to: String, pause: Duration, released: Bool)
        /// Still where it was (or the first worker would not hold it); `result` labels the metric.
        case notMoved(SwitchboardError, result: String)
    }

    public enum Event: Sendable {
        case held(Checkpoint?)
        case holdFailed(SwitchboardError)
        case accepted(worker: String)
        case offerFailed(SwitchboardError)
        /// The worker the record names; nil when it could not be read.
        case ownerRead(String?)
        case released
        case releaseFailed(SwitchboardError)
        case unheld
        case unholdFailed(SwitchboardError)
    }

    private enum Phase: Equatable {
        case idle, holding, offering(heldAt: Instant), checking(heldAt: Instant, SwitchboardError)
        case releasing(to: String, pause: Duration), unholding(SwitchboardError), done
    }

    public let callID: String
    public let worker: String
    private var phase: Phase = .idle

    public init(callID: String, worker: String) {
        self.callID = callID
        self.worker = worker
    }

    public mutating func start() -> Action {
        precondition(phase == .idle, "a move starts once")
        phase = .holding
        return .hold
    }

    public mutating func on(_ event: Event, now: Instant) -> Action {
        switch (phase, event) {
        case (.holding, .held(let checkpoint?)):
            phase = .offering(heldAt: now)
            return .offer(checkpoint)
        case (.holding, .held(nil)):
            return finish(.notMoved(SwitchboardError(.unavailable, "worker \(worker) held call \(callID) without a checkpoint"), result: "hold_failed"))
        case (.holding, .holdFailed(let error)):
            // Not held: nothing to undo. A worker that does not hold the call is a conflict, not an outage.
            let code: SwitchboardError.Code = error.code == .notFound || error.code == .conflict ? .conflict : .unavailable
            return finish(.notMoved(SwitchboardError(code, "worker \(worker) could not hand call \(callID) over: \(error.message)"),
                                    result: "hold_failed"))
        case (.offering(let heldAt), .accepted(let to)):
            phase = .releasing(to: to, pause: now - heldAt)
            return .release(to: to)
        case (.offering(let heldAt), .offerFailed(let error)):
            phase = .checking(heldAt: heldAt, error)
            return .readOwner
        case (.checking(let heldAt, _), .ownerRead(let owner?)) where owner != worker:
            // Taken on by a worker whose accept this router gave up waiting for.
            phase = .releasing(to: owner, pause: now - heldAt)
            return .release(to: owner)
        case (.checking(_, let error), .ownerRead):
            // Still the first worker's (or unknown: it goes on, and a claim made meanwhile still makes it let go
            // at its next write).
            phase = .unholding(error)
            return .unhold
        case (.releasing(let to, let pause), .released):
            return finish(.moved(to: to, pause: pause, released: true))
        case (.releasing(let to, let pause), .releaseFailed):
            return finish(.moved(to: to, pause: pause, released: false))
        case (.unholding(let error), .unheld), (.unholding(let error), .unholdFailed):
            // Unheld or not, the call stays: a held call nobody releases speaks again by itself.
            return finish(.notMoved(error, result: error.code.rawValue))
        default:
            preconditionFailure("call move: \(event) is not expected in \(phase)")
        }
    }

    private mutating func finish(_ outcome: Outcome) -> Action {
        phase = .done
        return .finish(outcome)
    }
}
