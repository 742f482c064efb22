/// One call's placement as a state machine: offer to the worker the scheduler chooses, and on a refusal or a
/// failure (a timeout included) to the next, until one accepts, `maxOffers` have been tried, or the deadline
/// passes. Pure: the shell chooses and offers; this keeps count and says what next, and why it gave up.
public struct PlacementAttempt: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public enum Next: Equatable, Sendable {
        /// Choose a worker for `needs` (its `tried` grows with each offer) and offer within `timeout`.
        case offer(needs: Scheduler.Needs, timeout: Duration)
        /// Every other worker tried, some unheard: wait until `until`, then offer those again.
        case wait(until: Instant)
        case giveUp(SwitchboardError)
    }

    public enum Answer: Equatable, Sendable {
        case accepted
        case refused(String)
        /// No answer in time, no responders, a malformed reply.
        case failed(String)
        /// Nobody listens on the worker's offer subject, at a moment this router cannot judge that: it is just
        /// back on the bus, and the server may not have the workers' subscriptions yet. Counted as tried like a
        /// failure; once no other worker is left to try, offered again after `unheardRetry`, within the deadline.
        case unheard
    }

    /// The wait before an unheard worker is offered the call again.
    public static let unheardRetry = Duration.milliseconds(100)
    /// The wait before choosing again while this router's offers are out unanswered (see `noCandidate`).
    public static let answersRetry = Duration.milliseconds(10)

    public private(set) var needs: Scheduler.Needs
    public let deadline: Instant
    public let offerTimeout: Duration
    private let offersAtMost: Int
    private var refusals: [String] = []
    /// Workers unheard since they were last offered the call.
    private var unheard: Set<String> = []
    /// The scheduler found nobody left to offer to.
    private var exhausted = false
    /// Until when it chooses again, rather than give up, while this router's offers are out unanswered: one
    /// offer timeout from the first time it found nobody, by when every offer then out has its answer.
    private var answersAwaitedUntil: Instant?
    private var offersUnanswered = false
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
        guard remaining > .zero else { return .giveUp(failure()) }
        if exhausted, offersUnanswered, let until = answersAwaitedUntil, now + Self.answersRetry < min(until, deadline) {
            exhausted = false
            return .wait(until: now + Self.answersRetry)
        }
        guard needs.tried.count < offersAtMost, !exhausted else {
            exhausted = false
            return offerUnheardAgain(now: now)
        }
        return .offer(needs: needs, timeout: min(offerTimeout, remaining))
    }

    /// The scheduler found no worker to offer to (among those not tried yet): `next` then gives up, or waits to
    /// offer the unheard ones again; or, while this router has other calls' offers out unanswered
    /// (`offersUnanswered`), waits a moment and chooses again. A worker's heartbeat counts a call it accepted, and
    /// so does this router's reservation until the accept reaches it: under load, a burst of offers near the
    /// fleet's capacity counts the fleet full while it has room. Each offer out then is answered (or times out)
    /// within an offer timeout, so the attempt chooses again for that long at most, and within the deadline.
    public mutating func noCandidate(now: Instant, offersUnanswered: Bool = false) {
        exhausted = true
        self.offersUnanswered = offersUnanswered
        if offersUnanswered, answersAwaitedUntil == nil { answersAwaitedUntil = now + offerTimeout }
    }

    /// Give up, unless some workers went unheard: then they are offered the call again after a moment, if the
    /// deadline leaves time for it. Only once no other worker is left: a worker really dead (this router cannot
    /// judge yet) never keeps the call from one that would take it.
    private mutating func offerUnheardAgain(now: Instant) -> Next {
        guard !unheard.isEmpty, now + Self.unheardRetry < deadline else { return .giveUp(failure()) }
        needs.tried.subtract(unheard)
        unheard.removeAll()
        return .wait(until: now + Self.unheardRetry)
    }

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
        case .unheard:
            if unheard.insert(worker).inserted, !refusals.contains("\(worker): unheard") { refusals.append("\(worker): unheard") }
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
