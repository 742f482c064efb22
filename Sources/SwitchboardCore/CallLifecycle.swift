/// One call on the worker that holds it, from the offer it said yes to until its slot is free, as a state
/// machine. Pure: the worker's shell feeds it what happened (Redis's answers, the handler's, a router's orders,
/// ticks of the clock) with the time, under the one lock of the worker's state, and carries out the actions
/// it returns after the lock.
///
/// ```
/// new call:    recordingStart ─► starting ─► live ─┬─► stopping ─► recordingEnd ─► done
/// moving in:   claiming ──────────┘    │           │        ▲
/// moving out:           holding ◄──────┴─► held ───┴────────┘ (released: another worker has it)
/// ```
///
/// - A new call's record is written before its audio is carried; a moved-in call is claimed in Redis (a new
///   epoch) before the worker says yes. An end asked for before either answers waits for it.
/// - `starting` lasts until the handler says it has started (an agent's `start` sent); the caller's silence
///   counts only from then (the agent may be saying hello), and never while this worker is cut off from NATS
///   or was frozen: that silence is the observer's, not the caller's.
/// - The first reason to end wins. A call another worker holds now is silenced at once and only left
///   (`forget`): its record is the new owner's. An end Redis did not take is kept to be written again.
/// - A held call that is neither released nor unheld within `heldTimeout` asks Redis whether it is still its
///   own: yes, it speaks again; no, it lets go; no answer, it asks again every `recheck`.
public struct CallLifecycle: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    public struct Limits: Sendable, Equatable {
        public var maxDuration: Duration
        /// Silence from the caller after which the call ends (`no_media`); nil: never.
        public var mediaTimeout: Duration?
        public var heldTimeout: Duration
        public var recheck: Duration

