import Foundation

/// What happens to the calls still running when a drain's deadline passes.
public enum AtDeadline: String, Codable, Sendable, CaseIterable {
    /// Move each call to another worker from its latest checkpoint (live migration).
    case migrate
    /// End each call with reason `drain_deadline`.
    case end
}

/// A worker's drain, from the request to the exit. Pure: time and the worker's calls are inputs, and every
/// step returns what the worker must do.
///
/// ```
/// serving ──request──▶ draining ──deadline, end──────────────────▶ ending ──no calls──▶ done (exit 0)
///    ▲                  │  ▲ │                                        ▲
///    └────cancel────────┘  │ └─deadline, migrate─▶ migrating ─give up─┘
///                          └──────────request──────────┘ │
///                          draining / migrating ──no calls──▶ done
///
/// A drain that does not leave (`leave: false`, `--when-drained stay`) ends in `drained` rather than `done`:
/// no calls, up, taking none, until a cancel (serving again) or a request that leaves (done at once).
/// ```
/// Migration is retried every `retryEvery` for the calls still here (no other worker may have had room);
/// after `giveUpAfter` the rest are ended with reason `drain_deadline`, so a drain always finishes.
public struct Drain: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    public enum Phase: Equatable, Sendable {
        case serving
        case draining(deadline: Instant, atDeadline: AtDeadline)
        case migrating(since: Instant, lastAttempt: Instant)
        case ending
        /// Empty and staying up: takes no calls; a cancel serves again, a request that leaves exits.
        case drained
        case done
    }

    public enum Action: Equatable, Sendable {
        /// Take no new calls; tell the routers now.
        case refuseNewCalls
        /// Take new calls again (the drain was cancelled).
        case acceptNewCalls
        /// Ask the routers to move these calls elsewhere.
        case migrate([String])
        /// End these calls with this reason.
        case end([String], EndReason)
        /// The last call is gone: leave the cluster and exit 0.
        case exit
        /// The last call is gone and the drain does not leave: stay up, taking no calls.
        case idle
    }

    public var retryEvery: Duration
    public var giveUpAfter: Duration
    public private(set) var phase: Phase = .serving
    /// Whether the worker leaves when the last call is gone (else it stays `drained`). Once a request
    /// leaves, later ones cannot take that back; a cancel does.
    public private(set) var leaves = true

    public init(retryEvery: Duration = .seconds(2), giveUpAfter: Duration = .seconds(30)) {
        self.retryEvery = retryEvery
        self.giveUpAfter = giveUpAfter
    }

    /// Not serving: no new calls.
    public var isDraining: Bool { phase != .serving }

    /// A drain request (a new one replaces the deadline of one under way). `leave`: exit when the last call
    /// is gone (a SIGTERM always does; an operator's or a deploy's drain may stay up). Once calls are being
    /// ended or the worker is leaving, only makes an ending drain leave.
    public mutating func request(deadline: Instant, atDeadline: AtDeadline, now: Instant, calls: Set<String>,
                                 leave: Bool = true) -> [Action] {
        switch phase {
        case .done:
            return []
        case .ending:
            leaves = leaves || leave
            return tick(now: now, calls: calls)
        case .drained:
            guard leave else { return [] }
            phase = .done
            return [.exit]
        case .serving:
            leaves = leave
            phase = .draining(deadline: deadline, atDeadline: atDeadline)
            return [.refuseNewCalls] + tick(now: now, calls: calls)
        case .draining, .migrating:
            leaves = leaves || leave
            phase = .draining(deadline: deadline, atDeadline: atDeadline)
            return tick(now: now, calls: calls)
        }
    }

    /// Whether `cancel` would serve again.
    public var isCancellable: Bool {
        switch phase {
        case .draining, .migrating, .drained: return true
        case .serving, .ending, .done: return false
        }
    }

    /// Cancels a drain. False (and nothing changes) when there is none, or calls are already being ended or
    /// the worker is leaving: too late to take calls again.
    public mutating func cancel() -> (cancelled: Bool, actions: [Action]) {
        guard isCancellable else { return (false, []) }
        phase = .serving
        leaves = true
        return (true, [.acceptNewCalls])
    }

    /// Advances time with the calls the worker holds now.
    public mutating func tick(now: Instant, calls: Set<String>) -> [Action] {
        if phase != .serving && phase != .done && phase != .drained && calls.isEmpty {
            phase = leaves ? .done : .drained
            return [leaves ? .exit : .idle]
        }
        switch phase {
        case .serving, .drained, .done:
            return []
        case .draining(let deadline, let atDeadline):
            guard now >= deadline else { return [] }
            switch atDeadline {
            case .end:
                phase = .ending
                return [.end(calls.sorted(), .drainDeadline)]
            case .migrate:
                phase = .migrating(since: now, lastAttempt: now)
                return [.migrate(calls.sorted())]
            }
        case .migrating(let since, let lastAttempt):
            if now - since >= giveUpAfter {
                phase = .ending
                return [.end(calls.sorted(), .drainDeadline)]
            }
            guard now - lastAttempt >= retryEvery else { return [] }
            phase = .migrating(since: since, lastAttempt: now)
            return [.migrate(calls.sorted())]
        case .ending:
            return []
        }
    }
}

