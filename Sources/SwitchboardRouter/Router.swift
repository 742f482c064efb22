import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis
import Synchronization

/// A router: keeps its view of the fleet from heartbeats (pinging workers that fall silent), places calls on
/// workers (choose, offer, accept, record), answers route requests on NATS, and serves the operations
/// behind the HTTP API.
///
/// Stateless beyond the fleet view, which every router rebuilds from heartbeats within one interval; any
/// number can run at once (route requests are a NATS queue group).
public final class Router: Service, Sendable {
    public let configuration: RouterConfiguration
    public let nats: NATSConnection
    public let redis: RedisClient
    public let metrics: MetricsRegistry
    let logger: Logger
    /// Everything this router knows and decides from, under one lock (`State`).
    let state: Mutex<State>
    let clock = ContinuousClock()
    /// Unix time for what this router writes (records, events, timelines, the audit): `configuration.wallClock`.
    let wallClock: WallClock
    /// Tenants, their keys and their limits (used when `configuration.tenancy` is on).
    public let tenants: TenantStore
    let limits: TenantLimits
    /// Every write this router makes to a call's record.
    let callStore: CallStore
    /// The deploy policy, its history and the placement counts per version in Redis.
    let deployStore: DeployStore
    /// Workers' drains in Redis.
    let drainStore: DrainStore
    /// Tenants given a metric label of their own (at most `tenantLabelCap`).
    let tenantLabels: TenantLabels
    /// What this router saw of each call, for its timeline.
    public let timeline: TimelineWriter

    /// Work that outlives the message or event that asked for it, run in `run()`'s task group (never in a
    /// loose task), each job in a child task of its own.
    enum Job: Sendable {
        /// A worker back under the same id with a new process: its previous process's calls are taken on.
        case failover(worker: String, except: String)
        /// Graceful shutdown: the queue-group subscriptions drain (the server sends new requests to the
        /// other routers, those already here are answered).
        case drain(NATSSubscription)
        /// A worker refused a call as outdated under a newer deploy policy than this router's: read it now.
        case reloadDeploy
    }
    let job: AsyncStream<Job>.Continuation
    private let jobs: AsyncStream<Job>

    /// What this router knows, under one lock: `known` (the fleet view, the scheduler and the deploy policy, one
    /// pure machine: every heartbeat, tick, offer and its answer, drain and policy goes through its `modify`, so
    /// a choice and its reservation are one step and concurrent routes see each other's offers), admission's own
    /// memory, the keys it checked, and whether it has started or is shutting down. The pure parts decide
    /// (`RouterState`, `Admission`); the shell holds the lock only around them and does its I/O after.
    struct State {
        var known: RouterState
        /// Calls admitted on tenants' local caps while Redis was unreachable, and leases to give back.
        var admission = Admission()
        /// Keys checked a moment ago, and until when they are trusted.
        var keyCache: [String: (policy: TenantPolicy, until: ContinuousClock.Instant)] = [:]
        /// Placements per version (`version|result` → n) not yet added to Redis's counts.
        var versionCounts: [String: Int] = [:]
        /// Refused operator requests written to the audit, at most 5 a second (all are counted).
        var refusalAudit = TokenBucket(perSecond: 5, burst: 10)
        /// Set once `run` has read the deploy policy and the drains and subscribed to route requests: no call is
        /// placed before (HTTP and NATS answer `unavailable`, `/readyz` fails).
        var started = false
        /// Set by a graceful shutdown: `/readyz` fails from then on.
        var shuttingDown = false
    }

    /// Where this router's spans go (route, placement, offer, move, failover); nil: tracing is off.
    public let tracer: Tracer?

