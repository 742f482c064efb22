import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis

extension Router {
    /// The tenant an `Authorization: Bearer <key>` value belongs to; nil when tenancy is off. Keys found are
    /// trusted for `keyCacheTime`, so a route costs no extra round trip for them.
    /// `deadline`: the route's, when the key is checked for one.
    public func tenant(authorization: String?, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> TenantPolicy? {
        guard configuration.tenancy else { return nil }
        guard let authorization, authorization.hasPrefix("Bearer ") else {
            throw SwitchboardError(.authenticationFailed, "an API key is needed: Authorization: Bearer <key>")
        }
        let key = String(authorization.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        let now = clock.now
        let cached = state.withLock { $0.keyCache[key] }
        if let cached, cached.until > now { return cached.policy }
        let policy: TenantPolicy
        do {
            policy = try await tenants.authenticate(key, deadline: deadline)
        } catch where error.code != .authenticationFailed {
            // Redis unreachable: a key this router checked a moment ago still counts (its tenant's `when Redis is
            // down` rule then decides); an unknown one, or one checked too long ago, cannot be checked.
            if let cached, now - cached.until < configuration.keyStaleLimit - configuration.keyCacheTime { return cached.policy }
            throw SwitchboardError(.unavailable, "API keys cannot be checked: \(error.message)")
        }
        state.withLock { state in
            if state.keyCache.count > 10_000 { state.keyCache.removeAll() }  // bounded: a flood of keys cannot grow it
            state.keyCache[key] = (policy, now + configuration.keyCacheTime)
        }
        return policy
    }

    /// Who is asking for an operator action: the name of the admin key in `Authorization: Bearer <key>`.
    /// Without a key, or with an unknown one: `authentication_failed` (401); with a tenant's key: `forbidden`
    /// (403). Tenancy on or off alike. Refusals are counted and (at most a few a second) audited.
    public func operatorName(authorization: String?, action: String) async throws(SwitchboardError) -> String {
        if configuration.insecureNoAuth { return "anyone (auth off)" }
        let key = authorization.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces) : nil }
        if let key {
            // Every key compared in full: the time taken does not say which one nearly matched.
            var found: String?
            for admin in configuration.adminKeys where ConstantTime.equal(key, admin.key) { found = admin.name }
            if let found { return found }
        }
        var status = "unauthorized"
        if let key, key.hasPrefix("sbk_"), (try? await tenants.authenticate(key)) != nil { status = "forbidden" }
        metrics.increment(MetricNames.operatorRefusals, ["status": status], help: "Operator requests refused: no or unknown key, or a tenant's key")
        if state.withLock({ $0.refusalAudit.take(now: clock.now) }) {
            await audit(action, target: "", actor: key == nil ? "no key" : status == "forbidden" ? "a tenant's key" : "an unknown key",
                        outcome: status)
        }
        if status == "forbidden" { throw SwitchboardError(.forbidden, "a tenant's key cannot do operator actions; use an admin key") }
        throw SwitchboardError(.authenticationFailed, "this needs an admin key: Authorization: Bearer <key>")
    }

    /// Takes a rate token and a live-call lease for the call, or refuses with `rate_limited` (the wait in the
    /// error's context) or `quota_exceeded`.
    enum Admitted { case byRedis, withoutRedis }

    /// Asks Redis to admit the call and lets the `Admission` machine decide from its answer, or from its
    /// silence (the tenant's rule for Redis down); counts and logs the decision.
    @discardableResult
    func admit(_ policy: TenantPolicy, callID: String, deadline: ContinuousClock.Instant) async throws(SwitchboardError) -> Admitted {
        let outcome: Admission.Outcome
        var redisError: SwitchboardError?
        do {
            let verdict = try await limits.admit(policy, callID: callID, deadline: deadline)
            outcome = state.withLock { $0.admission.redisAnswered(verdict, policy: policy) }
        } catch {
            redisError = error
            outcome = state.withLock { $0.admission.redisFailed(policy, callID: callID, error: error) }
        }
        countAdmission(outcome.result, policy.id)
        switch outcome.decision {
        case .admitted(let withoutRedis):
            if withoutRedis {
                logger.warning("call admitted without Redis (the tenant's limits fail open, up to a local cap)",
                               metadata: [LogKey.tenant: "\(policy.id)", LogKey.callID: "\(callID)", LogKey.error: "\(redisError.map { "\($0)" } ?? "")"])
            }
            return withoutRedis ? .withoutRedis : .byRedis
        case .refused(let refusal):
            if let redisError, refusal.code == .unavailable {
                logger.warning("call refused: Redis unreachable and the tenant's limits fail closed",
                               metadata: [LogKey.tenant: "\(policy.id)", LogKey.callID: "\(callID)", LogKey.error: "\(redisError)"])
            }
            throw refusal
        }
    }

