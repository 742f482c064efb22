import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis
import Synchronization

/// A router: keeps the live worker table from heartbeats, places calls on workers (offer, accept, record),
/// answers route requests on NATS, and serves the operations behind the HTTP API.
///
/// Stateless beyond the worker table, which every router rebuilds from heartbeats within one interval; any
/// number can run at once (route requests are a NATS queue group).
public final class Router: Service, Sendable {
    public let configuration: RouterConfiguration
    public let nats: NATSConnection
    public let redis: RedisClient
    public let metrics: MetricsRegistry
    let logger: Logger
    let table: Mutex<WorkerTable>
    let clock = ContinuousClock()

    public init(configuration: RouterConfiguration, nats: NATSConnection, redis: RedisClient,
                metrics: MetricsRegistry = MetricsRegistry(), logger: Logger) {
        self.configuration = configuration
        self.nats = nats
        self.redis = redis
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: LogKey.routerID] = "\(configuration.id)"
        self.logger = logger
        table = Mutex(WorkerTable(heartbeatInterval: configuration.heartbeatInterval, goneAfter: configuration.goneAfter))
    }

    /// Runs until cancelled or told to shut down gracefully; then it stops taking route requests, finishes
    /// those in flight, and returns.
    public func run() async throws {
        let heartbeats = try nats.subscribe(to: configuration.subjects.heartbeat)
        let routes = try nats.subscribe(to: configuration.subjects.route, queue: Subjects.routerQueue)
        try await nats.flush()
        logger.info("router running", metadata: ["route_subject": "\(configuration.subjects.route)"])
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                background.addTask { for await message in heartbeats { self.ingestHeartbeat(message) } }
                background.addTask { await self.expireLoop() }
                await withDiscardingTaskGroup { inFlight in
                    for await message in routes {
                        inFlight.addTask { await self.handleRouteRequest(message) }
                    }
                }
                background.cancelAll()
            }
        } onGracefulShutdown: {
            self.logger.info("router shutting down: finishing route requests in flight")
            Task { try? await routes.drain() }
        }
        logger.info("router stopped")
    }

    // MARK: - Heartbeats

    func ingestHeartbeat(_ message: NATSMessage) {
        do {
            let heartbeat = try Heartbeat.decode(message.payload)
            let result = table.withLock { $0.ingest(heartbeat, now: clock.now) }
            metrics.increment(MetricNames.heartbeats, ["result": "\(result)"], help: "Heartbeats received, by result")
            if result == .joined {
                logger.info("worker joined", metadata: [LogKey.workerID: "\(heartbeat.workerID)", "version": "\(heartbeat.version)",
                                                        "region": "\(heartbeat.region)", "capacity": "\(heartbeat.capacity)"])
            }
            if heartbeat.state == .stopping && heartbeat.activeCalls == 0 {
                table.withLock { $0.remove(heartbeat.workerID) }
                logger.info("worker left", metadata: [LogKey.workerID: "\(heartbeat.workerID)"])
            }
        } catch {
            countBadMessage("heartbeat", error)
        }
    }

    private func expireLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval / 2)
            let gone = table.withLock { $0.expire(now: clock.now) }
            for id in gone {
                logger.warning("worker gone: no heartbeat for \(configuration.goneAfter) intervals", metadata: [LogKey.workerID: "\(id)"])
            }
            updateWorkerGauges()
        }
    }

    func updateWorkerGauges() {
        let live = workers()
        var byState: [MetricsRegistry.Labels: Double] = [:]
        for state in WorkerState.allCases { byState[["state": state.rawValue]] = 0 }
        var calls = 0.0, free = 0.0
        for entry in live {
            byState[["state": entry.heartbeat.state.rawValue], default: 0] += 1
            calls += Double(entry.heartbeat.activeCalls)
            if entry.heartbeat.state == .ready { free += Double(entry.freeSlots) }
        }
        metrics.replaceGauge(MetricNames.workers, byState, help: "Live workers by state, as this router sees them")
        metrics.set(MetricNames.activeCalls, to: calls, help: "Calls on live workers, by their heartbeats")
        metrics.set(MetricNames.freeSlots, to: free, help: "Free slots on ready workers")
    }

    /// Live workers, sorted by id.
    public func workers() -> [WorkerTable.Entry] {
        table.withLock { $0.live(now: clock.now) }
    }

    func countBadMessage(_ kind: String, _ error: any Error) {
        let code = (error as? SwitchboardError)?.code.rawValue ?? "internal_error"
        metrics.increment(MetricNames.badMessages, ["kind": kind, "code": code], help: "Messages refused as malformed, by kind")
        logger.warning("bad \(kind) refused", metadata: [LogKey.errorCode: "\(code)", LogKey.error: "\(error)"])
    }
}

/// `/readyz`: ready once connected to NATS and Redis.
public struct Readiness: Codable, Sendable {
    public var ready: Bool
    public var nats: Bool
    public var redis: Bool
}

extension Router {
    public func readiness() async -> Readiness {
        let natsOK = nats.isConnected
        let redisOK = (try? await redis.ping()) != nil
        return Readiness(ready: natsOK && redisOK, nats: natsOK, redis: redisOK)
    }
}
