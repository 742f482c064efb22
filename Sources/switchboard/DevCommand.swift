import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardLocal
import SwitchboardNATS
import SwitchboardOpus
import SwitchboardRedis
import UnixSignals

/// A whole local cluster in one command: nats-server and redis-server on free loopback ports, routers and
/// workers as processes of their own, and demo callers that stream real Opus audio through the `echo`
/// handler, with a live table. Ctrl-C or SIGTERM stops everything it started.
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run a whole local cluster (NATS, Redis, routers, workers) with demo calls and a live table.")

    @Option(help: "Routers to start.") var routers = 2
    @Option(help: "Workers to start.") var workers = 3
    @Option(help: "Calls each worker holds at most.") var capacity = 4
    @Option(help: "Demo callers, each placing one call after another.") var callers = 4
    @Option(name: .customLong("call-seconds"), help: "Length of each demo call.") var callSeconds: Double = 3
    @Option(help: "Stop after this many seconds (default: run until Ctrl-C).") var duration: Double?
    @Option(name: .customLong("log-level"), help: "Log level of the processes started.") var logLevel = "notice"
    @Option(name: .customLong("agent-command"), help: "Host each call on its own agent process started with this command (see switchboard worker --help), rather than the echo handler.")
    var agentCommand: String?
    @Option(name: .customLong("agent-url"), help: "Host each call on this agent server (ws://…), rather than the echo handler.")
    var agentURL: String?
    @Option(name: .customLong("agent-pool"), help: "Agent processes each worker keeps ready (with --agent-command).") var agentPool = 2
    @Flag(name: .customLong("keep-files"), help: "Keep the cluster's folder (logs, NATS keys and credentials, recordings) when it stops; by default it is removed.")
    var keepFiles = false

    func validate() throws {
        if let duration {
            do { _ = try seconds(duration, "duration") } catch { throw ValidationError(error.message) }
        }
        if agentCommand != nil && agentURL != nil { throw ValidationError("give --agent-command or --agent-url, not both") }
    }

    func run() async throws {
        var agent = ["--handler", "echo"]
        if let agentCommand { agent = ["--agent-command", agentCommand, "--agent-pool", "\(agentPool)"] }
        if let agentURL { agent = ["--agent-url", agentURL] }
        let cluster = try await DevCluster.start(routers: routers, workers: workers, capacity: capacity, agent: agent, logLevel: logLevel)
        let stats = DemoStats()
        let demo = Task { await DemoCallers(cluster: cluster, stats: stats, callSeconds: callSeconds).run(callers: callers) }
        let table = Task { await LiveTable(cluster: cluster, stats: stats).run() }

        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in signals { return } }
            if let duration, let stopAfter = try? seconds(duration, "duration") {
                group.addTask { try? await Task.sleep(for: stopAfter) }
            }
            await group.next()
            group.cancelAll()
        }
        say("\nstopping: ending demo calls, then workers, routers, Redis and NATS")
        demo.cancel()
        table.cancel()
        _ = await demo.value
        _ = await table.value
        await cluster.stop(removingFiles: !keepFiles)
        say(stats.summary())
        say(keepFiles ? "stopped; nothing left running; its files are kept in \(cluster.directory.path)"
                      : "stopped; nothing left running, and its folder (logs, credentials, recordings) removed (--keep-files keeps it)")
    }
}

/// The processes of a local cluster.
final class DevCluster: Sendable {
    let nats: LocalServer
    let redis: LocalServer
    let directory: URL
    let children: [Child]
    let routerURLs: [String]
    let connection: NATSConnection
    /// The routers run with tenancy on: operator calls use the admin key, demo callers the demo tenant's key.
    let adminKey: String
    let demoKey: String

    struct Child: Sendable {
        let name: String
        let process: Process
        let log: URL
        var pid: Int32 { process.processIdentifier }
    }

    private init(nats: LocalServer, redis: LocalServer, directory: URL, children: [Child], routerURLs: [String], connection: NATSConnection,
                 adminKey: String, demoKey: String) {
        self.adminKey = adminKey
        self.demoKey = demoKey
        self.nats = nats
        self.redis = redis
        self.directory = directory
        self.children = children
        self.routerURLs = routerURLs
        self.connection = connection
    }

