import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import SwitchboardTestSupport
import SwitchboardWorker
import Testing

/// The agent bridge against real agents (the plain-Python reference agent `agents/reference_agent.py` and a
/// Pipecat bot pinned in `agents/requirements.txt`), real nats-server and Redis. One at a time: each carries
/// live audio both ways at real pace.
@Suite("Agents behind workers", .serialized)
struct AgentBridgeTests {
    private func bridge(_ source: AgentSettings.Source) -> AgentBridge {
        AgentBridge(settings: AgentSettings(source: source), metrics: MetricsRegistry(), logger: quiet)
    }

    private func processes(_ script: String, pool: Int = 1, _ arguments: String = "") throws -> AgentBridge {
        try Agents.requireVenv()
        return bridge(.processes(AgentCommand(command: Agents.command(script, arguments), poolSize: pool, startTimeout: .seconds(60))))
    }

    /// Runs `body` on a cluster with one router and a worker per bridge, each ready to take a call.
    private func withCluster(_ bridges: [String: AgentBridge], _ body: (TestCluster) async throws -> Void) async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            for (id, bridge) in bridges.sorted(by: { $0.key < $1.key }) {
                try await cluster.addWorker(id: id, capacity: 8, handler: bridge)
                // The whole pool warm: calls placed back to back each take a ready process (one short is refused).
                try await eventually(timeout: .seconds(60), "\(id)'s agents are ready") {
                    if let pool = bridge.pool { return pool.readyCount >= pool.settings.poolSize }
                    return bridge.reserve(callID: "probe")
                }
            }
            try await cluster.waitForWorkers(bridges.count)
            try await body(cluster)
        }
    }

    private func state(_ cluster: TestCluster, _ callID: String) async throws -> [String: Any] {
        Agents.savedState(try await cluster.record(callID)) ?? [:]
    }

    @Test func aToneThroughTheReferenceAgentServerComesBackAt440Hz() async throws {
        let agent = try await Agents.server(Agents.reference)
        try await withCluster(["a": bridge(.server(agent.address))]) { cluster in
            let call = try await cluster.route(["agent": "echo"])
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            let started = ContinuousClock.now
            // 1.5 s of echo; the bound allows for a test machine whose two cores are busy with other suites.
            try await eventually(timeout: .seconds(30), "the agent's echo comes back") { caller.tap.count >= 75 }
            let frequency = try caller.tap.frequency(after: started + .milliseconds(400), frames: 50)
            #expect(abs(frequency - 440) <= 5, "heard \(frequency) Hz")
            // Whole 20 ms frames, numbered and timed without a gap. (Their pace follows the caller's, which an echo
            // answers frame by frame: on a busy machine that is the test's own timing, so it is not asserted here;
            // the playout's one frame per tick is, in AgentPlayoutTests.)
            let heard = caller.tap.all.suffix(50)
            #expect(zip(heard, heard.dropFirst()).allSatisfy {
                $1.packet.sequence == $0.packet.sequence &+ 1 && $1.packet.timestamp == $0.packet.timestamp &+ 960
            })
            try await eventually(timeout: .seconds(5), "its state is saved") { try await state(cluster, call.callID)["pid"] != nil }
            caller.hangUp()
        }
        withExtendedLifetime(agent.process) {}
    }

    @Test func aPipecatBotInAProcessOfItsOwnEchoesA440HzToneAndSavesItsState() async throws {
        let bot = try processes(Agents.pipecat)
        try await withCluster(["a": bot]) { cluster in
            let call = try await cluster.route()
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            let started = ContinuousClock.now
            try await eventually(timeout: .seconds(20), "the bot's echo comes back") { caller.tap.count >= 100 }
            let frequency = try caller.tap.frequency(after: started + .milliseconds(1_000), frames: 50)
            #expect(abs(frequency - 440) <= 5, "heard \(frequency) Hz")
            try await eventually(timeout: .seconds(10), "the bot's checkpoint is saved") {
                (try await state(cluster, call.callID)["echoed"] as? Int ?? 0) > 0
            }
            caller.hangUp()
        }
        #expect(bot.pool?.aliveCount == 0, "no agent process outlives its worker")
    }

    @Test func dtmfReachesTheAgentMarksComeBackInOrderAndClearDropsTheQueue() async throws {
        try await withCluster(["a": processes(Agents.reference)]) { cluster in
            // The agent speaks 2 s ahead of real time, in 100 ms chunks with a mark after each.
            let call = try await cluster.route(["agent": "tone", "lead_ms": "2000", "pause_after_clear_ms": "2000"])
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            try await eventually(timeout: .seconds(10), "the agent speaks") { caller.tap.count >= 50 }
            caller.press("12")
            try await eventually(timeout: .seconds(10), "both keys reach the agent") { try await state(cluster, call.callID)["dtmf"] as? String == "12" }
            let marks = try await state(cluster, call.callID)["marks"] as? [String] ?? []
            let numbers = marks.compactMap { Int($0.dropFirst("chunk-".count)) }
            #expect(numbers.count == marks.count && numbers.count >= 5, "marks back: \(marks)")
            #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count, "in order: \(numbers)")

            // Barge-in: 2 s of queued speech is dropped, and the agent is quiet for 2 s. Without the clear the caller
            // would hear 150 packets in the next 3 s.
            let pressed = ContinuousClock.now
            caller.press("#")
            try await Task.sleep(for: .seconds(3))
            let heard = caller.tap.count(after: pressed) - caller.tap.count(after: pressed + .seconds(3))
            #expect(heard <= 75, "\(heard) packets in the 3 s after the clear")
            try await eventually(timeout: .seconds(5), "the agent speaks again after its pause") {
                caller.tap.count(after: pressed + .seconds(3)) >= 25
            }
            // The marks of the chunks the clear dropped came back too.
            let after = try await state(cluster, call.callID)["marks"] as? [String] ?? []
            #expect(after.count > marks.count)
            caller.hangUp()
        }
    }

    @Test func theAgentHangingUpEndsTheCall() async throws {
        try await withCluster(["a": processes(Agents.reference)]) { cluster in
            let call = try await cluster.route(["agent": "echo"])
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            try await eventually(timeout: .seconds(10), "the agent answers") { caller.tap.count >= 10 }
            caller.press("*")
            try await eventually(timeout: .seconds(10), "the call ends") { try await cluster.record(call.callID)["state"] == "ended" }
            #expect(try await cluster.record(call.callID)["end_reason"] == "agent_hangup")
            caller.hangUp()
        }
    }

    @Test func malformedMessagesCloseOnlyThatSessionWhichRestartsWithItsState() async throws {
        let bridge = try processes(Agents.reference, pool: 2)
        try await withCluster(["a": bridge]) { cluster in
            let victim = try await cluster.route(["agent": "echo"])
            let bystander = try await cluster.route(["agent": "echo"])
            let callers = try [victim, bystander].map { try ToneCaller(cluster.client, $0, subjects: cluster.subjects) }
            try await eventually(timeout: .seconds(10), "both calls answer") { callers.allSatisfy { $0.tap.count >= 10 } }
            try await eventually(timeout: .seconds(5), "the first session's state is saved") { try await state(cluster, victim.callID)["pid"] != nil }
            callers[0].press("7")  // 100 malformed messages and an oversized frame
            try await eventually(timeout: .seconds(20), "the victim's agent restarts from its state") {
                let saved = try await state(cluster, victim.callID)
                return saved["sessions"] as? Int == 2 && saved["dtmf"] as? String == "7"
            }
            let before = ContinuousClock.now
            try await eventually(timeout: .seconds(10), "both calls still speak") { callers.allSatisfy { $0.tap.count(after: before) >= 25 } }
            #expect(try await cluster.record(bystander.callID)["state"] == "active")
            #expect(try await state(cluster, bystander.callID)["sessions"] as? Int == 1, "the other call's agent is untouched")
            for caller in callers { caller.hangUp() }
        }
    }

    @Test func anAgentProcessKilledMidCallIsRestartedOnceThenTheCallEnds() async throws {
        try await withCluster(["a": processes(Agents.reference, pool: 2)]) { cluster in
            let call = try await cluster.route(["agent": "echo"])
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            caller.press("4")
            try await eventually(timeout: .seconds(10), "the agent has the key") { try await state(cluster, call.callID)["dtmf"] as? String == "4" }
            let first = try #require(try await state(cluster, call.callID)["pid"] as? Int)
            kill(Int32(first), SIGKILL)
            try await eventually(timeout: .seconds(20), "a fresh agent resumes the call") {
                let saved = try await state(cluster, call.callID)
                return saved["sessions"] as? Int == 2 && saved["dtmf"] as? String == "4" && saved["pid"] as? Int != first
            }
            let after = ContinuousClock.now
            try await eventually(timeout: .seconds(10), "the caller hears the agent again") { caller.tap.count(after: after) >= 25 }
            #expect(try await cluster.record(call.callID)["state"] == "active")
            let second = try #require(try await state(cluster, call.callID)["pid"] as? Int)
            kill(Int32(second), SIGKILL)
            try await eventually(timeout: .seconds(20), "a second failure ends the call") { try await cluster.record(call.callID)["state"] == "ended" }
            #expect(try await cluster.record(call.callID)["end_reason"] == "agent_failed")
            // The timeline has it: the agent's first audio, its restart, and the end.
            try await eventually(timeout: .seconds(10), "the end on the timeline") {
                let timeline = try JSONDecoder().decode(Timeline.self, from: try await cluster.http("GET", "/v1/calls/\(call.callID)/timeline").body)
                let worker = timeline.events.filter { $0.source == .worker }.map(\.type)
                guard worker.last == "ended" else { return false }
                #expect(worker.filter { $0 == "agent_restarted" }.count == 1 && worker.contains("agent_first_audio"), "\(worker)")
                #expect(timeline.events.last { $0.type == "agent_restarted" }?.attributes["reason"] != nil)
                return true
            }
            caller.hangUp()
        }
    }

    @Test func aWorkerWhoseAgentIsUnreachableRefusesItsOffersAndTheCallsGoElsewhere() async throws {
        let doomed = try await Agents.server(Agents.reference)
        let agent = try await Agents.server(Agents.reference)
        let down = bridge(.server(doomed.address)), up = bridge(.server(agent.address))
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let a = try await cluster.addWorker(id: "a", capacity: 8, region: "eu", handler: down)
            try await cluster.addWorker(id: "b", capacity: 8, region: "us", handler: up)
            try await cluster.waitForWorkers(2)
            // a's agent server goes away after a joined: a notices within its probe interval and refuses offers.
            kill(doomed.process.pid, SIGKILL)
            try await eventually(timeout: .seconds(10), "a finds its agent gone") { !down.reserve(callID: "probe") }
            // A call only a may take (region eu, required) is offered to a, refused, and not placed.
            let refused = try await cluster.routeByNATS(RouteRequest(tenant: "t", region: "eu", metadata: ["agent": "echo"]))
            #expect(refused.call == nil && refused.error?.code == "no_capacity", "\(refused)")
            #expect((a.worker.metrics.value(MetricNames.offersAnswered, ["result": "refused_agent_unavailable"]) ?? 0) >= 1)
            // Calls that may go anywhere go to b.
            var placed: [String] = []
            for _ in 0..<6 { placed.append(try await cluster.route(["agent": "echo"]).workerID) }
            #expect(placed.allSatisfy { $0 == "b" }, "placed on \(placed)")
            // A worker whose agent never answers does not join at all: routers never hear of it.
            let never = bridge(.server(AgentAddress(host: "127.0.0.1", port: try TestServer.freePort(), path: "/ws")))
            try await cluster.addWorker(id: "c", capacity: 8, handler: never)
            try await Task.sleep(for: .seconds(2))
            #expect(!cluster.routers[0].router.workers().contains { $0.id == "c" })
        }
        withExtendedLifetime(agent.process) {}
    }

    @Test func aMigratedCallResumesOnTheOtherWorkerWithItsSavedState() async throws {
        try await withCluster(["a": processes(Agents.reference), "b": processes(Agents.reference)]) { cluster in
            let call = try await cluster.route(["agent": "tone"])
            let caller = try ToneCaller(cluster.client, call, subjects: cluster.subjects)
            try await eventually(timeout: .seconds(10), "the agent speaks") { caller.tap.count >= 25 }
            caller.press("5")
            try await eventually(timeout: .seconds(10), "the agent has the key") { try await state(cluster, call.callID)["dtmf"] as? String == "5" }
            let other = call.workerID == "a" ? "b" : "a"
            let moving = ContinuousClock.now
            let moved = try await cluster.http("POST", "/v1/calls/\(call.callID)/migrate")
            #expect(moved.status == 200, "\(String(decoding: moved.body, as: UTF8.self))")
            try await cluster.expectRecords([call], on: other)
            try await eventually(timeout: .seconds(10), "the new agent resumed from the saved state") {
                let saved = try await state(cluster, call.callID)
                return saved["sessions"] as? Int == 2 && saved["resumed"] as? Bool == true && saved["dtmf"] as? String == "5"
            }
            try await eventually(timeout: .seconds(10), "the tone goes on") { caller.tap.count(after: moving + .seconds(1)) >= 25 }
            #expect(abs(try caller.tap.frequency(after: moving + .seconds(1)) - 440) <= 5)
            // About one frame (28 ms measured alone, as a built-in handler's move). Bounded loosely, as the other
            // migration tests are, since this suite runs beside the rest on 2 cores: a pause, never a loss.
            let gap = caller.tap.longestGap(after: moving - .milliseconds(500))
            #expect(gap <= .seconds(1), "the caller heard \(gap) of silence across the move")
            caller.hangUp()
        }
    }

    @Test func fiftyCallsEachWithAProcessOfItsOwnLeaveNoProcessBehind() async throws {
        let bridge = try processes(Agents.reference, pool: 0)
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker(id: "a", capacity: 50, handler: bridge)
            try await cluster.waitForWorkers(1)
            var calls: [Placement] = []
            for _ in 0..<50 { calls.append(try await cluster.route(["agent": "echo"])) }
            var pids: Set<Int> = []
            try await eventually(timeout: .seconds(120), "every call's agent runs and saved its state") {
                pids = []
                for call in calls {
                    guard let pid = try await state(cluster, call.callID)["pid"] as? Int else { return false }
                    pids.insert(pid)
                }
                return true
            }
            #expect(pids.count == 50, "each call has a process of its own")
            for call in calls { #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200) }
            try await eventually(timeout: .seconds(30), "every agent process is gone") {
                bridge.pool?.aliveCount == 0 && pids.allSatisfy { !Agents.isAlive(Int32($0)) }
            }
            // Their CPU time (each started for its call: a Python start is tens of ms at least) is metered to the
            // tenant's month at the worker's next refresh.
            let limits = TenantLimits(redis: cluster.redis, keys: cluster.keys)
            var usage = TenantUsage(tenant: "t", month: "")
            try await eventually(timeout: .seconds(15), "the agents' CPU time metered") {
                usage = try await limits.usage("t", month: UsagePeriod.month(WallClock.system.unixMillis))
                return usage.agentCPUMillis >= 50 * 10
            }
            #expect(usage.agentCPUMillis < 50 * 60_000, "\(usage.agentCPUMillis) ms")
            #expect(UsageReport(usage, policy: nil).agentCPUSeconds == Double(usage.agentCPUMillis) / 1000)
        }
    }

    /// A process's CPU time is read from /proc/<pid>/stat, whose command name may hold spaces and parentheses.
    @Test func processCPUIsReadFromProcStat() throws {
        let line = "4242 (python3 (agent) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 7 3 20 0 4 0 12345 1000 200"
        let ticks: Int64 = try #require(ProcessCPU.ticks(statLine: line))
        #expect(ticks == 185, "utime 150 + stime 25 + cutime 7 + cstime 3")
        #expect(ProcessCPU.ticks(statLine: "4242 (x) S 1 2 3") == nil)
        #expect(ProcessCPU.ticks(statLine: "garbage") == nil)
        let own = try #require(ProcessCPU.ticks(statLine: try String(contentsOfFile: "/proc/self/stat", encoding: .utf8)))
        #expect(own > 0, "this test process has used CPU")
    }

    @Test func aWorkerKilledMidCallHasItsCallResumedElsewhereWithTheSavedStateAndLeavesNoAgentBehind() async throws {
        try Agents.requireVenv()
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            let command = ["--agent-command", Agents.command(Agents.reference), "--agent-pool", "1", "--agent-start-timeout", "60"]
            let a = try cluster.spawnWorker(id: "a", command)
            try await eventually(timeout: .seconds(30), "the router sees a") { router.router.workers().contains { $0.id == "a" } }
            // a's pool is ready when it accepts a call.
            var call: Placement?
            try await eventually(timeout: .seconds(60), "a takes a call") {
                call = try? await cluster.route(["agent": "tone"])
                return call != nil
            }
            let placed = try #require(call)
            #expect(placed.workerID == "a")
            let b = try cluster.spawnWorker(id: "b", command)
            try await eventually(timeout: .seconds(30), "the router sees b") { router.router.workers().contains { $0.id == "b" } }
            let caller = try ToneCaller(cluster.client, placed, subjects: cluster.subjects)
            caller.press("9")
            try await eventually(timeout: .seconds(10), "the agent has the key") { try await state(cluster, placed.callID)["dtmf"] as? String == "9" }
            let agentOnA = try #require(try await state(cluster, placed.callID)["pid"] as? Int)
            // b's pool must be ready too, or its offer is refused.
            try await Task.sleep(for: .seconds(2))

            kill(a.pid, SIGKILL)
            let killed = ContinuousClock.now
            try await cluster.expectRecords([placed], on: "b")
            try await eventually(timeout: .seconds(10), "b's agent resumed with the saved state") {
                let saved = try await state(cluster, placed.callID)
                return saved["sessions"] as? Int == 2 && saved["resumed"] as? Bool == true && saved["dtmf"] as? String == "9"
            }
            try await eventually(timeout: .seconds(10), "the caller hears the tone again") { caller.tap.count(after: killed + .seconds(1)) >= 25 }
            #expect(abs(try caller.tap.frequency(after: killed + .seconds(1)) - 440) <= 5)
            // The killed worker's agent process died with it.
            try await eventually(timeout: .seconds(5), "a's agent is gone") { !Agents.isAlive(Int32(agentOnA)) }
            caller.hangUp()
            #expect(try await cluster.http("DELETE", "/v1/calls/\(placed.callID)").status == 200)
            kill(b.pid, SIGTERM)
            #expect(await b.waitForExit(timeout: .seconds(20)) == 0, "b drains (no calls) and exits 0, its agents with it")
        }
    }
}
