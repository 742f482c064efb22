import Foundation
import SwitchboardCore

/// The scheduler alone, no servers: decision latency (`choose` + `reserve`, as the router does it under its
/// lock) at 100, 1,000 and 10,000 workers; heartbeat ingest (JSON decode + `ingest`) at 10,000 workers; and
/// the balance simulator's max/mean per strategy for 1 s and 5 s heartbeats with 1, 4 and 8 routers.
struct SchedulerBench {
    var decisions: Int
    /// Simulated seconds after the warm-up, per strategy and setting.
    var simulatedSeconds: Int

    func run(into report: inout Report) async {
        for workers in [100, 1_000, 10_000] { decide(workers: workers, into: &report) }
        ingest(workers: 10_000, into: &report)
        await simulate(into: &report)
    }

    /// A registry of `count` ready workers in two regions, with calls and CPU spread out.
    static func fleet(_ count: Int, random: inout SeededRandom) -> (WorkerRegistry, [Heartbeat]) {
        var registry = WorkerRegistry()
        var heartbeats: [Heartbeat] = []
        let now = ContinuousClock.now
        for i in 0..<count {
            let calls = Int(random.next() % 150)
            let hb = Heartbeat(workerID: "worker-\(i)", version: "1.0.0", region: i % 2 == 0 ? "eu" : "us",
                               zone: i % 2 == 0 ? "eu-a" : "us-a", state: .ready, capacity: 200, activeCalls: calls,
                               cpu: 0.05 + 0.00375 * Double(calls), memoryUsedBytes: Int64(calls) << 22, memoryLimitBytes: 8 << 30,
                               seq: 1, incarnation: "i\(i)", accepted: UInt64(calls))
            registry.ingest(hb, now: now)
            heartbeats.append(hb)
        }
        return (registry, heartbeats)
    }

    func decide(workers: Int, into report: inout Report) {
        var random = SeededRandom(seed: 1)
        var (registry, _) = Self.fleet(workers, random: &random)
        var scheduler = Scheduler()
        let clock = ContinuousClock()
        let needs = Scheduler.Needs(region: "eu", locality: .preferred)
        var samples: [Duration] = []
        samples.reserveCapacity(decisions)
        for i in 0..<(decisions + decisions / 10) {
            let start = clock.now
            let decision = scheduler.choose(needs, in: registry, using: &random)
            let token = decision.chosen.flatMap { registry.reserve($0.workerID, now: start) }
            let elapsed = clock.now - start
            if let token, let id = decision.chosen?.workerID { registry.release(id, token: token) }
            if i >= decisions / 10 { samples.append(elapsed) }  // the first tenth warms caches
        }
        report.add(Row(name: "scheduler: choose + reserve, \(workers) workers", summary: LatencySummary(samples),
                       note: "spread d=\(Scheduler.Configuration().choices), preferred region (half the fleet)"))
    }

    /// Heartbeats as a router receives them: bytes decoded and validated, then ingested, each worker in turn.
    func ingest(workers: Int, into report: inout Report) {
        var random = SeededRandom(seed: 2)
        var (registry, heartbeats) = Self.fleet(workers, random: &random)
        let rounds = 5
        var encoded: [[UInt8]] = []
        encoded.reserveCapacity(rounds * workers)
        for round in 0..<rounds {
            for var hb in heartbeats {
                hb.seq = UInt64(2 + round)
                hb.activeCalls = Int(random.next() % 150)
                encoded.append(hb.encoded())
            }
        }
        let clock = ContinuousClock()
        var decode: [Duration] = [], ingest: [Duration] = [], both: [Duration] = []
        decode.reserveCapacity(encoded.count)
        ingest.reserveCapacity(encoded.count)
        both.reserveCapacity(encoded.count)
        let total = clock.now
        for bytes in encoded {
            let start = clock.now
            guard let hb = try? Heartbeat.decode(bytes) else { fatalError("heartbeat does not decode") }
            let decoded = clock.now
            registry.ingest(hb, now: decoded)
            let end = clock.now
            decode.append(decoded - start)
            ingest.append(end - decoded)
            both.append(end - start)
        }
        let perHeartbeat = (clock.now - total).microseconds / Double(encoded.count)
        let bytes = encoded.reduce(0) { $0 + $1.count } / encoded.count
        report.add(Row(name: "heartbeat: decode (JSON, \(bytes) bytes)", summary: LatencySummary(decode)))
        report.add(Row(name: "heartbeat: ingest, \(workers) workers", summary: LatencySummary(ingest)))
        report.add(Row(name: "heartbeat: decode + ingest, \(workers) workers", summary: LatencySummary(both),
                       throughput: 1e6 / perHeartbeat,
                       note: String(format: "%.2f µs each = %.1f%% of a core at 10,000 heartbeats/s", perHeartbeat, perHeartbeat * 10_000 / 1e6 * 100)))
    }

