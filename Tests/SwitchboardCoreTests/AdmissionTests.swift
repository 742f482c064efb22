import SwitchboardCore
import Testing

/// The router's admission, without Redis or a router: what Redis answered (or its silence) in, decisions out.
struct AdmissionTests {
    let closed = TenantPolicy(id: "acme", callsPerSecond: 10, burst: 5, maxLiveCalls: 3)
    var open: TenantPolicy {
        var policy = closed
        policy.whenRedisDown = .open(localCap: 2)
        return policy
    }
    let down = SwitchboardError(.unavailable, "Redis did not answer within 200 ms")

    @Test func redisDecidesWhileItAnswers() {
        var admission = Admission()
        #expect(admission.redisAnswered(.admitted(live: 1), policy: closed) == .init(decision: .admitted(withoutRedis: false), result: "admitted"))
        let limited = admission.redisAnswered(.rateLimited(retryAfter: .microseconds(300)), policy: closed)
        guard case .refused(let error) = limited.decision else { Issue.record("not refused"); return }
        #expect(error.code == .rateLimited && error.context["retry_after_ms"] == "1" && limited.result == "rate_limited", "\(error)")
        let full = admission.redisAnswered(.quotaExceeded(live: 3, max: 3), policy: closed)
        #expect(full.decision == .refused(SwitchboardError(.quotaExceeded, "tenant 'acme' holds 3 live calls of its 3")))
        let spent = admission.redisAnswered(.usageLimit(used: 90_000, limit: 60_000), policy: closed)
        guard case .refused(let usage) = spent.decision else { Issue.record("not refused"); return }
        #expect(usage.code == .usageLimit && usage.message.contains("used 1.5 of its 1.0 call minutes") && usage.context["used_ms"] == "90000")
        #expect(admission.pendingReleases.isEmpty, "a refusal Redis made took no lease")
    }

    /// Fail closed: refused, and the lease the script may have taken anyway is queued for release.
    @Test func aTenantThatFailsClosedIsRefusedWhileRedisIsDown() {
        var admission = Admission()
        let outcome = admission.redisFailed(closed, callID: "c1", error: down)
        #expect(outcome.result == "refused_redis_down")
        guard case .refused(let error) = outcome.decision else { Issue.record("not refused"); return }
        #expect(error.code == .unavailable && error.message.contains("Redis did not answer"))
        #expect(admission.pendingReleases == [.init(tenant: "acme", callID: "c1")])
    }

    /// Fail open: admitted up to the local cap on this router, then refused; a call not placed frees its place;
    /// Redis answering again clears the local count.
    @Test func aTenantThatFailsOpenIsAdmittedUpToItsLocalCap() {
        var admission = Admission()
        #expect(admission.redisFailed(open, callID: "c1", error: down).decision == .admitted(withoutRedis: true))
        #expect(admission.redisFailed(open, callID: "c2", error: down).decision == .admitted(withoutRedis: true))
        let third = admission.redisFailed(open, callID: "c3", error: down)
        #expect(third.result == "quota_exceeded_redis_down")
        if case .refused(let error) = third.decision { #expect(error.code == .quotaExceeded) } else { Issue.record("admitted past the cap") }
        #expect(admission.pendingReleases.map(\.callID) == ["c3"])

        // c2 was not placed: its place under the cap is free, its lease queued.
        #expect(admission.notPlaced(tenant: "acme", callID: "c2", admittedWithoutRedis: true, failure: .noCapacity) == .queued)
        #expect(admission.admittedWithoutRedis["acme"] == 1)
        #expect(admission.redisFailed(open, callID: "c4", error: down).decision == .admitted(withoutRedis: true))

        _ = admission.redisAnswered(.admitted(live: 2), policy: open)
        #expect(admission.admittedWithoutRedis.isEmpty, "Redis is back: its counts rule")
    }

    /// A call Redis admitted and that was then not placed gives its lease back at once, unless Redis is what
    /// failed; releases that fail go back to the front of the queue, in order; the queue is bounded.
    @Test func leasesOfCallsNotPlacedGoBackNowOrOnceRedisAnswers() {
        var admission = Admission()
        #expect(admission.notPlaced(tenant: "acme", callID: "c1", admittedWithoutRedis: false, failure: .noCapacity) == .now)
        #expect(admission.pendingReleases.isEmpty)
        #expect(admission.notPlaced(tenant: "acme", callID: "c2", admittedWithoutRedis: false, failure: .unavailable) == .queued)
        admission.queueRelease(.init(tenant: "acme", callID: "c3"))
        let batch = admission.takeReleases()
        #expect(batch.map(\.callID) == ["c2", "c3"] && admission.pendingReleases.isEmpty)
        admission.queueRelease(.init(tenant: "acme", callID: "c4"))
        admission.releasesFailed(Array(batch.dropFirst()))  // c2 went back, c3 did not
        #expect(admission.pendingReleases.map(\.callID) == ["c3", "c4"])

        for i in 0..<(Admission.maxPendingReleases + 5) { admission.queueRelease(.init(tenant: "t", callID: "x\(i)")) }
        #expect(admission.pendingReleases.count == Admission.maxPendingReleases)
        #expect(admission.pendingReleases.first?.callID == "x5", "the oldest went first")
    }
}
