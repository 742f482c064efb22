import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Synchronization
import Testing

let quiet: Logger = {
    var logger = Logger(label: "test.cluster")
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// Routers, workers and gateways running in this process against real nats-server and redis-server, with a
/// subject and key prefix of their own so clusters of several tests can share the servers. `withTestCluster`
/// starts one and shuts it down.
final class TestCluster: @unchecked Sendable {  // mutated only by the test that owns it, before and after its awaits
    let natsURL: String
    let redisURL: String
    let servers: [TestServer]
    /// This cluster's own Redis, to stop and restart (nil when the tests share one through REDIS_URL).
    let redisServer: TestServer?
    let subjects: Subjects
    let keys: RedisKeys
    let heartbeat: Duration
    let liveness: (suspectAfter: Int, deadAfter: Int)
    let client: NATSConnection
    let redis: RedisClient
    private(set) var routers: [RunningRouter] = []
    /// Every router's operator key here, named `tester` in the audit.
    static let adminKey = "test-admin-key-0123456789"
    private(set) var workers: [RunningWorker] = []
    private(set) var gateways: [RunningGateway] = []

    struct RunningRouter {
        let router: Router
        let group: ServiceGroup
        let task: Task<Void, any Error>
        let url: String
    }

    struct RunningWorker {
        let worker: Worker
        let group: ServiceGroup
        let task: Task<Void, any Error>
        var id: String { worker.configuration.id }
    }

    /// See `withTestCluster`, the one way to start a cluster (and so have it shut down).
    fileprivate init(heartbeat: Duration, suspectAfter: Int, deadAfter: Int, ownRedis: Bool, redisURL givenRedisURL: String?) async throws {
        let (natsURL, natsServer) = try await SharedServer.nats()
        let (redisURL, redisServer) = if let givenRedisURL { (givenRedisURL, nil as TestServer?) }
            else if ownRedis { try await { let s = try await TestServer(.redis); return (s.url, s) }() }
            else { try await SharedServer.redis() }
        self.natsURL = natsURL
        self.redisURL = redisURL
        servers = [natsServer, redisServer].compactMap { $0 }
        self.redisServer = redisServer
        let prefix = uniquePrefix("c")
        subjects = try Subjects(prefix: prefix)
        keys = try RedisKeys(prefix: prefix)
        self.heartbeat = heartbeat
        liveness = (suspectAfter, deadAfter)
        client = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "test-client"), logger: quiet)
        redis = try RedisClient(url: redisURL, logger: quiet)
    }

    fileprivate func shutdown() async {
        // Gateways first, the last started first: each uses this cluster's Redis client.
        for g in gateways.reversed() { await g.stop() }
        // Stop at once: a graceful shutdown would drain, and wait for calls the test left running.
        for w in workers { w.worker.stop() }
        for w in workers { _ = try? await w.task.value }
        for r in routers { await r.group.triggerGracefulShutdown() }
        for r in routers { _ = try? await r.task.value }
        client.close()
        redis.close()
        withExtendedLifetime(servers) {}
    }

    @discardableResult
    func addRouter(tracer: Tracer? = nil, _ configure: (inout RouterConfiguration) -> Void = { _ in }) async throws -> RunningRouter {
        var config = RouterConfiguration(id: "router-\(routers.count + 1)", subjects: subjects, keys: keys)
        config.httpPort = 0
        config.registry = WorkerRegistry.Configuration(heartbeatInterval: heartbeat, suspectAfter: liveness.suspectAfter,
                                                       deadAfter: liveness.deadAfter)
        config.adminKeys = [try AdminKey(name: "tester", key: Self.adminKey)]
        configure(&config)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: config.id), logger: quiet)
        let redis = try RedisClient(url: redisURL, logger: quiet)
        let router = Router(configuration: config, nats: nats, redis: redis, tracer: tracer, logger: quiet)
        let port = PortBox()
        let http = RouterHTTP.application(for: router) { port.set($0) }
        let group = ServiceGroup(services: [router, http], logger: quiet)
        let task = Task {
            defer { nats.close(); redis.close() }
            try await group.run()
        }
        let url = "http://127.0.0.1:\(try await port.wait())"
        // As an orchestrator waits for readiness: the router has read the deploy policy and the drains.
        try await eventually(timeout: .seconds(30), "router \(config.id) started") { !(await router.readiness().starting) }
        let running = RunningRouter(router: router, group: group, task: task, url: url)
        routers.append(running)
        return running
    }

    @discardableResult
    func addWorker(id: String? = nil, capacity: Int = 4, region: String = "local", handler: any CallHandler = EchoHandler(),
                   tracer: Tracer? = nil, _ configure: (inout WorkerConfiguration) -> Void = { _ in }) async throws -> RunningWorker {
        var config = WorkerConfiguration(id: id ?? "worker-\(workers.count + 1)", version: "1.0.0", region: region,
                                         zone: "\(region)-a", capacity: capacity, subjects: subjects, keys: keys)
        config.heartbeatInterval = heartbeat
        configure(&config)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: config.id), logger: quiet)
        let redis = try RedisClient(url: redisURL, logger: quiet)
        let worker = try Worker(configuration: config, nats: nats, redis: redis, handler: handler, tracer: tracer, logger: quiet)
        // A worker whose drain is done returns: that ends its group cleanly, as it ends the process.
        let group = ServiceGroup(configuration: .init(services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
                                                      logger: quiet))
        let task = Task {
            defer { nats.close(); redis.close() }
            try await group.run()
        }
        let running = RunningWorker(worker: worker, group: group, task: task)
        workers.append(running)
        return running
    }

    /// Starts a gateway in this process on the cluster's bus; the cluster stops it, before its routers and workers.
    func addGateway(tracer: Tracer? = nil, _ configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> RunningGateway {
        let gateway = try await RunningGateway(self, tracer: tracer, configure)
        gateways.append(gateway)
        return gateway
    }

    /// Starts `switchboard worker` as a process of its own in this cluster.
    func spawnWorker(id: String, _ arguments: [String] = []) throws -> CLIProcess {
        try CLIProcess(["worker", "--id", id, "--nats-url", natsURL, "--redis-url", redisURL, "--prefix", subjects.prefix,
                        "--key-prefix", keys.prefix, "--heartbeat-interval", "\(heartbeat.seconds)",
                        "--log-level", "warning"] + arguments)
    }

    /// Starts `switchboard router` as a process of its own in this cluster (tenancy off, HTTP on a free port).
    func spawnRouter(id: String, _ arguments: [String] = []) throws -> CLIProcess {
        try CLIProcess(["router", "--id", id, "--nats-url", natsURL, "--redis-url", redisURL, "--prefix", subjects.prefix,
                        "--key-prefix", keys.prefix, "--http-port", "0", "--heartbeat-interval", "\(heartbeat.seconds)",
                        "--admin-key", Self.adminKey,
                        "--suspect-after", "\(liveness.suspectAfter)", "--dead-after", "\(liveness.deadAfter)",
                        "--log-level", "warning"] + arguments)
    }

    /// Waits until every router sees `count` ready (and alive) workers.
    func waitForWorkers(_ count: Int, timeout: Duration = .seconds(5)) async throws {
        try await eventually(timeout: timeout, "routers see \(count) ready workers") {
            routers.allSatisfy { $0.router.workers().filter(\.isPlaceable).count == count }
        }
    }

    // MARK: - Client side

    func routeByNATS(_ request: RouteRequest) async throws -> RouteReply {
        let message = try await client.request(subjects.route, payload: request.encoded(), timeout: .seconds(5))
        return try RouteReply.decode(message.payload)
    }

    /// An HTTP request to router `router`; operator paths carry the admin key unless `headers` name their own
    /// `Authorization` or `asOperator` is false.
    func http(_ method: String, _ path: String, body: [UInt8]? = nil, router: Int = 0,
              headers: [String: String] = [:], asOperator: Bool = true) async throws -> (status: Int, body: Data) {
        var headers = headers
        let operatorPath = ["/v1/workers", "/v1/audit", "/v1/deployment"].contains { path.hasPrefix($0) } || path.hasSuffix("/migrate")
        if asOperator && operatorPath && headers["Authorization"] == nil { headers["Authorization"] = "Bearer \(Self.adminKey)" }
        let response = try await PlainHTTP.request(method, routers[router].url + path, headers: headers, body: body.map { Data($0) })
        return (response.status, response.body)
    }

    /// `POST /v1/calls/{id}/migrate`, asked again (three more times at most) on a 503 that left the call where it
    /// was, as an operator would: a starved test process can let the one offer to the other worker time out
    /// (500 ms). A 503 after which the call is on another worker is taken as the move (asking again would move it
    /// back). For tests whose subject is not the move itself.
    func migrate(_ callID: String) async throws -> (status: Int, body: Data) {
        let from = try await record(callID)["worker_id"]
        var moved = try await http("POST", "/v1/calls/\(callID)/migrate")
        for _ in 0..<3 where moved.status == 503 {
            try await Task.sleep(for: .milliseconds(200))
            if let now = try await record(callID)["worker_id"], now != from { return (200, Data(#"{"moved_late":true}"#.utf8)) }
            moved = try await http("POST", "/v1/calls/\(callID)/migrate")
        }
        return moved
    }

    func record(_ callID: String) async throws -> [String: String] {
        try await redis.hashGetAll(keys.call(callID))
    }

    func workerCalls(_ workerID: String) async throws -> Set<String> {
        Set((try await redis.send(["SMEMBERS", keys.workerCalls(workerID)]).array ?? []).compactMap(\.string))
    }
}

/// Starts a cluster, runs `body` on it, and shuts the cluster down when `body` returns or throws (then rethrows),
/// so a test that fails half way leaves no router, worker or gateway running.
///
/// `heartbeat`: workers report every interval. Routers find a worker suspect after `suspectAfter` silent
/// intervals and dead after `deadAfter`. The defaults are lenient (4 s, 8 s): a run of every test at once on
/// 2 cores can hold this process's tasks back for seconds, and a suspect worker takes no calls. Tests of
/// failure detection ask for the production values (2, 3).
/// `ownRedis`: a redis-server of this cluster's own even when `REDIS_URL` names a shared one (to freeze it).
/// `redisURL`: a Redis of the test's own (a `redis-sentinel://` set, say) rather than the shared one.
func withTestCluster(heartbeat: Duration = .milliseconds(500), suspectAfter: Int = 8, deadAfter: Int = 16, ownRedis: Bool = false,
                     redisURL: String? = nil, _ body: (TestCluster) async throws -> Void) async throws {
    let cluster = try await TestCluster(heartbeat: heartbeat, suspectAfter: suspectAfter, deadAfter: deadAfter, ownRedis: ownRedis,
                                        redisURL: redisURL)
    do {
        try await body(cluster)
    } catch {
        await cluster.shutdown()
        throw error
    }
    await cluster.shutdown()
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The HTTP port the server bound, handed over from its start-up callback.
final class PortBox: Sendable {
    private let port = Mutex<Int?>(nil)
    func set(_ value: Int) { port.withLock { $0 = value } }
    func wait() async throws -> Int {
        for _ in 0..<500 {
            if let p = port.withLock({ $0 }) { return p }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestServerError("HTTP server did not start")
    }
}

/// Polls `condition` until it holds or `timeout` passes (then records an issue, with `detail` when given: what
/// the last poll saw, and throws).
func eventually(timeout: Duration = .seconds(5), _ what: String, detail: @autoclosure () -> String = "",
                _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    let seen = detail()
    Issue.record("timed out waiting: \(what)\(seen.isEmpty ? "" : "; \(seen)")")
    throw TestServerError("timed out waiting: \(what)")
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
    try JSONDecoder().decode(type, from: data)
}

func errorCode(_ data: Data) -> String? {
    (try? JSONDecoder().decode(ErrorEnvelope.self, from: data))?.error.code
}
