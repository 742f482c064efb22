/// A worker's place under the deploy policy, as a state machine. Pure: the policy and the time (Unix ms on
/// Redis's clock) are inputs; each step says what the worker must do.
///
/// ```
/// current ──policy: version not eligible──▶ outdated (no new calls, calls go on)
///    ▲                                         │ rollback window over (and this process was up before it was)
///    │                                         ▼
///    └──policy: eligible again (undrain)─── draining (the drain machinery; exits when empty)
/// ```
/// A worker that starts after its version's rollback window was over stays outdated and idle: it has no calls
/// to drain, and leaving at once would only have its supervisor start it again.
public struct DeployStanding: Sendable, Equatable {
    public enum Action: Equatable, Sendable {
        /// Take no new calls (heartbeats say `outdated`), under the policy of this revision.
        case outdated(revision: Int64)
        /// Take new calls again.
        case current
        /// The rollback window is over: drain with the deploy's deadline and what then.
        case drain(deadline: Duration, atDeadline: AtDeadline)
        /// Eligible again: cancel the drain the deploy started.
        case undrain
    }

    public let version: String
    /// When this process first learned the policy (about its start), Redis's clock.
    public private(set) var startedAtMillis: Int64?
    public private(set) var revision: Int64 = -1
    public private(set) var isOutdated = false
    /// When to drain, while outdated and not draining yet.
    public private(set) var drainAtMillis: Int64?
    /// This machine started the drain of this outdated spell (once: an operator who undrains it has the last
    /// word until the version is eligible again).
    public private(set) var drained = false
    private var drainDeadline: Duration = .zero
    private var atDeadline: AtDeadline = .migrate

    public init(version: String) {
        self.version = version
    }

    /// A policy read or announced; an older revision than the one applied is ignored.
    public mutating func apply(_ policy: DeployPolicy, nowMillis: Int64) -> [Action] {
        if startedAtMillis == nil { startedAtMillis = nowMillis }
        guard policy.revision >= revision else { return [] }
        let changed = policy.revision != revision
        revision = policy.revision
        var actions: [Action] = []
        switch policy.standing(of: version) {
        case .eligible:
            drainAtMillis = nil
            if isOutdated {
                isOutdated = false
                actions.append(.current)
            }
            if drained {
                drained = false
                actions.append(.undrain)
            }
        case .outdated(let drainAt):
            if !isOutdated || changed { actions.append(.outdated(revision: policy.revision)) }
            isOutdated = true
            drainDeadline = .milliseconds(policy.drainDeadlineMillis)
            atDeadline = policy.atDeadline
            if !drained, let drainAt, let started = startedAtMillis, started < drainAt {
                drainAtMillis = drainAt
            } else {
                drainAtMillis = nil
            }
        }
        return actions + tick(nowMillis: nowMillis)
    }

    public mutating func tick(nowMillis: Int64) -> [Action] {
        guard isOutdated, !drained, let drainAt = drainAtMillis, nowMillis >= drainAt else { return [] }
        drained = true
        drainAtMillis = nil
        return [.drain(deadline: drainDeadline, atDeadline: atDeadline)]
    }
}