    public init(configuration: RouterConfiguration, nats: NATSConnection, redis: RedisClient,
                metrics: MetricsRegistry = MetricsRegistry(), tracer: Tracer? = nil, logger: Logger) {
        self.configuration = configuration
        self.tracer = tracer
        self.nats = nats
        self.redis = redis
        self.metrics = metrics
        wallClock = configuration.wallClock
        var logger = logger
        logger[metadataKey: LogKey.routerID] = "\(configuration.id)"
        self.logger = logger
        state = Mutex(State(known: RouterState(registry: configuration.registry, scheduler: configuration.scheduler,
                                               seed: UInt64.random(in: .min ... .max))))
        tenants = TenantStore(redis: redis, keys: configuration.keys)
        limits = TenantLimits(redis: redis, keys: configuration.keys, leaseTime: configuration.leaseTime, wallClock: wallClock)
        var callStore = CallStore(redis: redis, keys: configuration.keys, wallClock: wallClock)
        callStore.indexRetention = configuration.timelineRetention  // the list finds each call as long as its page shows it
        self.callStore = callStore
        tenantLabels = TenantLabels(cap: configuration.tenantLabelCap)
        timeline = TimelineWriter(store: TimelineStore(redis: redis, keys: configuration.keys, cap: configuration.timelineCap,
                                                       retention: configuration.timelineRetention),
                                  metrics: metrics, logger: logger)
        deployStore = DeployStore(redis: redis, keys: configuration.keys)
        drainStore = DrainStore(redis: redis, keys: configuration.keys)
        (jobs, job) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Runs until cancelled or told to shut down gracefully; then it stops taking route requests, finishes
    /// those in flight, and returns.
    public func run() async throws {
        // Heartbeats are ingested on the delivery thread: a decode and a few µs under the lock, cheaper than
        // a hop to another thread (10,000 workers send 10,000 a second).
        let heartbeats = try nats.subscribe(to: configuration.subjects.heartbeats) { [self] message in ingestHeartbeat(message) }
        let drainNotices = try nats.subscribe(to: configuration.subjects.drains) { [self] message in ingestDrainNotice(message) }
        let deployNotices = try nats.subscribe(to: configuration.subjects.deploy) { [self] message in ingestDeployNotice(message) }
        let resumptionNotices = try nats.subscribe(to: configuration.subjects.resumptions) { [self] message in ingestResumptionNotice(message) }
        try await nats.flush()
        // The policy before the first route: a restarted router places by it from its first call. (Without
        // Redis it places on workers that say they are ready, their own reading of the policy.)
        await loadDeployPolicy()
        await loadDrains()
        let routes = try nats.subscribe(to: configuration.subjects.route, queue: Subjects.routerQueue)
        let migrations = try nats.subscribe(to: configuration.subjects.migrates, queue: Subjects.routerQueue)
        try await nats.flush()
        // Ready once the server has the subscriptions too: a request in the moment between is asked again.
        state.withLock { $0.started = true }
        logger.info("router running", metadata: ["route_subject": "\(configuration.subjects.route)"])
        if configuration.insecureNoAuth {
            logger.critical("operator endpoints are open to anyone (--insecure-no-auth): drains, moves and deploys need no key")
        }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                background.addTask { await self.livenessLoop() }
                background.addTask { await self.timeline.run() }
                if let tracer = self.tracer { background.addTask { await tracer.run() } }
                background.addTask { await self.watchConnection() }
                background.addTask { await self.releaseLoop() }
                background.addTask { await self.reconcileLoop() }
                background.addTask { await self.deployLoop() }
                background.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.configuration.drainRefresh)
                        await self.loadDrains()
                    }
                }
                background.addTask {
                    await withDiscardingTaskGroup { inFlight in
                        for await job in self.jobs {
                            inFlight.addTask {
                                switch job {
                                case .failover(let worker, let incarnation): await self.failover(worker, except: incarnation)
                                case .drain(let subscription): try? await subscription.drain()  // fails only on a closed connection: nothing left to drain
                                case .reloadDeploy: await self.loadDeployPolicy()
                                }
                            }
                        }
                    }
                }
                background.addTask {
                    await withDiscardingTaskGroup { inFlight in
                        for await message in migrations {
                            inFlight.addTask { await self.handleMigrateRequest(message) }
                        }
                    }
                }
                await withDiscardingTaskGroup { inFlight in
                    for await message in routes {
                        inFlight.addTask { await self.handleRouteRequest(message) }
                    }
                }
                background.cancelAll()
            }
        } onGracefulShutdown: {
            // Not ready from now (a load balancer stops sending); the queue-group subscriptions drain: the NATS
            // server sends new requests to the other routers, and those already here are answered.
            self.state.withLock { $0.shuttingDown = true }
            heartbeats.unsubscribe()
            drainNotices.unsubscribe()
            deployNotices.unsubscribe()
            resumptionNotices.unsubscribe()
            self.logger.info("router shutting down: finishing route requests in flight")
            self.job.yield(.drain(migrations))
            self.job.yield(.drain(routes))
        }
        logger.info("router stopped")
    }

    // MARK: - Heartbeats

    func ingestHeartbeat(_ message: NATSMessage) {
        do {
            ingest(try Heartbeat.decode(message.payload), from: Subjects.sender(of: message.subject))
        } catch {
            countBadMessage("heartbeat", error)
        }
    }

    /// Takes a heartbeat from worker `sender` (its subject's, or the one pinged): refused, counted and logged
    /// when it speaks for another worker (a worker may publish only under its own id; one that forged another's
    /// incarnation would have a healthy worker's calls failed over).
    func ingest(_ heartbeat: Heartbeat, from sender: Substring) {
        guard heartbeat.workerID == sender else {
            countBadMessage("heartbeat", SwitchboardError(.forbidden, "a heartbeat for worker \(heartbeat.workerID) sent as \(sender)"))
            logger.warning("heartbeat refused: sent under another worker's id", metadata: [LogKey.workerID: "\(heartbeat.workerID)",
                                                                                            "sent_as": "\(sender)"])
            return
        }
        perform(state.withLock { $0.known.modify(.heartbeat(heartbeat), now: clock.now) })
    }

    /// Carries out, after the lock, what `RouterState` decided and needs no waiting: logs, counts and jobs.
    /// Pings, failovers after a ping and offers are carried out where they were asked for.
    func perform(_ actions: [RouterState.Action]) {
        for action in actions {
            switch action {
            case .workerHeard(let heartbeat, let result):
                switch result {
                case .joined, .restarted:
                    logger.info("worker \(result)", metadata: [LogKey.workerID: "\(heartbeat.workerID)", "version": "\(heartbeat.version)",
                                                            "region": "\(heartbeat.region)", "capacity": "\(heartbeat.capacity)"])
                case .recovered:
                    logger.info("suspect worker heard from again", metadata: [LogKey.workerID: "\(heartbeat.workerID)"])
                case .updated, .stale:
                    break
                }
            case .failOverRestarted(let worker, let incarnation):
                // Back under the same id before it was found dead: its previous process's calls are gone with it.
                job.yield(.failover(worker: worker, except: incarnation))
            case .workerLeft(let worker):
                logger.info("worker left", metadata: [LogKey.workerID: "\(worker)"])
            case .liveness(.unreachable(let ids, let disruption)):
                countLiveness("unreachable", by: ids.count)
                logger.error("workers unreachable, not failed over: \(disruption.reason)", metadata: ["workers": "\(ids.joined(separator: ","))"])
            case .liveness(.selfSuspected(let gap)):
                countLiveness("self_suspected")
                logger.warning("this router was stalled or cut off; every worker counts as just heard, none is judged for \(configuration.registry.detectionTime)",
                               metadata: ["gap_ms": "\(gap.milliseconds)"])
            case .notJudged(let worker, let why):
                logger.notice("worker failed its ping but is not judged: \(why)", metadata: [LogKey.workerID: "\(worker)"])
            case .policyApplied(let policy):
                metrics.set(MetricNames.deployRevision, to: Double(policy.revision), help: "The deploy policy revision this process follows")
            case .liveness(.suspect), .liveness(.ping), .liveness(.probe), .failOver, .offer, .noCandidate, .held:
                assertionFailure("\(action) is carried out where it was asked for")
            }
        }
    }

    func updateWorkerGauges() {
        let (live, ingested, waiting) = state.withLock {
            (Array($0.known.registry.entries.values), $0.known.takeIngested(), $0.known.resumptionsWaiting(now: clock.now))
        }
        for (result, count) in ingested {
            metrics.increment(MetricNames.heartbeats, ["result": result.rawValue], by: Double(count), help: "Heartbeats received, by result")
        }
        var byState: [MetricsRegistry.Labels: Double] = [:]
        for state in WorkerState.allCases { byState[["state": state.rawValue]] = 0 }
        byState[["state": "suspect"]] = 0
        byState[["state": "unreachable"]] = 0
        var byVersion: [MetricsRegistry.Labels: Double] = [:]
        var calls = 0.0, free = 0.0
        for entry in live {
            let state = entry.liveness == .alive ? entry.heartbeat.state.rawValue : entry.liveness.rawValue
            byState[["state": state], default: 0] += 1
            byVersion[["version": entry.heartbeat.version, "state": state], default: 0] += 1
            calls += Double(entry.heartbeat.activeCalls)
            if entry.isPlaceable && entry.heartbeat.state == .ready { free += Double(entry.freeSlots) }
        }
        metrics.replaceGauge(MetricNames.workers, byState, help: "Known workers by state (or suspect, unreachable), as this router sees them")
        metrics.replaceGauge(MetricNames.workersByVersion, byVersion, help: "Known workers by version and state, as this router sees them")
        metrics.set(MetricNames.activeCalls, to: calls, help: "Calls on live workers, by their heartbeats")
        metrics.set(MetricNames.freeSlots, to: free, help: "Free slots on ready workers")
        metrics.set(MetricNames.resumptionsWaiting, to: Double(waiting), help: "Dead workers' calls waiting for a free slot, as this router hears")

        let policy = deployPolicy()?.policy ?? .none
        let needs = WorkerDemand.needs(live.filter { $0.heartbeat.state != .stopping }.map {
            WorkerDemand.Worker(version: $0.heartbeat.version, region: $0.heartbeat.region,
                                calls: $0.heartbeat.activeCalls, capacity: $0.heartbeat.capacity)
        }, policy: policy, target: configuration.autoscaleTarget)
        var desired: [MetricsRegistry.Labels: Double] = [:], inUse = desired, capacity = desired
        for (key, need) in needs {
            let labels = ["version": key.version, "region": key.region]
            desired[labels] = Double(need.desired)
            inUse[labels] = Double(need.inUse)
            capacity[labels] = Double(need.capacity)
        }
        metrics.replaceGauge(MetricNames.workersDesired, desired,
                             help: "Workers that would bring slot use to the autoscale target (outdated versions: those still holding calls)")
        metrics.replaceGauge(MetricNames.slotsInUse, inUse, help: "Calls on live workers, by version and region")
        metrics.replaceGauge(MetricNames.slotsCapacity, capacity, help: "Slots of live workers, by version and region")
    }

    /// Known workers (suspect ones included), sorted by id.
    public func workers() -> [WorkerRegistry.Entry] {
        state.withLock { $0.known.registry.sorted }
    }

    /// Known workers with their load and score as this router's scheduler sees them (for status).
    public func workerViews() -> [WorkerView] {
        state.withLock { state in
            let now = clock.now
            return state.known.registry.sorted.map { WorkerView($0, scheduler: state.known.scheduler, now: now) }
        }
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
    public var shuttingDown: Bool
    /// Still reading the deploy policy and the drains at start.
    public var starting: Bool
    /// `admin_keys`, or `off` (`--insecure-no-auth`: operator endpoints open to anyone).
    public var auth: String

    enum CodingKeys: String, CodingKey {
        case ready, nats, redis, starting, auth
        case shuttingDown = "shutting_down"
    }
}

extension Router {
    public func readiness() async -> Readiness {
        let natsOK = nats.isConnected
        let redisOK = (try? await redis.ping()) != nil
        let (stopping, starting) = state.withLock { ($0.shuttingDown, !$0.started) }
        return Readiness(ready: natsOK && redisOK && !stopping && !starting, nats: natsOK, redis: redisOK, shuttingDown: stopping,
                         starting: starting, auth: configuration.insecureNoAuth ? "off" : "admin_keys")
    }
}
