import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis
import SwitchboardRouter

/// What 10,000 workers' heartbeats cost a real router: a publisher sends 10,000 distinct heartbeats a second
/// over NATS for a few seconds, once with no router listening and once with one; the difference in this
/// process's CPU time is the router's (NATS delivery, decode, validation, ingest, metrics).
struct IngestBench {
    var natsURL: String
    var redisURL: String
    var workers = 10_000
    var seconds = 5

    func run(into report: inout Report) async throws {
        var logger = Logger(label: "bench.ingest")
        logger.logLevel = .critical
        let subjects = try Subjects(prefix: "bench\(Identifiers.random(bytes: 3))")
        let publisher = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-fleet"), logger: logger)
        defer { publisher.close() }
        var random = SeededRandom(seed: 3)
        let (_, heartbeats) = SchedulerBench.fleet(workers, random: &random)

        let alone = try await publish(heartbeats, on: publisher, to: subjects)

        // The NATS part alone: a subscriber on the delivery thread that does nothing with the message.
        let listener = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-listener"), logger: logger)
        let noop = try listener.subscribe(to: subjects.heartbeats) { _ in }
        try await listener.flush()
        let delivered = try await publish(heartbeats, on: publisher, to: subjects)
        noop.unsubscribe()
        listener.close()
        report.add(Row(name: "NATS: deliver 10000 messages/s to a no-op handler", throughput: delivered.sent / delivered.wall,
                       note: String(format: "%.1f%% of a core (%.1f µs each)", (delivered.cpu - alone.cpu) / delivered.wall * 100,
                                    (delivered.cpu - alone.cpu) / delivered.sent * 1e6)))

        var config = RouterConfiguration(id: "bench-router", subjects: subjects, keys: try RedisKeys(prefix: subjects.prefix))
        config.heartbeatInterval = .seconds(1)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-router"), logger: logger)
        let redis = try RedisClient(url: redisURL, logger: logger)
        let router = Router(configuration: config, nats: nats, redis: redis, logger: logger)
        let group = ServiceGroup(services: [router], logger: logger)
        let running = Task { try await group.run() }
        defer { running.cancel(); nats.close(); redis.close() }
        try await Task.sleep(for: .milliseconds(300))  // subscribed

        let withRouter = try await publish(heartbeats, on: publisher, to: subjects)
        let known = router.workers().count
        let share = (withRouter.cpu - alone.cpu) / withRouter.wall
        report.add(Row(name: "router: ingest \(workers) workers' heartbeats at 1 Hz", throughput: withRouter.sent / withRouter.wall,
                       note: String(format: "%.1f%% of a core (%.1f µs each); %d workers known", share * 100,
                                    (withRouter.cpu - alone.cpu) / withRouter.sent * 1e6, known)))
    }

    /// Sends every heartbeat once a second, in batches of 1% every 10 ms, for `seconds`; returns this process's
    /// CPU seconds, the wall seconds and the heartbeats sent.
    private func publish(_ heartbeats: [Heartbeat], on nats: NATSConnection, to subjects: Subjects) async throws
        -> (cpu: Double, wall: Double, sent: Double)
    {
        var beats = heartbeats
        let batch = max(1, beats.count / 100)
        let clock = ContinuousClock()
        let cpuStart = Self.processCPU(), start = clock.now
        var sent = 0
        for tick in 0..<(seconds * 100) {
            for i in (tick % 100) * batch..<min(beats.count, (tick % 100 + 1) * batch) {
                beats[i].seq += 1
                try nats.publish(subjects.heartbeat(worker: beats[i].workerID), payload: beats[i].encoded())
                sent += 1
            }
            try await Task.sleep(until: start + .milliseconds(10 * (tick + 1)), clock: clock)
        }
        try await nats.flush()
        try await Task.sleep(for: .milliseconds(200))  // the last ones delivered
        let wall = (clock.now - start).seconds
        return (Self.processCPU() - cpuStart, wall, Double(sent))
    }

    static func processCPU() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