        public init(maxDuration: Duration, mediaTimeout: Duration?, heldTimeout: Duration, recheck: Duration = .seconds(1)) {
            self.maxDuration = maxDuration
            self.mediaTimeout = mediaTimeout
            self.heldTimeout = heldTimeout
            self.recheck = recheck
        }
    }

    public enum Phase: Sendable, Equatable {
        /// Moving in: claiming the call in Redis before saying yes to the offer.
        case claiming
        /// A new call, said yes to: its record is being written.
        case recordingStart
        /// Its audio is carried; the handler (the agent) has not started yet.
        case starting
        case live
        /// Moving out: the hold's checkpoint is being written; no audio goes out.
        case holding
        /// Held for another worker to take on, until released or unheld.
        case held
        /// Ending: its tasks are stopping.
        case stopping
        /// Its end (or, moved away, its leaving this worker's set) is being written.
        case recordingEnd
        case done
    }

    /// What came of writing a call's end (or leaving) to Redis.
    public enum EndWrite: Sendable, Equatable {
        case written
        /// Another worker holds the call now: its record is not this worker's to end.
        case notOwned
        /// Redis did not answer.
        case failed
    }

    public enum Event: Sendable, Equatable {
        case claimed(epoch: Int64)
        case claimFailed
        /// The start record written (or not: the refresh writes it again); `superseded`: the record was
        /// ended or taken on before it started here.
        case startRecorded(superseded: Bool)
        case handlerStarted
        case endRequested(EndReason)
        /// A write found that another worker holds the call (a checkpoint, a refresh).
        case superseded
        /// A router's order: the new worker has the call.
        case released
        case holdRequested
        case holdWritten(Checkpoint)
        /// `moved`: the checkpoint found another worker holds the call.
        case holdFailed(moved: Bool)
        case unholdRequested
        /// Whether the call is still this worker's (nil: Redis did not answer).
        case ownershipChecked(owned: Bool?)
        /// The clock, with when the caller was last heard and whether this worker is cut off or was frozen.
        case tick(lastHeard: Instant, cutOff: Bool)
        case tasksStopped
        case endRecorded(EndWrite)
    }

    public enum Action: Sendable, Equatable {
        case claim
        case recordStart
        /// Moving in: the claim stood; say yes to the offer.
        case answerAccepted
        case answerRefused(RefusalReason)
        /// Carry the call's audio through its handler.
        case startTasks
        case observeStart(Duration)
        /// Take the hold's checkpoint (no audio goes out from now).
        case hold
        case unhold
        case checkOwnership
        /// Another worker holds the call: no audio from here, at once.
        case silence
        case stopTasks
        case recordEnd(EndReason, epoch: Int64)
        /// Leave this worker's set of calls (the record is another worker's, or was never this one's).
        case forget
        case keepEndForRepair(EndReason, epoch: Int64)
        case publishEnded(EndReason)
        case answerEndRequests(EndReason)
        /// To the order that asked (hold, unhold, release).
        case replyOK
        case replyHeld(Checkpoint)
        case replyError(SwitchboardError)
        /// The slot is free and the call forgotten; nil when it never started (its claim failed).
        case free(EndReason?)

        /// The call's slot is free with this action: the shell takes the call out under the same lock.
        public var frees: Bool {
            if case .free = self { true } else { false }
        }
    }

    public let callID: String
    public let limits: Limits
    public private(set) var phase: Phase
    /// The ownership epoch held: 1 for a new call, the claim's for one taken on, nil before the claim.
    public private(set) var epoch: Int64?
    /// Why it ends, once decided (the first reason wins).
    public private(set) var reason: EndReason?
    private let acceptedAt: Instant
    private var tasksStartedAt: Instant?
    private var handlerStartedAt: Instant?
    /// The end asked for before the call's tasks started.
    private var pendingEnd: EndReason?
    /// The last time this worker was cut off or frozen: silence before it is not the caller's.
    private var excusedAt: Instant?
    private var nextOwnershipCheck: Instant?
    private var checkingOwnership = false

    /// A new call said yes to at `now`; `start()` gives its first actions.
    public init(newCall callID: String, limits: Limits, now: Instant) {
        self.callID = callID
        self.limits = limits
        self.phase = .recordingStart
        self.epoch = 1
        self.acceptedAt = now
    }

    /// A call another worker held, offered here with its checkpoint.
    public init(movingIn callID: String, limits: Limits, now: Instant) {
        self.callID = callID
        self.limits = limits
        self.phase = .claiming
        self.acceptedAt = now
    }

    public func start() -> [Action] { phase == .claiming ? [.claim] : [.recordStart] }

    /// Whether an end has been decided (or asked for before the call started) and not yet written.
    public var isEnding: Bool { phase != .done && (reason != nil || pendingEnd != nil) }

    /// Whether the call's tasks (audio, handler) run.
    private var isRunning: Bool { [.starting, .live, .holding, .held].contains(phase) }

    private var runningPhase: Phase { handlerStartedAt == nil ? .starting : .live }

    public mutating func on(_ event: Event, now: Instant) -> [Action] {
        switch event {
        case .claimed(let epoch):
            guard phase == .claiming else { return [] }
            self.epoch = epoch
            return [.answerAccepted] + startTasks(now)
        case .claimFailed:
            guard phase == .claiming else { return [] }
            phase = .done
            return [.answerRefused(.superseded), .free(nil)]
        case .startRecorded(let superseded):
            guard phase == .recordingStart else { return [] }
            return superseded ? [.silence] + end(.migrated) : startTasks(now)
        case .handlerStarted:
            guard handlerStartedAt == nil, let began = tasksStartedAt, isRunning else { return [] }
            handlerStartedAt = now
            if phase == .starting { phase = .live }
            return [.observeStart(now - began)]
        case .endRequested(let reason):
            switch phase {
            case .claiming, .recordingStart:
                if pendingEnd == nil { pendingEnd = reason }
                return []
            case .starting, .live, .holding, .held:
                return end(reason)
            case .stopping, .recordingEnd, .done:
                return []
            }
        case .superseded:
            return letGo()
        case .released:
            return phase == .done ? [] : [.replyOK] + letGo()
        case .holdRequested:
            switch phase {
            case .starting, .live, .held:
                phase = .holding
                return [.hold]
            case .holding:
                return [.replyError(SwitchboardError(.conflict, "call \(callID) is being held already"))]
            case .claiming, .recordingStart:
                return [.replyError(SwitchboardError(.conflict, "call \(callID) has not started on this worker yet"))]
            case .stopping, .recordingEnd, .done:
                return [.replyError(SwitchboardError(.conflict, "call \(callID) is ending"))]
            }
        case .holdWritten(let checkpoint):
            guard phase == .holding else {
                // It ended while its checkpoint was written: it is not to be taken on.
                return [.replyError(SwitchboardError(.conflict, "call \(callID) is ending"))]
            }
            phase = .held
            nextOwnershipCheck = now + limits.heldTimeout
            checkingOwnership = false
            return [.replyHeld(checkpoint)]
        case .holdFailed(let moved):
            if moved {
                return [.replyError(SwitchboardError(.conflict, "call \(callID) is recorded on another worker"))] + letGo()
            }
            guard phase == .holding else { return [.replyError(SwitchboardError(.unavailable, "could not checkpoint call \(callID)"))] }
            phase = runningPhase
            return [.unhold, .replyError(SwitchboardError(.unavailable, "could not checkpoint call \(callID)"))]
        case .unholdRequested:
            switch phase {
            case .holding:
                return [.replyError(SwitchboardError(.conflict, "call \(callID) is being held; unhold it once the hold is answered"))]
            case .held:
                phase = runningPhase
                return [.unhold, .replyOK]
            default:
                return [.replyOK]
            }
        case .ownershipChecked(let owned):
            guard phase == .held, checkingOwnership else { return [] }
            checkingOwnership = false
            switch owned {
            case true?:
                phase = runningPhase
                return [.unhold]
            case false?:
                return letGo()
            case nil:
                nextOwnershipCheck = now + limits.recheck
                return []
            }
        case .tick(let lastHeard, let cutOff):
            return tick(now: now, lastHeard: lastHeard, cutOff: cutOff)
        case .tasksStopped:
            // Stopped without being asked: the worker is being torn down (its `run()` cancelled). Like a crash,
            // nothing is ended or written: the routers resume the call elsewhere from its checkpoint.
            guard phase == .stopping, let reason else { return [] }
            return recordEnd(reason)
        case .endRecorded(let write):
            guard phase == .recordingEnd, let reason else { return [] }
            phase = .done
            guard reason != .migrated, let epoch else { return [.free(reason)] }
            switch write {
            case .written: return [.publishEnded(reason), .answerEndRequests(reason), .free(reason)]
            case .notOwned: return [.answerEndRequests(reason), .free(reason)]
            case .failed:
                // Written again at each refresh until Redis takes it; the call is over for everyone meanwhile.
                return [.keepEndForRepair(reason, epoch: epoch), .publishEnded(reason), .answerEndRequests(reason), .free(reason)]
            }
        }
    }

    private mutating func startTasks(_ now: Instant) -> [Action] {
        phase = .starting
        tasksStartedAt = now
        guard let pendingEnd else { return [.startTasks] }
        return [.startTasks] + end(pendingEnd)
    }

    /// Ends for `reason`: stops the tasks if they run, else writes the end at once.
    private mutating func end(_ reason: EndReason) -> [Action] {
        guard self.reason == nil else { return [] }
        self.reason = reason
        if isRunning {
            phase = .stopping
            return [.stopTasks]
        }
        return recordEnd(reason)
    }

    private mutating func recordEnd(_ reason: EndReason) -> [Action] {
        phase = .recordingEnd
        guard reason != .migrated, let epoch else { return [.forget] }
        return [.recordEnd(reason, epoch: epoch)]
    }

    /// Another worker holds the call now: silent at once, and ended `migrated` unless it was ending already.
    private mutating func letGo() -> [Action] {
        switch phase {
        case .done: return []
        case .claiming: return []  // no epoch of its own yet: the claim's answer decides
        case .recordingStart, .starting, .live, .holding, .held: return [.silence] + end(.migrated)
        case .stopping, .recordingEnd: return [.silence]
        }
    }

    private mutating func tick(now: Instant, lastHeard: Instant, cutOff: Bool) -> [Action] {
        if cutOff { excusedAt = now }
        guard isRunning else { return [] }
        if now - acceptedAt >= limits.maxDuration { return end(.maxDuration) }
        if phase == .live, let timeout = limits.mediaTimeout, !cutOff {
            let from = max(lastHeard, handlerStartedAt ?? now, excusedAt ?? lastHeard)
            if now - from >= timeout { return end(.noMedia) }
        }
        if phase == .held, !checkingOwnership, let next = nextOwnershipCheck, now >= next {
            checkingOwnership = true
            return [.checkOwnership]
        }
        return []
    }
}
