/// What one router knows at one instant, and every event that changes it: the fleet it hears (workers, their
/// load, liveness, drains, the slots its own offers hold), the scheduler, and the deploy policy in force with its
/// canary split. Events go through `modify(_:now:)`, which returns what the shell is to do; the shell holds one
/// lock around it, and does the I/O (pings, failovers, offers, logs and counts) after it.
///
/// Pure: no I/O, time is an input, and the random source is seeded, so a router's decisions (a worker dying
/// mid-offer, a drain racing a placement, a rollback during a move) are tested without servers.
public struct RouterState: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public enum Event: Sendable {
        /// A worker's heartbeat: periodic, after an accept, or a ping's answer.
        case heartbeat(Heartbeat)
        /// The liveness clock, several times per heartbeat interval.
        case tick
        /// This router's NATS connection went down or came back.
        case connection(connected: Bool)
        /// A ping to a suspect failed, or (`probe`) a late worker's probe found nobody listening; `connected`:
        /// whether this router's own connection was up when it failed.
        case pingFailed(worker: String, sentAt: Instant, timeout: Duration, probe: Bool, connected: Bool)
        /// A call (new or moving) wants a worker: choose one and reserve its slot until its heartbeats show it.
        /// `resuming`: a dead worker's call being taken on, which free slots go to before new calls and moves.
        case offerWanted(Scheduler.Needs, explain: Bool, resuming: Bool = false)
        /// The worker offered a call answered (or did not).
        case offerAnswered(worker: String, token: UInt64, OfferAnswer)
        /// A drain announced for a worker, or lifted (nil).
        case drain(worker: String, DrainRequest?)
        /// Every drain, as read from Redis: those not there are lifted.
        case drainsRead([String: DrainRequest])
        /// A deploy policy read from Redis or announced; an older revision than the one held changes nothing.
        case policy(DeployPolicy)
        /// A dead worker's call waits for a free slot (its router says so at each attempt): free slots are held
        /// for it for `hold` from now.
        case resumptionWaiting(callID: String, hold: Duration)
        /// It no longer waits; taken on by `worker` with accept `acceptSeq` (counted in that worker's load until
        /// its heartbeats show it), or by no offer of this router's knowing (nil).
        case resumptionDone(callID: String, worker: String?, acceptSeq: UInt64?)
    }

    public enum OfferAnswer: Sendable, Equatable {
        case accepted(acceptSeq: UInt64)
        case refused
        case failed
    }

    public enum Action: Sendable {
        /// A worker joined, restarted or was heard from again while suspect (logged). Routine heartbeats (10,000
        /// a second in a large fleet) give no action: they are counted in `ingested`.
        case workerHeard(Heartbeat, WorkerRegistry.IngestResult)
        /// A worker back under its id with a new process before it was found dead: its previous process's calls
        /// are taken on like a dead worker's (not the new one's).
        case failOverRestarted(worker: String, except: String)
        /// A worker stopping with no calls left the view.
        case workerLeft(String)
        /// What the liveness clock found: workers to ping or probe, mass silences, this router's own stall.
        case liveness(WorkerRegistry.LivenessEvent)
        /// A worker found dead: its calls are to be taken on elsewhere.
        case failOver(worker: String, incarnation: String)
        /// A failed ping that decides nothing, and why.
        case notJudged(worker: String, why: String)
        /// Offer the call to the chosen worker, holding slot `token`.
        case offer(Scheduler.Decision, token: UInt64)
        /// No worker to offer it to. `offersUnanswered`: this router has offers out that no answer has settled
        /// yet, whose slots a worker's heartbeat may count as well (`PlacementAttempt.noCandidate`).
        case noCandidate(Scheduler.Decision, offersUnanswered: Bool)
        /// Not offered: the `free` slots this router sees are held for the `waiting` calls of dead workers.
        case held(waiting: Int, free: Int)
        /// A newer deploy policy is in force.
        case policyApplied(DeployPolicy)
    }

    public private(set) var registry: WorkerRegistry
    public private(set) var scheduler: Scheduler
    /// The deploy policy placements follow (nil until read), and when it was taken.
    public private(set) var deploy: DeployPolicy?
    public private(set) var deployAppliedAt: Instant?
    private var split = CanarySplit()
    private var random: SeededRandom
    /// Heartbeats taken since the shell last counted them, by result (counted here, under the lock the ingest
    /// takes anyway, not in the metrics registry 10,000 times a second).
    public private(set) var ingested: [WorkerRegistry.IngestResult: Int] = [:]
    /// Dead workers' calls waiting for a free slot, anywhere in the cluster, and until when each is held for.
    public private(set) var resumptions: [String: Instant] = [:]

    public init(registry: WorkerRegistry.Configuration, scheduler: Scheduler.Configuration, seed: UInt64) {
        self.registry = WorkerRegistry(configuration: registry)
        self.scheduler = Scheduler(configuration: scheduler)
        random = SeededRandom(seed: seed)
    }

    public mutating func modify(_ event: Event, now: Instant) -> [Action] {
        switch event {
        case .heartbeat(let heartbeat):
            let result = registry.ingest(heartbeat, now: now)
            ingested[result, default: 0] += 1
            var actions: [Action] = []
            if result == .joined || result == .restarted || result == .recovered { actions.append(.workerHeard(heartbeat, result)) }
            if result == .restarted { actions.append(.failOverRestarted(worker: heartbeat.workerID, except: heartbeat.incarnation)) }
            if heartbeat.state == .stopping && heartbeat.activeCalls == 0 {
                registry.remove(heartbeat.workerID)
                actions.append(.workerLeft(heartbeat.workerID))
            }
            return actions
        case .tick:
            return registry.tick(now: now).map { .liveness($0) }
        case .connection(let connected):
            return registry.setConnected(connected, now: now).map { [.liveness($0)] } ?? []
        case .pingFailed(let worker, let sentAt, let timeout, let probe, let connected):
            if !connected { _ = registry.setConnected(false, now: now) }
            let verdict = probe ? registry.probeFoundGone(worker, sentAt: sentAt, timeout: timeout, now: now)
                                : registry.pingFailed(worker, sentAt: sentAt, timeout: timeout, now: now)
            switch verdict {
            case .dead(let incarnation): return [.failOver(worker: worker, incarnation: incarnation)]
            case .notJudged(let why): return [.notJudged(worker: worker, why: why)]
            case .moot: return []
            }
        case .offerWanted(let needs, let explain, let resuming):
            if !resuming, let held = holdForResumptions(now: now) { return [held] }
            let decision = scheduler.choose(needs, in: registry, using: &random, explain: explain)
            guard let chosen = decision.chosen, let token = registry.reserve(chosen.workerID, now: now) else {
                return [.noCandidate(decision, offersUnanswered: registry.hasUnansweredOffers)]
            }
            return [.offer(decision, token: token)]
        case .offerAnswered(let worker, let token, .accepted(let acceptSeq)):
            registry.accepted(worker, token: token, acceptSeq: acceptSeq)
            return []
        case .offerAnswered(let worker, let token, .refused), .offerAnswered(let worker, let token, .failed):
            registry.release(worker, token: token)
            return []
        case .drain(let worker, let request):
            registry.setDrain(worker, request)
            return []
        case .drainsRead(let drains):
            for (worker, request) in drains where registry.drains[worker] != request { registry.setDrain(worker, request) }
            for worker in registry.drains.keys where drains[worker] == nil { registry.setDrain(worker, nil) }
            return []
        case .policy(let policy):
            guard policy.revision > deploy?.revision ?? -1 else { return [] }
            deploy = policy
            deployAppliedAt = now
            return [.policyApplied(policy)]
        case .resumptionWaiting(let callID, let hold):
            resumptions[callID] = now + hold
            return []
        case .resumptionDone(let callID, let worker, let acceptSeq):
            resumptions[callID] = nil
            if let worker, let acceptSeq, let token = registry.reserve(worker, now: now) {
                registry.accepted(worker, token: token, acceptSeq: acceptSeq)
            }
            return []
        }
    }

    /// A dead worker's call comes before new calls and moves: while some wait, these are offered only if this
    /// router sees more free slots (on workers that may take calls) than calls waiting. Otherwise a slot freed
    /// by a caller hanging up would go to whichever new call came first (callers ask again at once, a waiting
    /// call at its next attempt), and a full fleet would never take a dead worker's calls on.
    private mutating func holdForResumptions(now: Instant) -> Action? {
        guard !resumptions.isEmpty else { return nil }
        resumptions = resumptions.filter { $0.value > now }  // a router that stopped announcing its call holds nothing
        guard !resumptions.isEmpty else { return nil }
        let free = registry.placeableFreeSlots(upTo: resumptions.count + 1)
        return free > resumptions.count ? nil : .held(waiting: resumptions.count, free: free)
    }

    /// Dead workers' calls waiting for a free slot now.
    public func resumptionsWaiting(now: Instant) -> Int { resumptions.values.count { $0 > now } }

    /// The heartbeat counts since the last call, and a fresh start.
    public mutating func takeIngested() -> [WorkerRegistry.IngestResult: Int] {
        defer { ingested.removeAll(keepingCapacity: true) }
        return ingested
    }

    /// What a new call tries first under the policy in force, and the revision it was chosen under.
    public mutating func versionChoice(tenant: String) -> (CanarySplit.Choice, revision: Int64?) {
        guard let policy = deploy else { return (.any, nil) }
        return (split.choose(policy, tenant: tenant), policy.revision)
    }

    /// Where a call of `version` may move, best first, under the policy in force (nil: anywhere), and its revision.
    public func moveTargets(for version: String) -> ([Set<String>]?, revision: Int64?) {
        (deploy?.moveTargets(for: version), deploy?.revision)
    }

    /// The versions live workers run (alive, not stopping): what a deploy change is checked against.
    public var liveVersions: Set<String> {
        Set(registry.entries.values.filter { $0.liveness == .alive && $0.heartbeat.state != .stopping }.map(\.heartbeat.version))
    }
}
