/// Which worker versions take new calls: the cluster's deploy policy, kept in Redis (`<prefix>:deploy`) and
/// announced on `<prefix>.deploy`. Pure: every change is a function of the policy, the change, the versions
/// live workers run and the time (Redis's), returning the next revision or a coded error.
///
/// - The **active** version takes new calls; a **canary** version, when set, takes a share of them
///   (`percent`, per call or per tenant); every other version is *outdated*: its workers take no new calls and
///   keep the ones they have.
/// - An outdated version that took calls before stays warm for the **rollback window**: a rollback to it is
///   instant because its workers are still there. When the window is over its workers drain (with the
///   deploy's drain deadline and at-deadline action).
/// - Revision 0 is "no policy yet": every version is eligible (a cluster that never deployed).
/// See docs/decisions/0009-versioned-deploys.md.
public struct DeployPolicy: Codable, Sendable, Equatable {
    public static let wireVersion = 1
    /// Previous active versions kept as rollback targets, and retired versions remembered, at most.
    public static let historyDepth = 10
    public static let defaultRollbackWindow: Duration = .seconds(30 * 60)
    public static let defaultDrainDeadline: Duration = .seconds(3600)
    public static let maxRollbackWindow: Duration = .seconds(7 * 24 * 3600)

    public enum CanaryKey: String, Codable, Sendable, CaseIterable {
        /// Each new call on its own: the share is exact over any run of calls.
        case call
        /// Each tenant as a whole: all of a tenant's new calls see the same version.
        case tenant
    }

    public struct Canary: Codable, Sendable, Equatable {
        public var version: String
        /// Share of new calls, 0...100 (two decimals count).
        public var percent: Double
        public var by: CanaryKey

        public init(version: String, percent: Double, by: CanaryKey = .call) {
            self.version = version
            self.percent = percent
            self.by = by
        }

        /// The share in hundredths of a percent, 0...10_000.
        public var basisPoints: Int { Int((min(100, max(0, percent)) * 100).rounded()) }
    }

    /// What made a revision.
    public enum Action: String, Codable, Sendable {
        case deploy, promote, abort, rollback
    }

    public var v = DeployPolicy.wireVersion
    public var revision: Int64
    public var active: String?
    public var canary: Canary?
    /// Versions that were active before, most recent first: the rollback targets.
    public var previous: [String]
    public var rollbackWindowMillis: Int64
    /// Given to the drain of an outdated version's workers when its rollback window is over.
    public var drainDeadlineMillis: Int64
    public var atDeadline: AtDeadline
    /// When each version that took new calls stopped taking them (Unix ms, Redis's clock). A version eligible
    /// again leaves the map.
    public var retired: [String: Int64]
    public var action: Action?
    public var changedAtMillis: Int64
    public var changedBy: String

    enum CodingKeys: String, CodingKey {
        case v, revision, active, canary, previous, retired, action
        case rollbackWindowMillis = "rollback_window_ms", drainDeadlineMillis = "drain_deadline_ms", atDeadline = "at_deadline"
        case changedAtMillis = "changed_at_ms", changedBy = "changed_by"
    }

    public init(revision: Int64 = 0, active: String? = nil, canary: Canary? = nil, previous: [String] = [],
                rollbackWindow: Duration = DeployPolicy.defaultRollbackWindow,
                drainDeadline: Duration = DeployPolicy.defaultDrainDeadline, atDeadline: AtDeadline = .migrate,
                retired: [String: Int64] = [:], action: Action? = nil, changedAtMillis: Int64 = 0, changedBy: String = "") {
        self.revision = revision
        self.active = active
        self.canary = canary
        self.previous = previous
        rollbackWindowMillis = rollbackWindow.milliseconds
        drainDeadlineMillis = drainDeadline.milliseconds
        self.atDeadline = atDeadline
        self.retired = retired
        self.action = action
        self.changedAtMillis = changedAtMillis
        self.changedBy = changedBy
    }

    /// No policy yet: every version takes new calls.
    public static let none = DeployPolicy()

    public var isNone: Bool { revision == 0 }

    /// The versions that take new calls; nil: any (no policy yet).
    public var eligibleVersions: Set<String>? {
        guard !isNone, let active else { return nil }
        return Set([active] + (canary.map { [$0.version] } ?? []))
    }

    public func isEligible(_ version: String) -> Bool { eligibleVersions?.contains(version) ?? true }

    /// The versions a running call may move to (migration, failover, a drain's deadline): its own first, then
    /// the active one, then the canary; nil: any (no policy yet, or a call with no version recorded).
    public func moveTargets(for callVersion: String) -> [Set<String>]? {
        guard !isNone, let active, !callVersion.isEmpty else { return nil }
        var order = [callVersion, active]
        if let canary { order.append(canary.version) }
        var seen = Set<String>()
        return order.filter { seen.insert($0).inserted }.map { [$0] }
    }

