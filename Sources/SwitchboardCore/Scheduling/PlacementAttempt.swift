/// One call's placement as a state machine: offer to the worker the scheduler chooses, and on a refusal or a
/// failure (a timeout included) to the next, until one accepts, `maxOffers` have been tried, or the deadline
/// passes. Pure: the shell chooses and offers; this keeps count and says what next, and why it gave up.
public struct PlacementAttempt: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public enum Next: Equatable, Sendable {
        /// Choose a worker for `needs` (its `tried` grows with each offer) and offer within `timeout`.
        case offer(needs: Scheduler.Needs, timeout: Duration)
        case giveUp(SwitchboardError)
    }

    public enum Answer: Equatable, Sendable {
        case accepted
        case refused(String)
        /// No answer in time, no responders, a malformed reply.
        case failed(String)
    }

    public private(set) var needs: Scheduler.Needs
    public let deadline: Instant
    public let offerTimeout: Duration
    private let offersAtMost: Int
    private var refusals: [String] = []
    private var done = false

    /// Workers in `needs.tried` beforehand (the one a call is moving from) do not count towards `maxOffers`.
    public init(needs: Scheduler.Needs, maxOffers: Int, offerTimeout: Duration, deadline: Instant) {
        self.needs = needs
        self.deadline = deadline
        self.offerTimeout = offerTimeout
        offersAtMost = needs.tried.count + maxOffers
    }

    public mutating func next(now: Instant) -> Next {
        guard !done else { preconditionFailure("placement attempt already finished") }
        let remaining = deadline - now
        guard (needs.tried.count < offersAtMost), (remaining > .zero) else { return .giveUp(failure()) }
        return .offer(needs: needs, timeout: min(offerTimeout, remaining))
    }

    /// The scheduler found no worker to offer to.
    public mutating func noCandidate() -> SwitchboardError { failure() }

    /// An offer to `worker` is going out.
    public mutating func offered(_ worker: String) {
        needs.tried.insert(worker)
    }

    /// What `worker` answered; true when the call is placed.
    public mutating func answered(_ worker: String, _ answer: Answer) -> Bool {
        switch answer {
        case .accepted:
            done = true
            return true
        case .refused(let reason), .failed(let reason):
            refusals.append("\(worker): \(reason)")
            return false
        }
    }

    private mutating func failure() -> SwitchboardError {
        done = true
        let place = needs.region.map { r in " in region \(r)\(needs.zone.map { "/\($0)" } ?? "")" } ?? ""
        return SwitchboardError(.noCapacity, refusals.isEmpty ? "no ready worker with a free slot\(place)"
                                : "every worker offered refused or failed (\(refusals.joined(separator: "; ")))")
    }
}
