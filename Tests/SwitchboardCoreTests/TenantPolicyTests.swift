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

    @Test func usageLimitsAreValidatedAndTheTighterOneCounts() throws {
        func policy(price: Double? = nil, minutes: Int? = nil, spend: Double? = nil) -> TenantPolicy {
            var p = TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 10)
            p.pricePerMinute = price
            p.monthlyMinutes = minutes
            p.monthlySpend = spend
            return p
        }
        for bad in [policy(price: -0.01), policy(price: .infinity), policy(minutes: 0), policy(minutes: -5), policy(spend: 10),
                    policy(price: 0, spend: 10), policy(price: 0.02, spend: 0), policy(price: 0.02, spend: .nan)] {
            #expect(throws: SwitchboardError.self) { try bad.validate() }
        }
        #expect(policy().monthlyLimitMillis == nil)
        #expect(policy(price: 0.02).monthlyLimitMillis == nil)
        #expect(policy(minutes: 100).monthlyLimitMillis == 6_000_000)
        // 1.00 at 0.02 a minute buys 50 minutes: tighter than 100.
        #expect(policy(price: 0.02, minutes: 100, spend: 1).monthlyLimitMillis == 3_000_000)
        #expect(policy(price: 0.02, minutes: 10, spend: 1).monthlyLimitMillis == 600_000)
        try policy(price: 0.02, minutes: 10, spend: 1).validate()
        // JSON: the three are optional, and kept.
        let decoded = try JSONDecoder().decode(TenantPolicy.self, from: Data(#"{"id":"acme","calls_per_second":5,"burst":10,"max_live_calls":10,"price_per_minute":0.5,"monthly_minutes":30}"#.utf8))
        #expect(decoded.pricePerMinute == 0.5 && decoded.monthlyMinutes == 30 && decoded.monthlySpend == nil)
        #expect(try JSONDecoder().decode(TenantPolicy.self, from: JSONEncoder().encode(decoded)) == decoded)
    }

    @Test func usageMonthsAndDaysAreUTCCalendarOnes() throws {
        #expect(UsagePeriod.month(0) == "1970-01" && UsagePeriod.day(0) == 1)
        #expect(UsagePeriod.month(951_782_400_000) == "2000-02" && UsagePeriod.day(951_782_400_000) == 29)  // 2000-02-29 00:00
        #expect(UsagePeriod.month(951_868_799_999) == "2000-02" && UsagePeriod.day(951_868_799_999) == 29)  // its last ms
        #expect(UsagePeriod.month(951_868_800_000) == "2000-03" && UsagePeriod.day(951_868_800_000) == 1)
        #expect(UsagePeriod.month(1_798_761_599_999) == "2026-12" && UsagePeriod.day(1_798_761_599_999) == 31)
        #expect(UsagePeriod.month(1_798_761_600_000) == "2027-01")
        #expect(UsagePeriod.month(-1) == "1969-12" && UsagePeriod.day(-1) == 31)
        // Every day of 400 years against Foundation's calendar.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        for day in stride(from: Int64(0), to: 146_097 * 3, by: 7) {
            let ms = day * 86_400_000 + 43_200_000
            let parts = calendar.dateComponents([.year, .month, .day], from: Date(timeIntervalSince1970: Double(ms) / 1000))
            let month = String(format: "%04d-%02d", parts.year!, parts.month!)
            guard UsagePeriod.month(ms) == month, UsagePeriod.day(ms) == parts.day! else {
                Issue.record("day \(day): \(UsagePeriod.month(ms))-\(UsagePeriod.day(ms)), Foundation says \(month)-\(parts.day!)")
                return
            }
        }
        for bad in ["2026-13", "2026-00", "26-12", "2026-1", "2026/12", "1999-12", "", "2026-12-01"] {
            #expect(throws: SwitchboardError.self) { try UsagePeriod.validMonth(bad) }
        }
        #expect(try UsagePeriod.validMonth("2026-12") == "2026-12")
    }

    @Test func aUsageReportPricesAndLimitsTheMonth() {
        let usage = TenantUsage(tenant: "acme", month: "2026-12", fields: ["call_ms": "90000", "calls": "3", "d05": "60000", "d31": "30000",
                                                                           "d32": "1", "x": "2", "d07": "oops"])
        #expect(usage.callMillis == 90_000 && usage.calls == 3 && usage.days == [5: 60_000, 31: 30_000])
        var policy = TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 10)
        policy.pricePerMinute = 0.5
        policy.monthlyMinutes = 1
        let report = UsageReport(usage, policy: policy)
        #expect(report.minutes == 1.5 && report.cost == 0.75 && report.limitReached)
        #expect(report.days.map(\.day) == ["2026-12-05", "2026-12-31"] && report.days.map(\.callSeconds) == [60, 30])
        let free = UsageReport(usage, policy: nil)
        #expect(free.cost == nil && !free.limitReached)
    }
}
