import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Tenant rate limits and live-call quotas in Redis")
struct TenantLimitsTests {
    /// Two clients stand for two routers sharing one Redis.
    func withTwoRouters(leaseTime: Duration = .seconds(30),
                        _ body: (TenantLimits, TenantLimits) async throws -> Void) async throws {
        let (url, server) = try await SharedServer.redis()
        defer { withExtendedLifetime(server) {} }
        let first = try RedisClient(url: url, logger: testLogger), second = try RedisClient(url: url, logger: testLogger)
        defer { first.close(); second.close() }
        let keys = try RedisKeys(prefix: uniquePrefix())
        try await body(TenantLimits(redis: first, keys: keys, leaseTime: leaseTime),
                       TenantLimits(redis: second, keys: keys, leaseTime: leaseTime))
    }

    @Test func theRateLimitHoldsExactlyAcrossTwoRouters() async throws {
        try await withTwoRouters { a, b in
            let policy = TenantPolicy(id: "acme", callsPerSecond: 50, burst: 10, maxLiveCalls: 1_000_000)
            // 1,000 admits over 4 s (250 a second, 5x the rate), half through each router, 8 at a time.
            let clock = ContinuousClock()
            let start = clock.now
            let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
                for lane in 0..<8 {
                    group.addTask {
                        var count = 0
                        for i in 0..<125 {
                            try await clock.sleep(until: start + .milliseconds(Int64(i) * 32 + Int64(lane) * 4))
                            let limits = lane % 2 == 0 ? a : b
                            if case .admitted = try await limits.admit(policy, callID: "c\(lane)-\(i)") { count += 1 }
                        }
                        return count
                    }
                }
                return try await group.reduce(0, +)
            }
            let elapsed = Double((clock.now - start).components.attoseconds) / 1e18 + Double((clock.now - start).components.seconds)
            // GCRA admits the burst plus one call per 20 ms of the time the requests spanned, and not one more.
            let most = 10 + Int(elapsed * 50) + 1
            #expect(admitted <= most, "admitted \(admitted) in \(elapsed) s; the limit allows \(most)")
            // And it does not refuse what it may take. (Loosely: on a busy test run the callers themselves fall
            // behind their pace and leave some of the allowance unused.)
            #expect(admitted >= 10 + Int(elapsed * 10), "admitted \(admitted) in \(elapsed) s")
        }
    }

    @Test func theLiveCallQuotaIsNeverExceededUnderABurst() async throws {
        try await withTwoRouters { a, b in
            let policy = TenantPolicy(id: "acme", callsPerSecond: 100_000, burst: 100_000, maxLiveCalls: 25)
            let outcomes = try await withThrowingTaskGroup(of: TenantLimits.Decision.self) { group in
                for i in 0..<200 { group.addTask { try await (i % 2 == 0 ? a : b).admit(policy, callID: "c\(i)") } }
                return try await group.reduce(into: [TenantLimits.Decision]()) { $0.append($1) }
            }
            let admitted = outcomes.filter { if case .admitted = $0 { true } else { false } }.count
            #expect(admitted == 25)
            #expect(outcomes.contains(.quotaExceeded(live: 25, max: 25)))
            #expect(try await a.live(tenant: "acme") == 25)

            // Ending calls frees their slots; retrying an admitted call takes nothing more.
            for i in 0..<200 { try await b.release(tenant: "acme", callID: "c\(i)") }
            #expect(try await a.live(tenant: "acme") == 0)
            #expect(try await a.admit(policy, callID: "again") == .admitted(live: 1))
            #expect(try await b.admit(policy, callID: "again") == .admitted(live: 1))
        }
    }

    @Test func anUnrenewedLeaseExpiresAndARenewedOneStays() async throws {
        // Leases of 5 s, so a test run that stalls this process for a few seconds does not expire them early.
        try await withTwoRouters(leaseTime: .seconds(5)) { a, b in
            let policy = TenantPolicy(id: "acme", callsPerSecond: 1000, burst: 100, maxLiveCalls: 2)
            #expect(try await a.admit(policy, callID: "kept") == .admitted(live: 1))
            #expect(try await a.admit(policy, callID: "lost") == .admitted(live: 2))
            #expect(try await b.admit(policy, callID: "third") == .quotaExceeded(live: 2, max: 2))
            // The worker holding "kept" renews it; nobody renews "lost" (its worker died).
            for _ in 0..<7 {
                try await Task.sleep(for: .seconds(1))
                #expect(try await b.renew([(tenant: "acme", callID: "kept")]) == 1)
            }
            // An expired lease is not brought back by a late renewal (nothing else has swept it yet).
            #expect(try await b.renew([(tenant: "acme", callID: "lost"), (tenant: "acme", callID: "kept")]) == 1)
            #expect(try await a.live(tenant: "acme") == 1)
            #expect(try await b.admit(policy, callID: "third") == .admitted(live: 2))
        }
    }

    @Test func aRefusedCallIsToldWhenToRetry() async throws {
        try await withTwoRouters { a, _ in
            // One call per 5 s: the second call comes well within that even on a busy test run.
            let policy = TenantPolicy(id: "slow", callsPerSecond: 0.2, burst: 1, maxLiveCalls: 100)
            let start = ContinuousClock.now
            #expect(try await a.admit(policy, callID: "one") == .admitted(live: 1))
            guard case .rateLimited(let wait) = try await a.admit(policy, callID: "two") else {
                Issue.record("a second call within 5 s passed")
                return
            }
            // The rest of the 5 s interval: what is left of it when the second call arrived.
            let between = ContinuousClock.now - start
            #expect(wait <= .seconds(5) && wait >= .seconds(5) - between - .milliseconds(5),
                    "retry after \(wait), \(between) after the first call")
        }
    }
}
