import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis

extension Router {
    /// The tenant an `Authorization: Bearer <key>` value belongs to; nil when tenancy is off. Keys found are
    /// trusted for `keyCacheTime`, so a route costs no extra round trip for them.
    public func tenant(authorization: String?) async throws(SwitchboardError) -> TenantPolicy? {
        guard configuration.tenancy else { return nil }
        guard let authorization, authorization.hasPrefix("Bearer ") else {
            throw SwitchboardError(.authenticationFailed, "an API key is needed: Authorization: Bearer <key>")
        }
        let key = String(authorization.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        let now = clock.now
        if let cached = keyCache.withLock({ $0[key] }), cached.until > now { return cached.policy }
        let policy = try await tenants.authenticate(key)
        keyCache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }  // bounded: a flood of keys cannot grow it
            cache[key] = (policy, now + configuration.keyCacheTime)
        }
        return policy
    }

    /// Operator endpoints: open when tenancy is off; else only to the admin key.
    public func requireAdmin(authorization: String?) throws(SwitchboardError) {
        guard configuration.tenancy else { return }
        guard let admin = configuration.adminKey, !admin.isEmpty, let authorization,
              Self.constantTimeEqual(authorization, "Bearer " + admin)
        else { throw SwitchboardError(.authenticationFailed, "this endpoint needs the admin key") }
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Takes a rate token and a live-call lease for the call, or refuses with `rate_limited` (the wait in the
    /// error's context) or `quota_exceeded`.
    func admit(_ policy: TenantPolicy, callID: String) async throws(SwitchboardError) {
        let decision: TenantLimits.Decision
        do {
            decision = try await limits.admit(policy, callID: callID)
        } catch {
            metrics.increment(MetricNames.admissions, ["result": "redis_error"], help: "Route requests admitted or refused by tenant limits")
            throw SwitchboardError(.unavailable, "tenant limits cannot be checked: \(error.message)")
        }
        switch decision {
        case .admitted:
            metrics.increment(MetricNames.admissions, ["result": "admitted"], help: "Route requests admitted or refused by tenant limits")
        case .rateLimited(let wait):
            metrics.increment(MetricNames.admissions, ["result": "rate_limited"], help: "Route requests admitted or refused by tenant limits")
            let ms = wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000
            throw SwitchboardError(.rateLimited, "tenant '\(policy.id)' is over \(policy.callsPerSecond) calls per second (burst \(policy.burst))",
                                   context: ["retry_after_ms": String(max(1, ms))])
        case .quotaExceeded(let live, let max):
            metrics.increment(MetricNames.admissions, ["result": "quota_exceeded"], help: "Route requests admitted or refused by tenant limits")
            throw SwitchboardError(.quotaExceeded, "tenant '\(policy.id)' holds \(live) live calls of its \(max)")
        }
    }

    /// A call's record, if `tenant` (when given) owns it: another tenant's call is `not_found`, as if absent.
    public func call(_ id: String, tenant: TenantPolicy?) async throws(SwitchboardError) -> CallRecord {
        let record = try await call(id)
        if let tenant, record.tenant != tenant.id { throw SwitchboardError(.notFound, "no call \(id)") }
        return record
    }
}