    /// `agent`: the worker flags that say what hosts each call (`--handler echo`, `--agent-command …`).
    static func start(routers: Int, workers: Int, capacity: Int, agent: [String] = ["--handler", "echo"], logLevel: String) async throws -> DevCluster {
        guard LocalServer.findExecutable("nats-server") != nil, LocalServer.findExecutable("redis-server") != nil else {
            Settings.fail("switchboard dev needs nats-server and redis-server on PATH; run scripts/install-deps (Debian: apt-get install nats-server redis-server)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sbdev-cluster-\(Identifiers.random(bytes: 3))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // The bus is closed as in production: every process has its role's credential (docs/security.md).
        let bus = directory.appendingPathComponent("nats").path
        let members = (1...max(1, workers)).map { BusCredentials.Member(.worker, "worker-\($0)") }
            + [BusCredentials.Member(.gateway, "dev-callers"), BusCredentials.Member(.gateway, "gateway-1")]
        _ = try NATSConfigCommand.write(to: bus, subjects: Subjects.default, name: "switchboard-dev", members: members, force: false)
        let serverConf = directory.appendingPathComponent("nats-server.conf")
        try "include ./nats/nats-auth.conf\n".write(to: serverConf, atomically: true, encoding: .utf8)
        let nats = try await LocalServer(.nats, arguments: ["-c", serverConf.path], label: "sbdev")
        let redis = try await LocalServer(.redis, label: "sbdev")
        say("nats-server  \(nats.url)\nredis-server \(redis.url)\nlogs         \(directory.path)\nnats bus     closed; a credential per role (one per worker) in \(bus)")

        // A demo tenant, as an operator would make one, and routers that ask for keys.
        let tenants = TenantStore(redis: try RedisClient(url: redis.url, logger: Runtime.logger("switchboard.dev", level: "warning")),
                                  keys: try RedisKeys(prefix: "sb"))
        defer { tenants.redis.close() }
        var demo = TenantPolicy(id: "demo", callsPerSecond: 50, burst: 20, maxLiveCalls: 1_000)
        demo.record = true  // its calls through the gateway are recorded (the gateway and routers share the directory)
        let demoKey = try await tenants.create(demo)
        let recordings = directory.appendingPathComponent("recordings").path
        let adminKey = "admin-" + Identifiers.random(bytes: 12)
        say("tenant       demo (50 calls/s, burst 20, 1,000 live calls, calls recorded), api key \(demoKey)\nadmin key    \(adminKey)")

        let common = ["--nats-url", nats.url, "--redis-url", redis.url, "--log-level", logLevel]
        var children: [Child] = []
        for i in 1...max(1, routers) {
            // Port 0: each router binds a port of its own and says which. A port picked here and handed over
            // could be taken by another process before the router binds it.
            children.append(try spawn("router-\(i)", ["router", "--id", "router-\(i)", "--http-port", "0", "--tenancy", "on",
                                                      "--admin-key", adminKey, "--nats-creds", bus + "/router.creds",
                                                      "--media-signing-key", bus + "/media-signing.json", "--recordings-dir", recordings] + common, in: directory))
        }
        let zones = ["a", "b", "c"]
        for i in 1...max(1, workers) {
            children.append(try spawn("worker-\(i)", ["worker", "--id", "worker-\(i)", "--capacity", "\(capacity)"] + agent + [
                                                      "--region", "local", "--zone", "local-\(zones[(i - 1) % 3])", "--cpu-source", "process",
                                                      // The whole local cluster stops at once: nowhere to move calls to.
                                                      "--drain-deadline", "0", "--drain-at-deadline", "end",
                                                      "--nats-creds", bus + "/worker-worker-\(i).creds"] + common, in: directory))
        }
        // A gateway for browsers (and Twilio, with a dev auth token): its secrets in files only it reads.
        let secrets = directory.appendingPathComponent("gateway").path
        try FileManager.default.createDirectory(atPath: secrets, withIntermediateDirectories: true)
        try SecretFile.write("demo=\(demoKey)\n", to: secrets + "/tenant-keys", replace: false)
        try SecretFile.write(Identifiers.random(bytes: 32), to: secrets + "/token-secret", replace: false)
        try SecretFile.write("dev-twilio-auth-token", to: secrets + "/twilio-auth-token", replace: false)
        children.append(try spawn("gateway-1", ["gateway", "--id", "gateway-1", "--http-port", "0", "--nats-creds", bus + "/gateway-gateway-1.creds",
                                                "--tenant-keys-file", secrets + "/tenant-keys", "--token-secret-file", secrets + "/token-secret",
                                                "--twilio-auth-token-file", secrets + "/twilio-auth-token", "--number", "+15550100000=demo",
                                                "--call-token-ttl", "43200", "--recordings-dir", recordings] + common, in: directory))
        for child in children { say("started \(child.name) (pid \(child.pid))") }
        var routerURLs: [String] = []
        var gatewayURL = ""
        for child in children where child.name.hasPrefix("router-") || child.name.hasPrefix("gateway-") {
            guard let url = await Self.listeningURL(of: child) else {
                for c in children where c.process.isRunning { kill(c.pid, SIGKILL) }
                await redis.stop()
                await nats.stop()
                Settings.fail("\(child.name) did not start within 30 s; its log:\n" + ((try? String(contentsOf: child.log, encoding: .utf8)) ?? ""))
            }
            if child.name.hasPrefix("gateway-") { gatewayURL = url } else { routerURLs.append(url) }
        }
        // The demo callers ask for routes as a gateway does; each call's audio goes over its own credential.
        var gateway = NATSConfiguration(servers: [nats.url], name: "dev-callers")
        gateway.credentialsFile = bus + "/gateway-dev-callers.creds"
        gateway.inboxPrefix = BusRole.gateway.inboxPrefix(member: "dev-callers")
        let connection = try await NATSConnection.connect(gateway, logger: Runtime.logger("switchboard.dev", level: "warning"))
        let cluster = DevCluster(nats: nats, redis: redis, directory: directory, children: children, routerURLs: routerURLs,
                                 connection: connection, adminKey: adminKey, demoKey: demoKey)
        try await cluster.waitUntilReady(workers: max(1, workers))
        // A call token for the page, as a tenant's backend would get one (the key itself stays here).
        if let data = try? await APIClient(base: gatewayURL, key: demoKey).post("/v1/call-tokens", json: [String: String]()),
           let token = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["token"] as? String {
            say("browser page \(gatewayURL)/#token=\(token)\n             (open it on this machine, click Call and speak: the echo worker plays you back; the token lasts 12 h)")
            say("calls        \(routerURLs.first ?? "")/ui/calls#key=\(adminKey)\n             (every call, searchable; each opens its page: its timeline, and a gateway call's recording, kept in \(recordings))")
        } else {
            say("gateway      \(gatewayURL) (no call token could be made: see its log)")
        }
        return cluster
    }

    private static func spawn(_ name: String, _ arguments: [String], in directory: URL) throws -> Child {
        let log = directory.appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHBOARD_DIE_WITH_PARENT"] = "1"
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Child(name: name, process: process, log: log)
    }

    /// The URL a router (or gateway) says it listens on (its log's `listening on` or `serving … on` line); nil if it
    /// exits or says nothing within 30 s.
    private static func listeningURL(of router: Child) async -> String? {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline && router.process.isRunning {
            let log = (try? String(contentsOf: router.log, encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").first(where: { $0.contains(" listening on ") || $0.contains(" on http://") }),
               let at = line.range(of: " listening on ") ?? line.range(of: " on ", options: .backwards) {
                return String(line[at.upperBound...]).trimmingCharacters(in: .whitespaces)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Waits until every router is ready and sees every worker.
    private func waitUntilReady(workers: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        for url in routerURLs {
            while true {
                if let data = try? await APIClient(base: url, key: adminKey).get("/v1/workers"),
                   let view = try? JSONDecoder().decode(WorkersView.self, from: data), view.totals["ready"] ?? 0 >= workers {
                    break
                }
                if let dead = children.first(where: { !$0.process.isRunning }) {
                    await stop()
                    Settings.fail("\(dead.name) exited at start; its log:\n" + ((try? String(contentsOf: dead.log, encoding: .utf8)) ?? ""))
                }
                guard ContinuousClock.now < deadline else {
                    await stop()
                    Settings.fail("the cluster was not ready within 30 s; logs in \(directory.path)")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        say("cluster ready: \(routerURLs.count) routers (\(routerURLs.joined(separator: ", "))), \(workers) workers")
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "switchboard"
        say("""
            inspect      from another terminal, with the admin key:
                           export SWITCHBOARD_ROUTER_URL=\(routerURLs[0]) SWITCHBOARD_API_KEY=\(adminKey)
                           \(binary) status        (then: node list, call list, node drain worker-1, --help)
            """)
    }

    /// SIGTERM to every child, SIGKILL to any still running after 10 s; then Redis and NATS. `removingFiles`:
    /// then the cluster's folder and the servers' go too (kept when the cluster failed to start: its logs say why).
    func stop(removingFiles: Bool = false) async {
        connection.close()
        for child in children where child.process.isRunning { kill(child.pid, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(10)
        while children.contains(where: { $0.process.isRunning }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for child in children where child.process.isRunning {
            say("\(child.name) did not stop within 10 s: killing it")
            kill(child.pid, SIGKILL)
        }
        await redis.stop(removingFiles: removingFiles)
        await nats.stop(removingFiles: removingFiles)
        if removingFiles { try? FileManager.default.removeItem(at: directory) }  // our own temporary folder
    }
}
