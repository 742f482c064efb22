import Foundation
import SwitchboardCore
import Testing

@Suite struct TenantPolicyTests {
    @Test func badLimitsAreRefusedWithAClearError() {
        let bad: [TenantPolicy] = [
            TenantPolicy(id: "acme", callsPerSecond: 0, burst: 10, maxLiveCalls: 10),
            TenantPolicy(id: "acme", callsPerSecond: -1, burst: 10, maxLiveCalls: 10),
            TenantPolicy(id: "acme", callsPerSecond: .nan, burst: 10, maxLiveCalls: 10),
            TenantPolicy(id: "acme", callsPerSecond: 1e9, burst: 10, maxLiveCalls: 10),
            TenantPolicy(id: "acme", callsPerSecond: 5, burst: 0, maxLiveCalls: 10),
            TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: -3),
            TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 1 << 40),
            TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 10, regions: [""]),
            TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 10, whenRedisDown: .open(localCap: 0)),
            TenantPolicy(id: "a b", callsPerSecond: 5, burst: 10, maxLiveCalls: 10),
        ]
        for policy in bad {
            let error = #expect(throws: SwitchboardError.self) { try policy.validate() }
            #expect(error?.code == .invalidArgument)
        }
        let error = #expect(throws: SwitchboardError.self) {
            try TenantPolicy(id: "acme", callsPerSecond: 5, burst: 0, maxLiveCalls: 10).validate()
        }
        #expect(error?.message == "tenant 'acme': burst must be 1-100000, not 0")
        #expect(throws: Never.self) {
            try TenantPolicy(id: "acme", callsPerSecond: 50, burst: 10, maxLiveCalls: 100, regions: ["eu"],
                             whenRedisDown: .open(localCap: 20)).validate()
        }
    }

    @Test func gcraAllowsTheBurstThenTheRate() {
        let gcra = GCRA(callsPerSecond: 50, burst: 10)  // one call per 20 ms, 10 at once
        #expect(gcra.interval == 20_000 && gcra.tolerance == 180_000)
        var tat: Int64?
        var now: Int64 = 1_000_000
        var allowed = 0
        for _ in 0..<15 {  // 15 at the same instant: the burst of 10 passes
            if case .allow(let next) = gcra.decide(tat: tat, now: now) { tat = next; allowed += 1 }
        }
        #expect(allowed == 10)
        guard case .deny(let wait) = gcra.decide(tat: tat, now: now) else { Issue.record("an 11th call passed"); return }
        #expect(wait == 20_000)
        // Then one call per interval, not more: over 1 s, 50 more.
        for _ in 0..<1000 {
            now += 1_000
            if case .allow(let next) = gcra.decide(tat: tat, now: now) { tat = next; allowed += 1 }
        }
        #expect(allowed == 60)
        // A quiet spell refills the burst, no more.
        now += 10_000_000
        allowed = 0
        for _ in 0..<20 { if case .allow(let next) = gcra.decide(tat: tat, now: now) { tat = next; allowed += 1 } }
        #expect(allowed == 10)
    }
}

@Suite struct TenantPolicyJSONTests {
    @Test func theStoredFormRoundTripsAndReadsAConfigFile() throws {
        let open = TenantPolicy(id: "acme", callsPerSecond: 50, burst: 10, maxLiveCalls: 100, regions: ["eu"],
                                whenRedisDown: .open(localCap: 20))
        #expect(try JSONDecoder().decode(TenantPolicy.self, from: Data(WireCodec.encode(open))) == open)
        let minimal = try JSONDecoder().decode(TenantPolicy.self, from: Data(#"{"id":"b","calls_per_second":5,"burst":2,"max_live_calls":9}"#.utf8))
        #expect(minimal == TenantPolicy(id: "b", callsPerSecond: 5, burst: 2, maxLiveCalls: 9))
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(TenantPolicy.self, from: Data(#"{"id":"b","calls_per_second":5,"burst":2,"max_live_calls":9,"when_redis_down":"maybe"}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(TenantPolicy.self, from: Data(#"{"id":"b","calls_per_second":5,"burst":2,"max_live_calls":9,"when_redis_down":"open"}"#.utf8))
        }
    }
}
