/// A router's admission of calls against its tenants' limits, as a pure machine. Redis keeps the counts (a
/// rate token and a live-call lease per call, in one script); what Redis said, or that it could not be asked,
/// comes in; whether the call is admitted, the error it is refused with, and the counter to add to come out.
/// What a router must remember itself is held here: the calls it admitted on its own while Redis was
/// unreachable (a tenant whose limits fail open, up to a local cap), and the leases it still has to give back
/// (a call refused or not placed must never keep a tenant's slot).
public struct Admission: Sendable, Equatable {
    /// What Redis's admission script decided.
    public enum Verdict: Equatable, Sendable {
        case admitted(live: Int)
        case rateLimited(retryAfter: Duration)
        case quotaExceeded(live: Int, max: Int)
        /// The month's call time is used up (`used` of `limit` milliseconds).
        case usageLimit(used: Int64, limit: Int64)
    }

    public enum Decision: Equatable, Sendable {
        /// `withoutRedis`: on the tenant's local cap, Redis unreachable (the call goes on unrecorded if it must).
        case admitted(withoutRedis: Bool)
        case refused(SwitchboardError)
    }

    /// A decision and the admission counter's `result` label for it.
    public struct Outcome: Equatable, Sendable {
        public var decision: Decision
        public var result: String

        public init(decision: Decision, result: String) {
            self.decision = decision
            self.result = result
        }
    }

    /// A live-call lease to give back.
    public struct Lease: Equatable, Sendable {
        public var tenant: String
        public var callID: String

        public init(tenant: String, callID: String) {
            self.tenant = tenant
            self.callID = callID
        }
    }

    /// What to do with the lease of a call admitted and then not placed.
    public enum Release: Equatable, Sendable {
        /// Give it back now (on failure, `queue` it).
        case now
        /// Queued: the release loop gives it back once Redis answers.
        case queued
    }

    /// Leases waiting for Redis at most; the oldest goes first (it expires with its lease time anyway).
    public static let maxPendingReleases = 10_000

    /// Calls admitted per tenant by this router alone while Redis was unreachable; cleared when Redis answers.
    public private(set) var admittedWithoutRedis: [String: Int] = [:]
    /// Leases of calls refused or not placed, to give back once Redis answers, oldest first.
    public private(set) var pendingReleases: [Lease] = []

    public init() {}

    /// Redis answered the admission script for `policy`'s call.
    public mutating func redisAnswered(_ verdict: Verdict, policy: TenantPolicy) -> Outcome {
        if !admittedWithoutRedis.isEmpty { admittedWithoutRedis.removeAll() }  // Redis is back: its counts rule
        switch verdict {
        case .admitted:
            return Outcome(decision: .admitted(withoutRedis: false), result: "admitted")
        case .rateLimited(let wait):
            return Outcome(decision: .refused(SwitchboardError(
                .rateLimited, "tenant '\(policy.id)' is over \(policy.callsPerSecond) calls per second (burst \(policy.burst))",
                context: ["retry_after_ms": String(max(1, wait.milliseconds))])), result: "rate_limited")
        case .quotaExceeded(let live, let max):
            return Outcome(decision: .refused(SwitchboardError(.quotaExceeded, "tenant '\(policy.id)' holds \(live) live calls of its \(max)")),
                           result: "quota_exceeded")
        case .usageLimit(let used, let limit):
            return Outcome(decision: .refused(SwitchboardError(
                .usageLimit, "tenant '\(policy.id)' used \(Self.minutes(used)) of its \(Self.minutes(limit)) call minutes this month (UTC); live calls go on",
                context: ["used_ms": "\(used)", "limit_ms": "\(limit)"])), result: "usage_limit")
        }
    }

    /// Redis could not be asked for `policy`'s call (`error`). A tenant whose limits fail closed is refused
    /// (`unavailable`); one that fails open is admitted up to its local cap on this router, then refused
    /// (`quota_exceeded`). A refusal's lease is queued for release: the script may have run all the same (a
    /// timeout is no answer).
    public mutating func redisFailed(_ policy: TenantPolicy, callID: String, error: SwitchboardError) -> Outcome {
        guard case .open(let cap) = policy.whenRedisDown else {
            queueRelease(Lease(tenant: policy.id, callID: callID))
            return Outcome(decision: .refused(SwitchboardError(.unavailable, "tenant limits cannot be checked: \(error.message)")),
                           result: "refused_redis_down")
        }
        guard admittedWithoutRedis[policy.id, default: 0] < cap else {
            queueRelease(Lease(tenant: policy.id, callID: callID))
            return Outcome(decision: .refused(SwitchboardError(
                .quotaExceeded, "tenant '\(policy.id)' reached its cap of \(cap) calls on this router while Redis is unreachable")),
                           result: "quota_exceeded_redis_down")
        }
        admittedWithoutRedis[policy.id, default: 0] += 1
        return Outcome(decision: .admitted(withoutRedis: true), result: "admitted_redis_down")
    }

    /// A call admitted for `tenant` was then not placed (`failure`). Admitted on the local cap: its place under
    /// the cap is free again, and its lease is queued (should Redis have run the script it did not answer).
    /// Admitted by Redis: its lease goes back now, unless Redis is what failed (then once it answers).
    public mutating func notPlaced(tenant: String, callID: String, admittedWithoutRedis withoutRedis: Bool,
                                   failure: SwitchboardError.Code) -> Release {
        if withoutRedis {
            if let n = admittedWithoutRedis[tenant], n > 0 { admittedWithoutRedis[tenant] = n - 1 }
            queueRelease(Lease(tenant: tenant, callID: callID))
            return .queued
        }
        if failure == .unavailable {
            queueRelease(Lease(tenant: tenant, callID: callID))
            return .queued
        }
        return .now
    }

    /// Keeps `lease` to give back once Redis answers.
    public mutating func queueRelease(_ lease: Lease) {
        if pendingReleases.count >= Self.maxPendingReleases { pendingReleases.removeFirst() }
        pendingReleases.append(lease)
    }

    /// The leases to give back now, oldest first; the queue is empty after.
    public mutating func takeReleases() -> [Lease] {
        defer { pendingReleases.removeAll() }
        return pendingReleases
    }

    /// `leases` could not be given back (Redis stopped answering part way): first in the queue again, in order.
    public mutating func releasesFailed(_ leases: [Lease]) {
        pendingReleases.insert(contentsOf: leases, at: 0)
        if pendingReleases.count > Self.maxPendingReleases { pendingReleases.removeFirst(pendingReleases.count - Self.maxPendingReleases) }
    }

    private static func minutes(_ millis: Int64) -> String {
        let tenths = (millis * 10 + 30_000) / 60_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
