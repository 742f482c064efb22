import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis
import SwitchboardTestSupport
import Synchronization
import Testing

/// A cluster for the chaos suite, every part a process of its own: its own nats-server and redis-server (even
/// when NATS_URL / REDIS_URL name shared ones: the cases stop, freeze and empty them), routers with tenancy on
/// and tone workers with the production liveness ratios, a tenant whose key placed every call, and this
/// process listening to every call's `.out` as its caller would.
///
/// Everything a case asserts goes through `check` / `require`, so that a failed case prints every process's
/// output at the end (CI keeps nothing else of them).
final class ChaosCluster: @unchecked Sendable {  // mutated only by the case that owns it, between its awaits
    static let interval = Duration.milliseconds(500)
    static let suspectAfter = 2
    static let deadAfter = 3
    /// The product's default: a lease leaked by the fault outlives any wait in `expectEveryCallSpeaking`.
    static let leaseTime = Duration.seconds(30)
    /// The routers' default: a route request is answered within it, whatever it waits on.
    static let routeDeadline = Duration.seconds(2)

    let nats: TestServer
    let redisServer: TestServer
    let subjects: Subjects
    let keys: RedisKeys
    let client: NATSConnection
    let redis: RedisClient
    let adminKey = "admin-" + UUID().uuidString.lowercased()
    let tenant = "acme"
    private(set) var key = ""
    /// A second tenant for route requests that only probe the routers: its calls and leases stay out of the
    /// counts of the calls under test.
    let probeTenant = "probe"
    private(set) var probeKey = ""
    private(set) var processes: [(name: String, process: CLIProcess)] = []
    private(set) var routerURLs: [String] = []
    private(set) var calls: [Call] = []
    private let events = EventLog()
    private var eventSubscription: NATSSubscription?
    private var resumptionSubscription: NATSSubscription?
    private(set) var failed = false
    /// Workers host calls with an agent process each (the reference agent speaking the call's tone), not the
    /// built-in tone handler.
    private var agents = false

    struct Call {
        let placement: Placement
        let tap: AudioTap
        let toneHz: Int
        var id: String { placement.callID }
        var placedOn: String { placement.workerID }
    }

    private init() async throws {
        nats = try await TestServer(.nats)
        redisServer = try await TestServer(.redis)
        let prefix = uniquePrefix("chaos")
        subjects = try Subjects(prefix: prefix)
        keys = try RedisKeys(prefix: prefix)
        client = try await NATSConnection.connect(NATSConfiguration(servers: [nats.url], name: "chaos-test"), logger: quiet)
        redis = try RedisClient(url: redisServer.url, logger: quiet)
    }

