import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardWorker

/// Versioned deploys, timed: three routers and two workers (versions 1 and 2) in this process, each with
/// connections of its own. A policy change is timed from the call that makes it to the moment the last
/// router has taken it (each router's own clock reading when it applied it), beside a raw NATS round trip of
/// the same run; placement is timed with no policy, then with a 20% canary.
struct DeployBench {
    var natsURL: String
    var redisURL: String
    var changes = 50
    var placements = 2000

    func run(into report: inout Report) async throws {
        var logger = Logger(label: "bench.deploy")
        logger.logLevel = ProcessInfo.processInfo.environment["BENCH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let subjects = try Subjects(prefix: "bench\(Identifiers.random(bytes: 3))")
        let keys = try RedisKeys(prefix: subjects.prefix)
        var connections: [(NATSConnection, RedisClient)] = []
        func connect(_ name: String) async throws -> (NATSConnection, RedisClient) {
            let pair = (try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: name), logger: logger),
                        try RedisClient(url: redisURL, logger: logger))
            connections.append(pair)
            return pair
        }
        defer { for (nats, redis) in connections { nats.close(); redis.close() } }

        var routers: [Router] = []
        var tasks: [Task<Void, any Error>] = []
        for i in 1...3 {
            var config = RouterConfiguration(id: "bench-router-\(i)", subjects: subjects, keys: keys)
            config.httpPort = 0
            let (nats, redis) = try await connect(config.id)
            let router = Router(configuration: config, nats: nats, redis: redis, logger: logger)
            routers.append(router)
            tasks.append(Task { try await router.run() })
        }
        var workers: [Worker] = []
        for version in ["1", "2"] {
            let config = WorkerConfiguration(id: "bench-v\(version)", version: version, region: "local", zone: "local-a",
                                             capacity: 100_000, subjects: subjects, keys: keys)
            let (nats, redis) = try await connect(config.id)
            let worker = try Worker(configuration: config, nats: nats, redis: redis, handler: EchoHandler(), logger: logger)
            workers.append(worker)
            tasks.append(Task { try await worker.run() })
        }
        defer { for w in workers { w.stop() }; for t in tasks { t.cancel() } }
        let (caller, _) = try await connect("bench-caller")
        let deadline = ContinuousClock.now + .seconds(30)
        while !routers.allSatisfy({ r in r.workers().filter(\.isPlaceable).count == 2 && r.deployPolicy() != nil }) {
            guard ContinuousClock.now < deadline else { throw SwitchboardError(.timeout, "routers did not see both workers") }
            try await Task.sleep(for: .milliseconds(20))
        }

        let echo = try caller.subscribe(to: "\(subjects.prefix).echo") { m in try? caller.reply(to: m, payload: m.payload) }
        defer { echo.unsubscribe() }
        try await caller.flush()
        let natsRTT = LatencySummary(try await timeEach(2000) { _ = try await caller.request("\(subjects.prefix).echo", payload: [1]) })!
        report.add(Row(name: "raw NATS request/reply (same run)", summary: natsRTT))

        // Placement with no policy: every version eligible.
        let payload = RouteRequest(tenant: "bench").encoded()
        func route() async throws -> String {
            let reply = try RouteReply.decode(try await caller.request(subjects.route, payload: payload).payload)
            guard let call = reply.call else { throw SwitchboardError(.noCapacity, reply.error?.message ?? "not placed") }
            try caller.publish(subjects.end(worker: call.workerID, call: call.callID), payload: CallEnd(callID: call.callID, reason: .caller).encoded())
            return call.version
        }
        let plain = LatencySummary(try await timeEach(placements) { _ = try await route() })!
        report.add(Row(name: "route over NATS, no deploy policy", summary: plain, throughput: 1e6 / plain.mean.microseconds))

        // Policy changes: canary weights back and forth on version 2 beside version 1.
        _ = try await routers[0].changeDeploy(.deploy(version: "1"), actor: "bench")
        var inForce: [Duration] = []
        for i in 0..<changes {
            let start = ContinuousClock.now
            let status = try await routers[0].changeDeploy(.deploy(version: "2", canaryPercent: Double(10 + i % 2 * 10)), actor: "bench")
            while !routers.allSatisfy({ $0.deployPolicy()?.policy.revision == status.policy.revision }) { await Task.yield() }
            inForce.append(routers.compactMap { $0.deployPolicy()?.appliedAt }.max()! - start)
        }
        let change = LatencySummary(inForce)!
        report.add(Row(name: "deploy change in force on all 3 routers", summary: change, baseline: "raw NATS p50",
                       ratio: change.p50.microseconds / natsRTT.p50.microseconds,
                       note: "read, write and notice; \(changes) changes"))

        // Placement under a 20% canary, and the share it gave.
        _ = try await routers[0].changeDeploy(.deploy(version: "2", canaryPercent: 20), actor: "bench")
        while !routers.allSatisfy({ $0.deployPolicy()?.policy.canary?.percent == 20 }) { await Task.yield() }
        var onCanary = 0
        let canary = LatencySummary(try await timeEach(placements) { if try await route() == "2" { onCanary += 1 } })!
        report.add(Row(name: "route over NATS, 20% canary policy", summary: canary, throughput: 1e6 / canary.mean.microseconds,
                       baseline: "of the route with no policy", ratio: canary.p50.microseconds / plain.p50.microseconds,
                       note: String(format: "%.2f%% of %d on the canary", Double(onCanary) / Double(placements) * 100, placements)))

        // The decision alone, pure: the split and the scheduler with and without versions.
        var registry = WorkerRegistry()
        let now = ContinuousClock.now
        for i in 0..<1000 {
            registry.ingest(Heartbeat(workerID: "w\(i)", version: i % 2 == 0 ? "1" : "2", region: "eu", zone: "eu-a", state: .ready,
                                      capacity: 100, activeCalls: i % 50, cpu: 0.2, memoryUsedBytes: 1, memoryLimitBytes: 4,
                                      seq: 1, incarnation: "i"), now: now)
        }
        var scheduler = Scheduler()
        var random = SystemRandomNumberGenerator()
        var split = CanarySplit()
        let policy = DeployPolicy(revision: 2, active: "1", canary: .init(version: "2", percent: 20))
        let anyVersion = LatencySummary(timeEachSync(20_000) { _ = scheduler.choose(.init(), in: registry, using: &random) })!
        let byPolicy = LatencySummary(timeEachSync(20_000) {
            let choice = split.choose(policy, tenant: "t")
            _ = scheduler.choose(.init(versions: choice.versions, fallback: choice.fallback), in: registry, using: &random)
        })!
        report.add(Row(name: "decision, 1,000 workers, no policy", summary: anyVersion))
        report.add(Row(name: "decision, 1,000 workers, canary split", summary: byPolicy, baseline: "of no policy",
                       ratio: byPolicy.p50.microseconds / max(0.001, anyVersion.p50.microseconds)))
    }
}

/// Times `count` runs of a synchronous `body`.
func timeEachSync(_ count: Int, _ body: () -> Void) -> [Duration] {
    let clock = ContinuousClock()
    var samples: [Duration] = []
    samples.reserveCapacity(count)
    for _ in 0..<count {
        let start = clock.now
        body()
        samples.append(clock.now - start)
    }
    return samples
}
