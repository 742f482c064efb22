import SwitchboardCore
import Testing

@Suite struct LatencySummaryTests {
    @Test func nearestRankPercentiles() throws {
        let samples = (1...100).reversed().map { Duration.microseconds($0) }
        let s = try #require(LatencySummary(samples))
        #expect(s.count == 100)
        #expect(s.p50 == .microseconds(50))
        #expect(s.p90 == .microseconds(90))
        #expect(s.p99 == .microseconds(99))
        #expect(s.max == .microseconds(100))
        #expect(s.mean.microseconds == 50.5)
    }

    @Test func singleSampleAndEmpty() throws {
        let s = try #require(LatencySummary([.milliseconds(3)]))
        #expect(s.p50 == .milliseconds(3) && s.p99 == .milliseconds(3))
        #expect(LatencySummary([]) == nil)
    }
}