    /// Runs one case on a fresh cluster: `workers` (id, capacity) with tone calls placed on them, and at least
    /// two of them holding calls. Prints every process's output if anything failed.
    static func run(routers: Int = 1, workers: [(id: String, capacity: Int)] = [("a", 4), ("b", 4)], calls: Int = 4, agents: Bool = false,
                    _ body: (ChaosCluster) async throws -> Void) async throws {
        let cluster = try await ChaosCluster()
        cluster.agents = agents
        if agents { try Agents.requireVenv() }
        do {
            try await cluster.start(routers: routers, workers: workers, calls: calls)
            try await body(cluster)
        } catch {
            cluster.failed = true
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }

    private func start(routers: Int, workers: [(id: String, capacity: Int)], calls count: Int) async throws {
        let store = TenantStore(redis: redis, keys: keys)
        key = try await store.create(TenantPolicy(id: tenant, callsPerSecond: 100, burst: 100, maxLiveCalls: 100))
        probeKey = try await store.create(TenantPolicy(id: probeTenant, callsPerSecond: 100, burst: 100, maxLiveCalls: 100))
        eventSubscription = try client.subscribe(to: subjects.events(worker: Subjects.anyWorker, call: "*")) { [events] message in
            guard let event = try? CallEvent.decode(message.payload) else { return }
            events.all.withLock { $0.append(event) }
        }
        for i in 1...routers {
            let router = spawn("r\(i)", try CLIProcess([
                "router", "--id", "r\(i)", "--http-port", "0", "--tenancy", "on", "--admin-key", adminKey,
                "--suspect-after", "\(Self.suspectAfter)", "--dead-after", "\(Self.deadAfter)",
                "--route-deadline", "\(Self.routeDeadline.seconds)",
            ] + common))
            try await router.waitForOutput("listening on", timeout: .seconds(30))
            let line = router.output.split(separator: "\n").first { $0.contains("listening on ") }!
            routerURLs.append(String(line[line.range(of: "listening on ")!.upperBound...]).trimmingCharacters(in: .whitespaces))
        }
        for worker in workers { try spawnWorker(worker.id, capacity: worker.capacity) }
        try await waitUntilRoutersSee(Set(workers.map(\.id)))
        if agents {
            // A worker joins once one agent is warm; the calls below need every slot's (an offer with none ready is
            // refused). Its /metrics says how many are.
            for worker in workers { try await waitForWarmAgents(worker.id, count: worker.capacity) }
        }

        for i in 0..<count {
            let hz = 300 + 60 * i  // one tone per call: a call carried on by the wrong worker would be heard
            let reply = try await route(key: key, metadata: ["tone_hz": "\(hz)", "agent": "tone"])
            let placement = try require(reply.call, "call \(i) not placed: \(reply.error?.code ?? "?") \(reply.error?.message ?? "")")
            calls.append(Call(placement: placement, tap: try AudioTap(client, placement.media.out), toneHz: hz))
        }
        try await client.flush()
        let holders = Set(calls.map(\.placedOn))
        try require(holders.count >= 2, "the calls landed on \(holders.sorted()) only; each case needs 2 workers with calls")
        // Speaking, and checkpointed (a call with no checkpoint cannot be taken on elsewhere), before any fault.
        let ready = await poll(timeout: .seconds(30)) {
            guard calls.allSatisfy({ $0.tap.count >= 25 }) else { return false }
            for call in calls where try await record(call.id)["checkpoint_seq"] == nil { return false }
            return true
        }
        try require(ready, "calls not speaking and checkpointed before the fault: heard \(calls.map(\.tap.count))")
    }

    private var common: [String] {
        ["--nats-url", nats.url, "--redis-url", redisServer.url, "--prefix", subjects.prefix, "--key-prefix", keys.prefix,
         "--heartbeat-interval", "\(Self.interval.seconds)", "--lease-time", "\(Self.leaseTime.seconds)", "--log-level", "notice"]
    }

    private func spawn(_ name: String, _ process: CLIProcess) -> CLIProcess {
        processes.append((name, process))
        return process
    }

    /// Starts a tone worker; `--cpu-source process`: the workers share one box, and its load is not theirs.
    @discardableResult
    func spawnWorker(_ id: String, capacity: Int) throws -> CLIProcess {
        let host = agents ? ["--agent-command", Agents.command(Agents.reference), "--agent-pool", "\(capacity)", "--http-port", "0"]
            : ["--handler", "tone"]
        return spawn(id, try CLIProcess(["worker", "--id", id, "--capacity", "\(capacity)", "--cpu-source", "process"] + host + common))
    }

    func process(_ name: String) -> CLIProcess { processes.first { $0.name == name }!.process }

    /// Waits until worker `id` has `count` agent processes ready (its `switchboard_agent_pool_ready`).
    private func waitForWarmAgents(_ id: String, count: Int) async throws {
        let worker = process(id)
        try await worker.waitForOutput("serving /healthz, /readyz and /metrics on ", timeout: .seconds(30))
        let line = worker.output.split(separator: "\n").first { $0.contains("/metrics on ") }!
        let url = String(line[line.range(of: "/metrics on ")!.upperBound...]).trimmingCharacters(in: .whitespaces)
        let warm = await poll(timeout: .seconds(60)) {
            let metrics = String(decoding: try await PlainHTTP.request("GET", url + "/metrics").body, as: UTF8.self)
            return metrics.split(separator: "\n").contains { $0 == "switchboard_agent_pool_ready \(count)" }
        }
        try require(warm, "\(id)'s \(count) agent processes not ready within 60 s")
    }

    /// Waits until every router lists `ids` as ready and alive (read loosely: what a router adds to its view
    /// of a worker does not matter here).
    func waitUntilRoutersSee(_ ids: Set<String>) async throws {
        let seen = await poll(timeout: .seconds(30)) {
            for url in routerURLs {
                guard let response = try? await PlainHTTP.request("GET", url + "/v1/workers", headers: ["Authorization": "Bearer \(adminKey)"]),
                      let view = try? JSONSerialization.jsonObject(with: response.body) as? [String: Any],
                      let workers = view["workers"] as? [[String: Any]] else { return false }
                let ready = workers.filter { $0["state"] as? String == "ready" && $0["liveness"] as? String == "alive" }
                guard ids.isSubset(of: Set(ready.compactMap { $0["id"] as? String })) else { return false }
            }
            return true
        }
        try require(seen, "routers do not all see \(ids.sorted()) ready")
    }

    // MARK: - Client side

    func route(key: String, metadata: [String: String] = [:], timeout: Duration = .seconds(10)) async throws -> RouteReply {
        let message = try await client.request(subjects.route, payload: RouteRequest(tenant: "ignored", metadata: metadata).encoded(),
                                               headers: ["Authorization": "Bearer \(key)"], timeout: timeout)
        return try RouteReply.decode(message.payload)
    }

    /// Ends a call the way a router does (its worker answers once the call has ended).
    func end(_ call: Placement) async throws {
        _ = try await client.request(subjects.end(worker: call.workerID, call: call.callID), payload: CallEnd(callID: call.callID, reason: .api).encoded(),
                                     headers: ["Call-Id": call.callID], timeout: .seconds(10))
    }

    /// Ends a call as its caller hanging up would; it is no longer one of the calls under test.
    func hangUp(_ call: Call) async throws {
        try await end(call.placement)
        calls.removeAll { $0.id == call.id }
    }

    /// New calls asked for every 20 ms under the probe tenant, as callers who hang up and call again at once would,
    /// until the task is cancelled; how many were asked for, and those placed (still up: end them).
    func callStorm() -> Task<(asked: Int, placed: [Placement]), Never> {
        Task {
            var asked = 0, placed: [Placement] = []
            while !Task.isCancelled {
                asked += 1
                if let call = try? await route(key: probeKey, metadata: ["tone_hz": "1000", "agent": "tone"], timeout: .seconds(3)).call {
                    placed.append(call)
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return (asked, placed)
        }
    }

    /// The calls the routers say wait for a free slot (`<prefix>.resumptions`), as they say it from now on.
    func watchResumptions() throws -> WaitingCalls {
        let waiting = WaitingCalls()
        resumptionSubscription = try client.subscribe(to: subjects.resumptions) { message in
            guard let notice = try? ResumptionNotice.decode(message.payload), notice.holdMillis != nil else { return }
            waiting.ids.withLock { _ = $0.insert(notice.callID) }
        }
        return waiting
    }

    func record(_ callID: String) async throws -> [String: String] {
        try await redis.hashGetAll(keys.call(callID))
    }

    static let heldLeasesScript = RedisScript("""
        local t = redis.call('TIME')
        local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
        return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms, '+inf')
        """)

    /// The tenant's leases that have not expired on Redis's clock (an expired one is given back even before
    /// a script sweeps it out).
    func heldLeases() async throws -> Int {
        Int(try await redis.evaluate(Self.heldLeasesScript, keys: [keys.tenantLeases(tenant)]).int ?? -1)
    }

    func freeze(_ pid: Int32) { kill(pid, SIGSTOP) }
    func thaw(_ pid: Int32) { kill(pid, SIGCONT) }

    /// The worker holding the most calls, and those calls.
    func busiestWorker() -> (id: String, calls: [Call]) {
        let byWorker = Dictionary(grouping: calls, by: \.placedOn)
        let busiest = byWorker.max { ($0.value.count, $1.key) < ($1.value.count, $0.key) }!
        return (busiest.key, busiest.value)
    }

    // MARK: - The pass mark

    /// The pass mark of every case, for every call: it is still speaking at 50 packets a second on its `.out`
    /// (at least 100 packets heard after this is called, numbered on with next to no gap, none twice or
    /// backwards), its record does not say `ended` and names the worker it should (its own, or for a call of
    /// a worker in `movedFrom`, another one, in `to` when given), no `ended` event was published for it, and the
    /// tenant holds exactly one lease per live call.
    ///
    /// Measured by the packets, not the clock: a 2-core box running the suite can stall this process for a
    /// second, but the workers number every 20 ms frame they send, and a stalled listener still hears them all.
    func expectEveryCallSpeaking(movedFrom: Set<String> = [], to: Set<String>? = nil,
                                 sourceLocation: SourceLocation = #_sourceLocation) async {
        func owner(_ call: Call, _ record: [String: String]) -> Bool {
            guard let worker = record["worker_id"] else { return false }
            guard movedFrom.contains(call.placedOn) else { return worker == call.placedOn }
            return !movedFrom.contains(worker) && (to?.contains(worker) ?? true)
        }
        func recordsProblems() async -> (problems: [String], ended: Bool) {
            var problems: [String] = [], ended = false
            for call in calls {
                // (After a Redis restart each pooled connection fails once before it reconnects.)
                var record: [String: String]?
                for _ in 0..<5 where record == nil { record = try? await self.record(call.id) }
                guard let record else { problems.append("\(call.id): Redis unreachable"); continue }
                ended = ended || record["state"] == "ended"
                if record.isEmpty || record["state"] == "ended" || !owner(call, record) {
                    let shown = ["state", "worker_id", "end_reason", "epoch", "moves"].compactMap { f in record[f].map { "\(f)=\($0)" } }
                    problems.append("\(call.id) (placed on \(call.placedOn)): \(record.isEmpty ? "no record" : shown.joined(separator: " "))")
                }
            }
            return (problems, ended)
        }
        // Where each call should be by now (a move is recorded a moment after the new worker accepts it).
        var problems: [String] = []
        _ = await poll(timeout: .seconds(30)) {
            let found = await recordsProblems()
            problems = found.problems
            return problems.isEmpty || found.ended
        }
        check(problems.isEmpty, "records before listening: \(problems)", sourceLocation: sourceLocation)

        let from = calls.map(\.tap.count)
        let heard = await poll(timeout: .seconds(30)) { zip(calls, from).allSatisfy { $0.tap.count >= $1 + 100 } }
        check(heard, "not every call spoke 100 packets within 30 s: heard \(zip(calls, from).map { $0.tap.count - $1 })",
              sourceLocation: sourceLocation)
        for (call, start) in zip(calls, from) {
            let sequences = call.tap.all.dropFirst(start).map(\.packet.sequence)
            let steps = zip(sequences, sequences.dropFirst()).map { Int64($1) - Int64($0) }
            let missing = steps.filter { $0 > 1 }.reduce(0) { $0 + $1 - 1 }
            check(steps.allSatisfy { $0 >= 1 } && missing <= 2,
                  "call \(call.id) at \(call.toneHz) Hz: \(sequences.count) packets, sequence numbers not one speaker's steady run "
                  + "(\(missing) missing; steps other than +1: \(steps.enumerated().filter { $0.element != 1 }.prefix(10).map { "#\($0.offset): \($0.element)" }))",
                  sourceLocation: sourceLocation)
        }

        // Still where it should be, after all that listening (a router may act late on the fault).
        problems = await recordsProblems().problems
        check(problems.isEmpty, "records: \(problems)", sourceLocation: sourceLocation)
        let ids = Set(calls.map(\.id))
        let ended = events.all.withLock { $0.filter { $0.event == .ended && ids.contains($0.callID) } }
        check(ended.isEmpty, "calls ended: \(ended.map { "\($0.callID) by \($0.workerID): \($0.reason ?? "?")" })", sourceLocation: sourceLocation)

        // A renewal (every third of the lease time) brings back a lease that went missing.
        var leases = -1
        _ = await poll(timeout: Self.leaseTime / 3 + .seconds(5)) {
            leases = (try? await heldLeases()) ?? -1
            return leases == calls.count
        }
        check(leases == calls.count, "tenant \(tenant) holds \(leases) leases for \(calls.count) live calls", sourceLocation: sourceLocation)

        // The figure for docs/chaos.md: the longest silence any caller heard, fault and recovery included (as
        // heard by this test process, which a busy machine can itself hold up now and then).
        let silences = calls.map { (call: $0.id, gap: $0.tap.longestGap) }
        let longest = silences.max { $0.gap < $1.gap }
        print("chaos result: \(Test.current?.name ?? "?"): \(calls.count) calls, \(ended.count) ended, longest silence "
              + "\(longest.map { "\($0.gap.milliseconds) ms (\($0.call))" } ?? "none")")
    }

    // MARK: - Assertions that print the processes' output when they fail

    func check(_ condition: Bool, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard !condition else { return }
        failed = true
        Issue.record(Comment(rawValue: message()), sourceLocation: sourceLocation)
    }

    func require<T>(_ value: T?, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
        guard let value else {
            check(false, message(), sourceLocation: sourceLocation)
            throw TestServerError(message())
        }
        return value
    }

    func require(_ condition: Bool, _ message: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        _ = try require(condition ? true : nil, message(), sourceLocation: sourceLocation)
    }

    /// Polls `condition` every 50 ms until it holds (true) or `timeout` passes (false); an error counts as
    /// not yet.
    func poll(timeout: Duration, _ condition: () async throws -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if (try? await condition()) == true { return true }
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    func shutdown() async {
        for (_, process) in processes where process.process.isRunning { kill(process.pid, SIGKILL) }
        for (_, process) in processes { _ = await process.waitForExit(timeout: .seconds(10)) }
        if failed || ProcessInfo.processInfo.environment["CHAOS_OUTPUT"] != nil {  // (set: print it for passing cases too)
            for (name, process) in processes {
                print("──── \(name) (switchboard \(process.process.arguments?.first ?? "")), exit \(process.process.isRunning ? "-" : "\(process.process.terminationStatus)") ────\n\(process.output)")
            }
            print("──── nats-server ────\n\(nats.log().suffix(4000))\n──── redis-server ────\n\(redisServer.log().suffix(4000))")
        }
        eventSubscription?.unsubscribe()
        resumptionSubscription?.unsubscribe()
        client.close()
        redis.close()
        // A server a case left frozen would take its SIGTERM only once thawed.
        for server in [nats, redisServer] { if let pid = server.pid { thaw(pid) } }
        await redisServer.stop()
        await nats.stop()
    }
}

/// Call events as this process heard them, from the delivery thread.
final class EventLog: Sendable {
    let all = Mutex<[CallEvent]>([])
}

final class WaitingCalls: Sendable {
    let ids = Mutex<Set<String>>([])
}
