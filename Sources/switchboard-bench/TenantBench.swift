import Logging
import SwitchboardCore
import SwitchboardRedis

/// Tenant limits: one admission (rate check and live-call lease, one script) beside a raw Redis round trip
/// measured in the same run, and renewing the leases of 10,000 live calls.
struct TenantBench {
    var url: String
    var count: Int

    func run(into report: inout Report) async throws {
        var quiet = Logger(label: "bench.tenants")
        quiet.logLevel = .warning
        let redis = try RedisClient(url: url, logger: quiet)
        defer { redis.close() }
        let keys = try RedisKeys(prefix: "bench\(Identifiers.random(bytes: 3))")
        let limits = TenantLimits(redis: redis, keys: keys)
        let policy = TenantPolicy(id: "bench", callsPerSecond: 100_000, burst: 100_000, maxLiveCalls: 10_000_000)

        for i in 0..<500 { _ = try await limits.admit(policy, callID: "warm\(i)") }
        var raw: [Duration] = [], admit: [Duration] = []
        for round in 0..<4 {
            raw += try await timeEach(count / 4) { _ = try await redis.send(["SET", keys.prefix + ":rtt", "v"]) }
            var i = 0
            admit += try await timeEach(count / 4) {
                i += 1
                _ = try await limits.admit(policy, callID: "c\(round)-\(i)")
            }
        }
        let rtt = LatencySummary(raw)!, adm = LatencySummary(admit)!
        report.add(Row(name: "raw Redis SET (same run)", summary: rtt))
        report.add(Row(name: "tenant admission (rate + live-call lease)", summary: adm, throughput: 1e6 / adm.mean.microseconds,
                       baseline: "raw Redis p50", ratio: adm.p50.microseconds / rtt.p50.microseconds))

        // 10,000 live calls renewed in batches of 1,000 (as workers of 1,000 calls each would).
        let calls = (0..<10_000).map { (tenant: "bench", callID: "live\($0)") }
        for call in calls { _ = try await limits.admit(policy, callID: call.callID) }
        let clock = ContinuousClock()
        let start = clock.now
        var renewed = 0
        for batch in stride(from: 0, to: calls.count, by: 1_000) {
            renewed += try await limits.renew(Array(calls[batch..<batch + 1_000]))
        }
        let took = clock.now - start
        report.add(Row(name: "lease renewal, 10000 live calls", throughput: Double(renewed) / (took.microseconds / 1e6),
                       note: String(format: "%.1f ms for all 10,000 (batches of 1,000); %d renewed", took.microseconds / 1000, renewed)))
        _ = try await redis.send(["DEL", keys.tenantRate("bench"), keys.tenantLeases("bench")])
    }
}