/// A drain as operators ask for it and as Redis keeps it (hash `<prefix>:drains`, worker id → this JSON), so
/// it outlives a router restart and a worker's reconnect.
public struct DrainRequest: Codable, Sendable, Equatable {
    public var workerID: String
    /// Unix time in milliseconds at which calls still running are migrated or ended.
    public var deadlineMillis: Int64
    public var atDeadline: AtDeadline
    public var requestedBy: String
    public var requestedAtMillis: Int64

    enum CodingKeys: String, CodingKey {
        case workerID = "worker_id", deadlineMillis = "deadline_ms", atDeadline = "at_deadline"
        case requestedBy = "requested_by", requestedAtMillis = "requested_at_ms"
    }

    public init(workerID: String, deadlineMillis: Int64, atDeadline: AtDeadline, requestedBy: String, requestedAtMillis: Int64) {
        self.workerID = workerID
        self.deadlineMillis = deadlineMillis
        self.atDeadline = atDeadline
        self.requestedBy = requestedBy
        self.requestedAtMillis = requestedAtMillis
    }

    /// Who asks when a worker drains itself: on SIGTERM, and at the end of its version's rollback window.
    public static let bySignal = "signal", byDeploy = "deploy"

    /// A drain the worker started itself: its heartbeats say so; routers need not hold it back on their own.
    public var isWorkersOwn: Bool { requestedBy == Self.bySignal || requestedBy == Self.byDeploy }

    /// The longest deadline accepted (a week).
    public static let maxDeadline: Duration = .seconds(7 * 24 * 3600)

    /// Checks an operator's deadline: not negative, at most `maxDeadline`.
    public static func checkDeadline(seconds: Double) throws(SwitchboardError) {
        guard seconds.isFinite, seconds >= 0 else {
            throw SwitchboardError(.invalidArgument, "drain deadline must be zero or more seconds, got \(seconds)")
        }
        guard seconds <= Double(maxDeadline.components.seconds) else {
            throw SwitchboardError(.invalidArgument, "drain deadline must be at most a week (\(maxDeadline.components.seconds) s), got \(seconds)")
        }
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(workerID, "worker_id")
        try WireCheck.text(requestedBy, "requested_by", max: 128)
        try WireCheck.unixMillis(deadlineMillis, "deadline_ms")
        try WireCheck.unixMillis(requestedAtMillis, "requested_at_ms")
    }

    /// A drain as Redis keeps it (JSON in `<kp>:drains`), read back like network input.
    public static func decodeStored(_ text: String) throws(SwitchboardError) -> DrainRequest {
        let request: DrainRequest
        do {
            request = try JSONDecoder().decode(DrainRequest.self, from: Data(text.utf8))
        } catch {
            throw SwitchboardError(.badMessage, "stored drain request cannot be read: \(error)")
        }
        try request.validate()
        return request
    }

    /// The deadline on this process's clock, given the Unix time now (a validated request cannot overflow;
    /// the subtraction saturates anyway).
    public func deadline(now: ContinuousClock.Instant, unixNowMillis: Int64) -> ContinuousClock.Instant {
        let (left, overflow) = deadlineMillis.subtractingReportingOverflow(unixNowMillis)
        return now + .milliseconds(overflow ? 0 : min(max(0, left), DrainRequest.maxDeadline.milliseconds))
    }
}
