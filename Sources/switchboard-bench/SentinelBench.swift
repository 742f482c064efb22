import CBenchBaseline
import Foundation
import Logging
import SwitchboardCore
import SwitchboardLocal
import SwitchboardRedis

/// What following a primary through Sentinels costs: a primary with two replicas and a Sentinel on loopback;
/// SET through the Sentinel URL (each write confirmed by a replica with `WAIT 1`) beside the same client
/// straight at the primary with no confirmation, and a plain C hiredis loop at the primary, all in one run.
struct SentinelBench {
    var count: Int

    func run(into report: inout Report) async throws {
        let primary = try await LocalServer(.redis, label: "sbbench")
        let replicas = [try await LocalServer(.redis, arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"], label: "sbbench"),
                        try await LocalServer(.redis, arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"], label: "sbbench")]
        let sentinel = try await LocalServer(.sentinel, configLines: ["sentinel monitor bench 127.0.0.1 \(primary.port) 1"], label: "sbbench")
        defer { for server in [primary, sentinel] + replicas { server.kill() } }
        var quiet = Logger(label: "bench.sentinel")
        quiet.logLevel = .error
        let direct = try RedisClient(configuration: RedisConfiguration(url: primary.url), logger: quiet)
        defer { direct.close() }
        // Both replicas streaming before anything is timed.
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? await direct.send(["INFO", "replication"]).string)?.components(separatedBy: "state=online").count != 3 {
            guard ContinuousClock.now < deadline else { throw SwitchboardError(.timeout, "replicas did not come online") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let followed = try RedisClient(configuration: RedisConfiguration(url: "redis-sentinel://127.0.0.1:\(sentinel.port)/bench"), logger: quiet)
        defer { followed.close() }
        let key = "bench:sentinel:\(UInt32.random(in: 0...UInt32.max))"
        let n = max(1000, count / 4)
        for _ in 0..<500 {
            _ = try await direct.send(["SET", key, "v"])
            _ = try await followed.send(["SET", key, "v"])
        }
        var c: [Duration] = [], plain: [Duration] = [], acked: [Duration] = []
        for _ in 0..<4 {
            var out = [Int64](repeating: 0, count: n / 4)
            var error = [CChar](repeating: 0, count: 256)
            guard sb_baseline_redis_set("127.0.0.1", Int32(primary.port), key, Int32(n / 4), &out, &error, Int32(error.count)) == 0 else {
                throw SwitchboardError(.internalError, "C baseline failed")
            }
            c += nanos(out)
            plain += try await timeEach(n / 4) { _ = try await direct.send(["SET", key, "v"]) }
            acked += try await timeEach(n / 4) { _ = try await followed.send(["SET", key, "v"]) }
        }
        let cs = LatencySummary(c)!, ps = LatencySummary(plain)!, ws = LatencySummary(acked)!
        report.add(Row(name: "Redis SET at the primary, plain C hiredis loop (baseline)", summary: cs, throughput: 1e6 / cs.mean.microseconds))
        report.add(Row(name: "Redis SET at the primary, Switchboard client (no replica ack)", summary: ps,
                       throughput: 1e6 / ps.mean.microseconds, baseline: "C p50", ratio: ps.p50.microseconds / cs.p50.microseconds))
        report.add(Row(name: "Redis SET via Sentinel, confirmed by a replica (WAIT 1)", summary: ws,
                       throughput: 1e6 / ws.mean.microseconds, baseline: "C p50", ratio: ws.p50.microseconds / cs.p50.microseconds,
                       note: String(format: "%.2fx the unconfirmed client", ws.p50.microseconds / ps.p50.microseconds)))
        _ = try? await direct.send(["DEL", key])
    }
}