    // MARK: - Standing of a version

    public enum Standing: Equatable, Sendable {
        case eligible
        /// Takes no new calls. `drainAtMillis`: when its workers drain (its retirement plus the rollback
        /// window); nil for a version that never took calls under a policy (started ahead of its deploy).
        case outdated(drainAtMillis: Int64?)
    }

    public func standing(of version: String) -> Standing {
        guard !isEligible(version) else { return .eligible }
        return .outdated(drainAtMillis: retired[version].map { $0 &+ rollbackWindowMillis })
    }

    // MARK: - Changes

    public enum Change: Sendable, Equatable {
        /// Makes `version` the active one, or (with `canaryPercent`) the canary beside it.
        case deploy(version: String, canaryPercent: Double? = nil, canaryBy: CanaryKey? = nil, options: Options = Options())
        /// The canary becomes the active version.
        case promote
        /// The canary is dropped.
        case abort
        /// During a canary: the canary is dropped, every new call goes to the active version. Otherwise the
        /// previous active version (or `to`) becomes the active one again (and any canary is dropped).
        case rollback(to: String? = nil)
    }

    /// Per deploy: what happens to the versions it makes outdated. Nil keeps the policy's current value.
    public struct Options: Sendable, Equatable {
        public var rollbackWindow: Duration?
        public var drainDeadline: Duration?
        public var atDeadline: AtDeadline?
        public init(rollbackWindow: Duration? = nil, drainDeadline: Duration? = nil, atDeadline: AtDeadline? = nil) {
            self.rollbackWindow = rollbackWindow
            self.drainDeadline = drainDeadline
            self.atDeadline = atDeadline
        }
    }

    /// The next revision after `change`, made at `nowMillis` (Redis's clock) by `actor`. `liveVersions`: the
    /// versions live workers run now; a deploy or rollback to a version none runs is refused unless `force`.
    public func applying(_ change: Change, liveVersions: Set<String>, force: Bool = false, nowMillis: Int64,
                         actor: String) throws(SwitchboardError) -> DeployPolicy {
        var next = self
        next.revision = revision &+ 1
        next.changedAtMillis = nowMillis
        next.changedBy = actor
        switch change {
        case .deploy(let version, let percent, let by, let options):
            try Self.checkVersion(version)
            try next.apply(options)
            if let percent {
                guard percent.isFinite, (0...100).contains(percent) else {
                    throw SwitchboardError(.invalidArgument, "the canary weight must be 0 to 100 percent, got \(percent)")
                }
                if isNone {
                    // The first policy, as a canary: the version running now is the active one.
                    let running = liveVersions.subtracting([version])
                    guard running.count == 1, let only = running.first else {
                        throw SwitchboardError(.conflict, running.isEmpty
                            ? "no other version runs to be the active one beside a canary: deploy \(version) without --canary"
                            : "several versions run (\(running.sorted().joined(separator: ", "))): deploy the one that should take calls first, then the canary")
                    }
                    next.active = only
                }
                guard let active = next.active else {
                    throw SwitchboardError(.conflict, "there is no active version yet: deploy one without --canary first")
                }
                guard version != active else {
                    throw SwitchboardError(.invalidArgument, "\(version) is the active version already; a canary must be another one")
                }
                try Self.requireLive(version, liveVersions, force: force, doing: "a canary of")
                next.canary = Canary(version: version, percent: percent, by: by ?? canary?.by ?? .call)
                next.action = .deploy
            } else {
                guard version != active || isNone || canary != nil else {
                    throw SwitchboardError(.conflict, "\(version) is the active version already (revision \(revision))")
                }
                if version != canary?.version { try Self.requireLive(version, liveVersions, force: force, doing: "a deploy of") }
                if isNone {
                    // The first policy: the versions that took calls until now are the rollback targets.
                    next.previous = Array(liveVersions.subtracting([version]).sorted().prefix(Self.historyDepth))
                }
                next.makeActive(version)
                next.canary = nil
                next.action = .deploy
            }
        case .promote:
            guard let canary else { throw SwitchboardError(.conflict, "there is no canary to promote (revision \(revision))") }
            next.makeActive(canary.version)
            next.canary = nil
            next.action = .promote
        case .abort:
            guard canary != nil else { throw SwitchboardError(.conflict, "there is no canary to abort (revision \(revision))") }
            next.canary = nil
            next.action = .abort
        case .rollback(nil) where canary != nil:
            // During a canary the release under test is the canary: every new call goes back to the active one.
            next.canary = nil
            next.action = .rollback
        case .rollback(let to):
            guard let target = to ?? previous.first else {
                throw SwitchboardError(.conflict, "there is no previous version to roll back to (revision \(revision))")
            }
            try Self.checkVersion(target)
            guard target != active else { throw SwitchboardError(.conflict, "\(target) is the active version already") }
            guard previous.contains(target) else {
                throw SwitchboardError(.invalidArgument, "\(target) was not active before (previous: \(previous.isEmpty ? "none" : previous.joined(separator: ", "))); deploy it instead")
            }
            try Self.requireLive(target, liveVersions, force: force, doing: "a rollback to")
            next.makeActive(target)
            next.canary = nil
            next.action = .rollback
        }
        next.retire(from: self, liveVersions: liveVersions, nowMillis: nowMillis)
        return next
    }