    /// A call admitted for `tenant` was then not placed: its lease goes back (now, or once Redis answers), and a
    /// place under the local cap is free again.
    func notPlaced(tenant: String, callID: String, admittedWithoutRedis: Bool, failure: SwitchboardError) async {
        let release = state.withLock {
            $0.admission.notPlaced(tenant: tenant, callID: callID, admittedWithoutRedis: admittedWithoutRedis, failure: failure.code)
        }
        guard release == .now else { return }
        do {
            try await limits.release(tenant: tenant, callID: callID)
        } catch {
            state.withLock { $0.admission.queueRelease(.init(tenant: tenant, callID: callID)) }
        }
    }

    /// Gives back the leases waiting for Redis, every second (at once again while a batch goes through), so a
    /// call refused or not placed never holds a tenant's slot past Redis's return (or its lease time).
    func releaseLoop() async {
        while !Task.isCancelled {
            let pending = state.withLock { $0.admission.takeReleases() }
            var failed: [Admission.Lease] = []
            for (i, lease) in pending.enumerated() {
                do {
                    try await limits.release(tenant: lease.tenant, callID: lease.callID)
                } catch {
                    failed = Array(pending[i...])
                    break
                }
            }
            if !failed.isEmpty { state.withLock { $0.admission.releasesFailed(failed) } }
            try? await Task.sleep(for: pending.isEmpty || !failed.isEmpty ? .seconds(1) : .milliseconds(10))
        }
    }

    /// Counts an admission decision, labelled with the tenant while there are few enough of them.
    private func countAdmission(_ result: String, _ tenant: String) {
        metrics.increment(MetricNames.admissions, ["result": result, "tenant": tenantLabels.label(tenant)],
                          help: "Route requests admitted or refused by tenant limits")
    }

    /// Counts call time metered for a tenant (a call lost with its worker, ended here).
    func countMetered(_ tenant: String, _ millis: Int64) {
        metrics.countMetered(tenant: tenantLabels.label(tenant), millis: millis)
    }

    /// A tenant's usage in `month` (`YYYY-MM`, UTC; this month when nil), for an admin key or the tenant's own
    /// (another tenant's key finds no such tenant).
    public func usage(of tenantID: String, month: String?, authorization: String?) async throws(SwitchboardError) -> UsageReport {
        do {
            try WireCheck.identifier(tenantID, "tenant id")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        let month = try month.map { text throws(SwitchboardError) in try UsagePeriod.validMonth(text) } ?? UsagePeriod.month(wallClock.unixMillis)
        var policy: TenantPolicy?
        do throws(SwitchboardError) {
            guard let own = try await tenant(authorization: authorization) else { throw SwitchboardError(.authenticationFailed, "tenancy is off") }
            guard own.id == tenantID else { throw SwitchboardError(.notFound, "no tenant \(tenantID)") }
            policy = own
        } catch where error.code == .authenticationFailed {
            // Not a tenant's key: an admin's, or refused.
            _ = try await operatorName(authorization: authorization, action: "tenant usage")
            policy = try? await tenants.get(tenantID).policy  // a deleted tenant's months can still be read
        }
        return UsageReport(try await limits.usage(tenantID, month: month), policy: policy)
    }

    /// A call's timeline, for an admin key or (tenancy on) the key of the tenant whose call it is: `not_found`
    /// for another tenant's call, and for a call with no timeline (never placed, or past its retention).
    public func timeline(of callID: String, authorization: String?) async throws(SwitchboardError) -> Timeline {
        do {
            try WireCheck.identifier(callID, "call id")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        do throws(SwitchboardError) {
            if let tenant = try await tenant(authorization: authorization) { _ = try await call(callID, tenant: tenant) }
        } catch where error.code == .authenticationFailed {
            _ = try await operatorName(authorization: authorization, action: "call timeline")
        }
        let timeline = try await timeline.store.timeline(callID)
        guard !timeline.events.isEmpty || timeline.dropped > 0 else { throw SwitchboardError(.notFound, "no timeline for call \(callID)") }
        return timeline
    }

    /// A call's record, if `tenant` (when given) owns it: another tenant's call is `not_found`, as if absent.
    public func call(_ id: String, tenant: TenantPolicy?) async throws(SwitchboardError) -> CallRecord {
        let record = try await call(id)
        if let tenant, record.tenant != tenant.id { throw SwitchboardError(.notFound, "no call \(id)") }
        return record
    }
}
