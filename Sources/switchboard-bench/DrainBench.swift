import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardWorker
import Synchronization

/// Draining, live migration and failover, timed: a router and tone workers in this process, callers
/// listening to every call's audio. A worker's "crash" cuts its NATS connection: it falls silent to the
/// cluster (no heartbeats, no pings answered) as a killed process does.
struct DrainBench {
    var natsURL: String
    var redisURL: String
    var migrations = 100

    func run(into report: inout Report) async throws {
        try await BenchFleet.with("bench.drain", natsURL: natsURL, redisURL: redisURL, report: &report) { fleet, caller, natsRTT, report in
            try await drainUnderLoad(fleet, caller: caller, into: &report)
            try await migrationGaps(fleet, caller: caller, natsRTT: natsRTT, into: &report)
            try await GatewayMoveBench().run(fleet, into: &report)
            for calls in [10, 100] { try await failover(calls, fleet, caller: caller, into: &report) }
        }
    }

    /// Routes flow steadily; one worker is drained. Every placement on it is timed against the command.
    private func drainUnderLoad(_ fleet: BenchFleet, caller: NATSConnection, into report: inout Report) async throws {
        let a = try await fleet.addWorker("drain-a", capacity: 10_000, handler: QuickHandler())
        _ = try await fleet.addWorker("drain-b", capacity: 10_000, handler: QuickHandler())
        try await fleet.waitForWorkers(["drain-a", "drain-b"])
        let clock = ContinuousClock()
        final class Log: Sendable {
            let placements = Mutex<[(at: ContinuousClock.Instant, worker: String)]>([])
            let stop = Mutex(false)
        }
        let log = Log()
        let payload = RouteRequest(tenant: "bench").encoded()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        while !log.stop.withLock({ $0 }) {
                            let asked = clock.now
                            guard let message = try? await caller.request(fleet.subjects.route, payload: payload),
                                  let call = try? RouteReply.decode(message.payload).call else { continue }
                            log.placements.withLock { $0.append((asked, call.workerID)) }
                        }
                    }
                }
            }
        }
        try await Task.sleep(for: .seconds(1))
        let asked = clock.now
        _ = try await fleet.router.drain("drain-a", deadline: .seconds(3600), atDeadline: .migrate, actor: "bench")
        let returned = clock.now
        try await Task.sleep(for: .seconds(1))
        log.stop.withLock { $0 = true }
        await load.value
        let onA = log.placements.withLock { $0.filter { $0.worker == "drain-a" } }
        let after = onA.filter { $0.at > returned }.count
        // When the last route to land there was asked, from the command (negative: before it).
        let last = onA.map(\.at).max().map { $0 - asked } ?? .zero
        let total = log.placements.withLock { $0.count }
        report.add(Row(name: "drain: command to return", summary: LatencySummary([returned - asked])))
        report.add(Row(name: "drain: command to last route placed there",
                       summary: LatencySummary([max(.zero, last)]),
                       note: String(format: "the last was asked %.1f ms %@ the command; %d asked after it returned landed there, of %d routes (8 callers)",
                                    abs(last.microseconds) / 1000, last < .zero ? "before" : "after", after, total)))
        _ = a
        await fleet.removeAll()
    }

    /// Tone calls moved one by one between two workers; the caller's ear measures each pause.
    private func migrationGaps(_ fleet: BenchFleet, caller: NATSConnection, natsRTT: LatencySummary, into report: inout Report) async throws {
        _ = try await fleet.addWorker("mig-a", capacity: 1000, handler: ToneHandler())
        try await fleet.waitForWorkers(["mig-a"])
        var calls: [Placement] = []
        for _ in 0..<min(migrations, 100) {
            let reply = try RouteReply.decode(try await caller.request(fleet.subjects.route, payload: RouteRequest(tenant: "bench").encoded()).payload)
            guard let call = reply.call else { throw SwitchboardError(.noCapacity, reply.error?.message ?? "not placed") }
            calls.append(call)
        }
        _ = try await fleet.addWorker("mig-b", capacity: 1000, handler: ToneHandler())
        try await fleet.waitForWorkers(["mig-a", "mig-b"])
        let ears = try calls.map { try Ear(caller, $0.media.out) }
        try await Task.sleep(for: .seconds(1))
        var pauses: [Duration] = [], gaps: [Duration] = []
        var round = 0
        while pauses.count < migrations {
            for (call, ear) in zip(calls, ears) where pauses.count < migrations {
                let start = ContinuousClock.now
                let moved = try await fleet.router.migrate(call.callID, requestedBy: "bench")
                pauses.append(.microseconds(Int64(moved.pauseMillis * 1000)))
                let end = ContinuousClock.now
                try await Task.sleep(for: .milliseconds(100))
                gaps.append(ear.longestGap(from: start - .milliseconds(60), to: end + .milliseconds(80)))
            }
            round += 1
        }
        let pause = LatencySummary(pauses)!
        let gap = LatencySummary(gaps)!
        report.add(Row(name: "migration: hold to accept (router)", summary: pause, baseline: "raw NATS p50",
                       ratio: pause.p50.microseconds / natsRTT.p50.microseconds))
        report.add(Row(name: "migration: longest gap the caller hears", summary: gap,
                       note: "\(migrations) moves of live tone calls; a steady stream has 20 ms between packets; goal p99 <= 200 ms"))
        await fleet.removeAll()
    }

    /// `calls` tone calls on a worker process that is then killed (SIGKILL): time until every one runs on
    /// another worker.
    private func failover(_ calls: Int, _ fleet: BenchFleet, caller: NATSConnection, into report: inout Report) async throws {
        let name = "failover, \(calls) calls: SIGKILL to resumed"
        guard let binary = BenchFleet.switchboardBinary() else {
            report.add(Row(name: name, note: "skipped: build the switchboard executable too (swift build -c release)"))
            return
        }
        let doomedID = "dead-\(calls)"
        let doomed = Process()
        doomed.executableURL = binary
        doomed.arguments = ["worker", "--id", doomedID, "--nats-url", natsURL, "--redis-url", redisURL, "--prefix", fleet.subjects.prefix,
                            "--key-prefix", fleet.keys.prefix, "--capacity", "\(calls)", "--handler", "tone", "--log-level", "error"]
        doomed.standardOutput = FileHandle.nullDevice
        doomed.standardError = FileHandle.nullDevice
        try doomed.run()
        defer { if doomed.isRunning { kill(doomed.processIdentifier, SIGKILL) } }
        try await fleet.waitForWorkers([doomedID])
        var ids: [String] = []
        for _ in 0..<calls {
            let reply = try RouteReply.decode(try await caller.request(fleet.subjects.route, payload: RouteRequest(tenant: "bench").encoded()).payload)
            guard let call = reply.call else { throw SwitchboardError(.noCapacity, reply.error?.message ?? "not placed") }
            ids.append(call.callID)
        }
        let rescuer = try await fleet.addWorker("rescue-\(calls)", capacity: calls * 2, handler: ToneHandler())
        try await fleet.waitForWorkers([doomedID, rescuer.id])
        // Every call has a checkpoint before the crash.
        while try await fleet.redis.pipeline(ids.map { RedisCommand(["HEXISTS", fleet.keys.call($0), "checkpoint"]) })
            .contains(where: { $0.int != 1 }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let clock = ContinuousClock()
        let killed = clock.now
        kill(doomed.processIdentifier, SIGKILL)
        var noticed: ContinuousClock.Instant?
        while true {
            if noticed == nil && !fleet.router.workers().contains(where: { $0.id == doomedID }) { noticed = clock.now }
            let owners = try await fleet.redis.pipeline(ids.map { RedisCommand(["HMGET", fleet.keys.call($0), "worker_id", "state"]) })
            if owners.allSatisfy({ $0.array?.map(\.string) == [rescuer.id, "active"] }) { break }
            guard clock.now - killed < .seconds(60) else { throw SwitchboardError(.timeout, "calls not resumed within 60 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let resumed = clock.now - killed
        let detection = (noticed ?? clock.now) - killed
        let recovered = fleet.router.metrics.value(MetricNames.failoverCalls, ["result": "recovered"]) ?? 0
        report.add(Row(name: name, summary: LatencySummary([resumed]),
                       note: String(format: "found dead after %.0f ms (heartbeat 1 s: probed when 1.25 s late, its ping answered \"no responders\"), all resumed %.0f ms after that; %.0f recovered so far, 0 lost",
                                    detection.microseconds / 1000, (resumed - detection).microseconds / 1000, recovered)))
        await fleet.removeAll()
    }
}

/// Ends each call the moment it starts.
private struct QuickHandler: CallHandler {
    func run(_ call: CallContext) async throws {}
}

/// A caller listening to one call's audio: the arrival time of each packet.
final class Ear: Sendable {
    private final class Store: Sendable { let arrivals = Mutex<[ContinuousClock.Instant]>([]) }
    private let store = Store()
    private let subscription: NATSSubscription

    init(_ nats: NATSConnection, _ subject: String) throws {
        let store = self.store
        subscription = try nats.subscribe(to: subject) { _ in store.arrivals.withLock { $0.append(.now) } }
    }

    deinit { subscription.unsubscribe() }

    func longestGap(from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> Duration {
        let window = store.arrivals.withLock { $0.filter { $0 >= from && $0 <= to } }
        return zip(window, window.dropFirst()).map { $1 - $0 }.max() ?? (to - from)
    }
}

/// A router and workers in this process, sharing the servers.
final class BenchFleet: @unchecked Sendable {  // used from the benchmark's one task
    struct Member {
        let worker: Worker
        let nats: NATSConnection
        let redis: RedisClient
        let task: Task<Void, any Error>
        var id: String { worker.configuration.id }
    }

    let natsURL: String, redisURL: String
    let subjects: Subjects, keys: RedisKeys
    let logger: Logger
    let router: Router
    let redis: RedisClient
    private let routerTask: Task<Void, any Error>
    private let routerNATS: NATSConnection
    private var members: [Member] = []

    init(natsURL: String, redisURL: String, subjects: Subjects, keys: RedisKeys, logger: Logger) async throws {
        self.natsURL = natsURL
        self.redisURL = redisURL
        self.subjects = subjects
        self.keys = keys
        self.logger = logger
        var config = RouterConfiguration(id: "bench-router", subjects: subjects, keys: keys)
        config.httpPort = 0
        routerNATS = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-router"), logger: logger)
        redis = try RedisClient(url: redisURL, logger: logger)
        let router = Router(configuration: config, nats: routerNATS, redis: redis, logger: logger)
        self.router = router
        routerTask = Task { try await router.run() }
    }

    func addWorker(_ id: String, capacity: Int, handler: any CallHandler) async throws -> Member {
        let config = WorkerConfiguration(id: id, version: "bench", region: "local", zone: "local-a", capacity: capacity,
                                         subjects: subjects, keys: keys)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: id), logger: logger)
        let redis = try RedisClient(url: redisURL, logger: logger)
        let worker = try Worker(configuration: config, nats: nats, redis: redis, handler: handler, logger: logger)
        let member = Member(worker: worker, nats: nats, redis: redis, task: Task { try await worker.run() })
        members.append(member)
        return member
    }

    /// The `switchboard` executable built beside this one.
    static func switchboardBinary() -> URL? {
        let candidate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("switchboard")
        return FileManager.default.isExecutableFile(atPath: candidate.path) ? candidate : nil
    }

    func waitForWorkers(_ ids: Set<String>) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !ids.isSubset(of: Set(router.workers().filter(\.isPlaceable).map(\.id))) {
            guard ContinuousClock.now < deadline else { throw SwitchboardError(.timeout, "workers \(ids) not seen") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// A fleet on prefixes of its own and a caller, after the raw NATS round trip is measured (and reported)
    /// with them: the baseline of the same run. `BENCH_LOG_LEVEL` sets the log level (critical by default).
    static func with(_ label: String, natsURL: String, redisURL: String, report: inout Report,
                     _ body: (BenchFleet, NATSConnection, LatencySummary, inout Report) async throws -> Void) async throws {
        var logger = Logger(label: label)
        logger.logLevel = ProcessInfo.processInfo.environment["BENCH_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let subjects = try Subjects(prefix: "bench\(Identifiers.random(bytes: 3))")
        let keys = try RedisKeys(prefix: subjects.prefix)
        let fleet = try await BenchFleet(natsURL: natsURL, redisURL: redisURL, subjects: subjects, keys: keys, logger: logger)
        defer { fleet.close() }
        let caller = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-caller"), logger: logger)
        defer { caller.close() }
        let echo = try caller.subscribe(to: "\(subjects.prefix).echo") { m in try? caller.reply(to: m, payload: m.payload) }
        defer { echo.unsubscribe() }
        try await caller.flush()
        let natsRTT = LatencySummary(try await timeEach(2000) { _ = try await caller.request("\(subjects.prefix).echo", payload: [1]) })!
        report.add(Row(name: "raw NATS request/reply (same run)", summary: natsRTT))
        try await body(fleet, caller, natsRTT, &report)
    }

    /// Stops every worker (their calls end) and waits for them.
    func removeAll() async {
        for m in members { m.worker.stop() }
        for m in members {
            m.task.cancel()
            _ = try? await m.task.value
            m.nats.close()
            m.redis.close()
        }
        members = []
        try? await Task.sleep(for: .seconds(1))
    }

    func close() {
        routerTask.cancel()
        routerNATS.close()
        redis.close()
    }
}