    /// `version` becomes active; the one before goes first among the rollback targets.
    private mutating func makeActive(_ version: String) {
        if let old = active, old != version, !isNone {
            previous.removeAll { $0 == old }
            previous.insert(old, at: 0)
        }
        previous.removeAll { $0 == version }
        if previous.count > Self.historyDepth { previous.removeLast(previous.count - Self.historyDepth) }
        active = version
    }

    /// Versions eligible before and not now are retired now (before the first policy, every live version was
    /// eligible); versions eligible now are not retired.
    private mutating func retire(from before: DeployPolicy, liveVersions: Set<String>, nowMillis: Int64) {
        let now = eligibleVersions ?? []
        for version in before.eligibleVersions ?? liveVersions where !now.contains(version) { retired[version] = nowMillis }
        for version in now { retired[version] = nil }
        while retired.count > Self.historyDepth, let oldest = retired.min(by: { $0.value < $1.value })?.key {
            retired[oldest] = nil
        }
    }

    private mutating func apply(_ options: Options) throws(SwitchboardError) {
        if let window = options.rollbackWindow {
            guard window >= .zero, window <= Self.maxRollbackWindow else {
                throw SwitchboardError(.invalidArgument, "the rollback window must be 0 to 7 days, got \(window)")
            }
            rollbackWindowMillis = window.milliseconds
        }
        if let deadline = options.drainDeadline {
            try DrainRequest.checkDeadline(seconds: Double(deadline.milliseconds) / 1000)
            drainDeadlineMillis = deadline.milliseconds
        }
        if let atDeadline = options.atDeadline { self.atDeadline = atDeadline }
    }

    private static func checkVersion(_ version: String) throws(SwitchboardError) {
        do {
            try WireCheck.text(version, "version", max: 64)
        } catch {
            throw SwitchboardError(.invalidArgument, "a version must be 1-64 bytes without control characters")
        }
    }

    private static func requireLive(_ version: String, _ live: Set<String>, force: Bool, doing what: String) throws(SwitchboardError) {
        guard !force, !live.contains(version) else { return }
        let running = live.isEmpty ? "none" : live.sorted().joined(separator: ", ")
        throw SwitchboardError(.versionNotFound, "no live worker runs \(version) (versions running: \(running)); start its workers first, or --force \(what) it ahead of them")
    }

    // MARK: - Validation (a policy read from Redis or NATS is input like any other)

    public func validate() throws(SwitchboardError) {
        try WireCheck.range(revision, 0...Int64.max / 2, "revision")
        for version in [active, canary?.version].compactMap({ $0 }) + previous + Array(retired.keys) {
            try WireCheck.text(version, "version", max: 64)
        }
        if let canary {
            guard canary.percent.isFinite else { throw SwitchboardError(.badMessage, "'canary.percent' is not a number") }
            try WireCheck.range(canary.percent, 0...100, "canary.percent")
        }
        guard previous.count <= Self.historyDepth, retired.count <= Self.historyDepth else {
            throw SwitchboardError(.badMessage, "the policy keeps more than \(Self.historyDepth) versions")
        }
        try WireCheck.range(rollbackWindowMillis, 0...Self.maxRollbackWindow.milliseconds, "rollback_window_ms")
        try WireCheck.range(drainDeadlineMillis, 0...DrainRequest.maxDeadline.milliseconds, "drain_deadline_ms")
        // Unix ms from 1970 to 2100: a sum with a window or a deadline cannot overflow.
        let times: ClosedRange<Int64> = 0...4_102_444_800_000
        try WireCheck.range(changedAtMillis, times, "changed_at_ms")
        for at in retired.values { try WireCheck.range(at, times, "retired") }
        try WireCheck.text(changedBy, "changed_by", max: 256, allowEmpty: true)
        if !isNone && active == nil { throw SwitchboardError(.badMessage, "a policy past revision 0 names no active version") }
    }
}

/// `<prefix>.deploy`: a new deploy policy, broadcast by the router that wrote it (every router and worker
/// listens). Older revisions than the one held are ignored.
public struct DeployNotice: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = DeployNotice.wireVersion
    public var policy: DeployPolicy

    public init(policy: DeployPolicy) { self.policy = policy }

    public func validate() throws(SwitchboardError) { try policy.validate() }
}