    /// max/mean live calls per strategy on 100 equal workers of 200 calls at 70%, two regions.
    func simulate(into report: inout Report) async {
        let settings: [(heartbeat: Int, routers: Int)] = [(1, 1), (1, 4), (1, 8), (5, 1), (5, 4), (5, 8)]
        let strategies = SimulationStrategy.comparison()
        var table: [[String]] = [["strategy"] + settings.map { "\($0.heartbeat) s, \($0.routers) router\($0.routers == 1 ? "" : "s")" }]
        for s in strategies { table.append([s.name]) }
        let clock = ContinuousClock()
        let start = clock.now
        for setting in settings {
            var c = SimulationConfiguration()
            c.classes = SimulationConfiguration.homogeneousClasses(cores: 8)
            c.routers = setting.routers
            c.heartbeatInterval = .seconds(setting.heartbeat)
            c.warmup = .seconds(600)
            c.duration = .seconds(simulatedSeconds)
            let results = await Self.runAll(c, strategies)
            for (i, r) in results.enumerated() {
                table[i + 1].append(String(format: "%.3f (worst %.3f)", r.balance, r.worstBalance))
                report.add(Row(name: "sim \(setting.heartbeat) s x\(setting.routers): \(r.strategy)",
                               note: String(format: "max/mean %.3f, worst %.3f, p99 peak CPU %.0f%%, refused %d, local %.1f%%",
                                            r.balance, r.worstBalance, r.p99PeakCPU * 100, r.refusedForCapacity, r.localityHitRate * 100)))
            }
        }
        let seconds = (clock.now - start).microseconds / 1e6
        print("\nmax/mean live calls (mean of 1 s samples; worst sample), 100 workers x 200 calls at 70%, "
              + "\(simulatedSeconds) s after 600 s warm-up, seed 1; \(String(format: "%.0f", seconds)) s to simulate")
        print(markdownTable(table))
    }

    /// The strategies two at a time (each run is single-threaded).
    static func runAll(_ c: SimulationConfiguration, _ strategies: [SimulationStrategy]) async -> [SimulationResult] {
        let origin = ContinuousClock.now
        return await withTaskGroup(of: (Int, SimulationResult).self) { group in
            var results = [SimulationResult?](repeating: nil, count: strategies.count)
            var next = 0
            let width = max(1, ProcessInfo.processInfo.activeProcessorCount)
            while next < min(width, strategies.count) {
                let i = next
                group.addTask { (i, BalanceSimulator(configuration: c, strategy: strategies[i]).run(origin: origin)) }
                next += 1
            }
            for await (i, result) in group {
                results[i] = result
                if next < strategies.count {
                    let j = next
                    group.addTask { (j, BalanceSimulator(configuration: c, strategy: strategies[j]).run(origin: origin)) }
                    next += 1
                }
            }
            return results.compactMap { $0 }
        }
    }

    func markdownTable(_ rows: [[String]]) -> String {
        guard let head = rows.first else { return "" }
        var lines = ["| " + head.joined(separator: " | ") + " |", "|" + String(repeating: " --- |", count: head.count)]
        for row in rows.dropFirst() { lines.append("| " + row.joined(separator: " | ") + " |") }
        return lines.joined(separator: "\n")
    }
}
