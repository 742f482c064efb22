import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardWorker
import Synchronization

/// The agent bridge, measured against what it stands on in the same run: its own work per 20 ms frame against
/// the Opus encode and decode every call pays anyway; the delay it adds to an agent's echo against the same
/// agent reached directly (and a raw NATS round trip); route to the agent's first audio with a warm pool and
/// without; memory per bridged call. The agents are the reference agent in `.venv-agents/` (scripts/agents-venv).
struct AgentBench {
    var natsURL: String
    var redisURL: String
    var frames = 5_000

    func run(into report: inout Report) async throws {
        try bridgeWork(into: &report)
        let root = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let python = root.appendingPathComponent(".venv-agents/bin/python").path
        let script = root.appendingPathComponent("agents/reference_agent.py").path
        guard FileManager.default.isExecutableFile(atPath: python), FileManager.default.fileExists(atPath: script) else {
            report.add(Row(name: "agents: echo, route to first audio, memory", note: "skipped: run from the repository after scripts/agents-venv"))
            return
        }
        try await BenchFleet.with("bench.agents", natsURL: natsURL, redisURL: redisURL, report: &report) { fleet, caller, natsRTT, report in
            let server = try await AgentServer.start(python: python, script: script)
            defer { server.stop() }
            try await echoDelay(fleet, caller: caller, server: server, natsRTT: natsRTT, logger: fleet.logger, into: &report)
            try await memoryPerCall(fleet, server: server, logger: fleet.logger, into: &report)
            let command = "\(python) \(script) --port {port} --one-call"
            for pool in [4, 0] {
                try await routeToFirstAudio(fleet, caller: caller, command: command, pool: pool, logger: fleet.logger, into: &report)
            }
            try await migrationGaps(fleet, caller: caller, command: command, logger: fleet.logger, into: &report)
        }
    }

    /// The bridge's own work for one 20 ms frame each way (resampling, mu-law, base64 and JSON, the playout
    /// queue), against the Opus encode and decode of the same frame.
    private func bridgeWork(into report: inout Report) throws {
        let encoder = try OpusEncoder(), decoder = try OpusDecoder()
        let down = try Resampler(from: 48_000, to: 8_000), up = try Resampler(from: 8_000, to: 48_000)
        var tone = ToneGenerator()
        let pcm = (0..<frames).map { _ in tone.next(960) }
        let sid = JSONText.quoted("MZ0123456789abcdef0123456789abcdef")
        var playout = AgentPlayout()
        let clock = ContinuousClock()
        var bridge: [Duration] = [], opus: [Duration] = []
        for (i, frame) in pcm.enumerated() {
            let start = clock.now
            // Caller to agent.
            let text = MediaStream.media(quotedStreamSid: sid, sequence: i + 2, chunk: i + 1, timestampMillis: Int64(i) * 20,
                                         payload: MuLaw.encode(down.process(frame)))
            // Agent to caller: its echo of that message, as the worker reads it.
            if case .media(let bytes) = try MediaStream.decodeAgentMessage(Array(text.utf8)) { playout.enqueue(MuLaw.decode(bytes)) }
            if let out = playout.tick().frame { _ = up.process(out) }
            let mid = clock.now
            _ = try decoder.decode(try encoder.encode(frame))
            bridge.append(mid - start)
            opus.append(clock.now - mid)
        }
        let b = LatencySummary(bridge)!, o = LatencySummary(opus)!
        report.add(Row(name: "Opus encode + decode, 20 ms frame", summary: o))
        report.add(Row(name: "bridge work per frame, both ways", summary: b, baseline: "Opus encode+decode (mean)",
                       ratio: b.mean.microseconds / o.mean.microseconds,
                       note: String(format: "%.2f%% of a core per call; goal <= 1.5x", b.mean.microseconds / 20_000 * 100)))
    }

    /// One frame at a time: the caller's frame to the agent's echo through a worker, against the same agent
    /// reached directly over its WebSocket, and against the worker's built-in echo handler (the worker's own path
    /// without the bridge: NATS both ways, Opus decode and encode).
    private func echoDelay(_ fleet: BenchFleet, caller: NATSConnection, server: AgentServer, natsRTT: LatencySummary, logger: Logger,
                           into report: inout Report) async throws {
        let direct = LatencySummary(try await server.directEchoTimes(count: 500))!
        report.add(Row(name: "agent echo, reached directly (WebSocket)", summary: direct))
        let builtin = try await echoThroughWorker(fleet, caller: caller, id: "echo-builtin", handler: EchoHandler())
        report.add(Row(name: "built-in echo handler through a worker", summary: builtin.summary, baseline: "raw NATS p50",
                       ratio: builtin.summary.p50.microseconds / natsRTT.p50.microseconds))
        let bridge = AgentBridge(settings: AgentSettings(source: .server(server.address)), metrics: MetricsRegistry(), logger: logger)
        let bridged = try await echoThroughWorker(fleet, caller: caller, id: "echo-agent", handler: bridge)
        let added50 = (bridged.summary.p50 - builtin.summary.p50 - direct.p50).microseconds
        let added99 = (bridged.summary.p99 - builtin.summary.p99 - direct.p99).microseconds
        report.add(Row(name: "agent echo through a worker", summary: bridged.summary, baseline: "built-in echo p50",
                       ratio: bridged.summary.p50.microseconds / builtin.summary.p50.microseconds,
                       note: String(format: "added by the bridge beyond the worker's own path and the agent: p50 %.0f µs, p99 %.0f µs; goal p99 <= 1 ms; %d of 500 lost",
                                    added50, added99, bridged.lost)))
    }

    private func echoThroughWorker(_ fleet: BenchFleet, caller: NATSConnection, id: String, handler: any CallHandler) async throws
        -> (summary: LatencySummary, lost: Int) {
        _ = try await fleet.addWorker(id, capacity: 10, handler: handler)
        try await fleet.waitForWorkers([id])
        let call = try await route(caller, fleet, ["agent": "echo"])
        let encoder = try OpusEncoder()
        var tone = ToneGenerator()
        var sequence: UInt32 = 0
        func send() throws -> ContinuousClock.Instant {
            let packet = MediaPacket(sequence: sequence, timestamp: sequence &* 960, payload: try encoder.encode(tone.next(960)))
            sequence &+= 1
            let sent = ContinuousClock.now
            try caller.publish(call.media.in, payload: packet.encoded())
            return sent
        }
        // Audio before an agent's session is up is not the agent's to echo: a steady second first.
        for _ in 0..<50 {
            _ = try send()
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(300))
        // Arrival times are taken on delivery; the wait for each is bounded.
        final class Arrivals: Sendable { let times = Mutex<[ContinuousClock.Instant]>([]) }
        let arrivals = Arrivals()
        var times: [Duration] = [], lost = 0
        let timed = try caller.subscribe(to: call.media.out) { _ in arrivals.times.withLock { $0.append(.now) } }
        defer { timed.unsubscribe() }
        try await caller.flush()
        for _ in 0..<500 {
            arrivals.times.withLock { $0.removeAll() }
            let sent = try send()
            let deadline = ContinuousClock.now + .milliseconds(500)
            while arrivals.times.withLock({ $0.isEmpty }) && ContinuousClock.now < deadline { try await Task.sleep(for: .microseconds(200)) }
            if let back = arrivals.times.withLock({ $0.first }) { times.append(back - sent) } else { lost += 1 }
            try await Task.sleep(for: .milliseconds(20))
        }
        await fleet.removeAll()
        return (LatencySummary(times)!, lost)
    }

    /// Resident memory of this process (router, worker, caller) before and after 50 bridged calls to an agent
    /// server: the worker's share per call, its agent excluded.
    private func memoryPerCall(_ fleet: BenchFleet, server: AgentServer, logger: Logger, into report: inout Report) async throws {
        let bridge = AgentBridge(settings: AgentSettings(source: .server(server.address)), metrics: MetricsRegistry(), logger: logger)
        _ = try await fleet.addWorker("mem-a", capacity: 100, handler: bridge)
        try await fleet.waitForWorkers(["mem-a"])
        let caller = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-mem"), logger: logger)
        defer { caller.close() }
        // One call first: what is made once (resampler code, the first NIO channel) is not a per-call cost.
        _ = try await route(caller, fleet, ["agent": "echo"])
        try await Task.sleep(for: .seconds(1))
        let before = Self.residentBytes()
        var calls: [Placement] = []
        for _ in 0..<50 { calls.append(try await route(caller, fleet, ["agent": "echo"])) }
        // A second of audio on every call, so each holds what a speaking call does (codecs, resamplers, queues).
        let encoder = try OpusEncoder()
        var tone = ToneGenerator()
        for sequence in 0..<50 {
            let payload = try encoder.encode(tone.next(960))
            for call in calls {
                try caller.publish(call.media.in, payload: MediaPacket(sequence: UInt32(sequence), timestamp: UInt32(sequence * 960), payload: payload).encoded())
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .seconds(1))
        let perCall = Double(Self.residentBytes() - before) / 50
        report.add(Row(name: "memory per bridged call (worker side)", note: String(format: "%.2f MB per call over 50 speaking calls; goal <= 2 MB", perCall / 1_048_576)))
        await fleet.removeAll()
    }

    /// Route request to the first echoed packet, with a warm pool of agent processes and without one.
    private func routeToFirstAudio(_ fleet: BenchFleet, caller: NATSConnection, command: String, pool: Int, logger: Logger,
                                   into report: inout Report) async throws {
        let bridge = AgentBridge(settings: AgentSettings(source: .processes(AgentCommand(command: command, poolSize: pool))),
                                 metrics: MetricsRegistry(), logger: logger)
        let id = "start-\(pool)"
        _ = try await fleet.addWorker(id, capacity: 10, handler: bridge)
        try await fleet.waitForWorkers([id])
        var times: [Duration] = []
        let encoder = try OpusEncoder()
        let silence = try encoder.encode([Int16](repeating: 0, count: 960))
        for _ in 0..<(pool > 0 ? 40 : 10) {
            while let ready = bridge.pool?.readyCount, ready < pool { try await Task.sleep(for: .milliseconds(20)) }
            let asked = ContinuousClock.now
            let call = try await route(caller, fleet, ["agent": "echo"])
            let (heard, continuation) = AsyncStream.makeStream(of: ContinuousClock.Instant.self)
            let out = try caller.subscribe(to: call.media.out) { _ in continuation.yield(.now) }
            // The caller speaks from the moment it is placed, 20 ms a packet, as a gateway does.
            let speaker = Task {
                var sequence: UInt32 = 0
                while !Task.isCancelled {
                    try? caller.publish(call.media.in, payload: MediaPacket(sequence: sequence, timestamp: sequence &* 960, payload: silence).encoded())
                    sequence &+= 1
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            let timeout = Task {
                try? await Task.sleep(for: .seconds(20))
                continuation.finish()
            }
            var iterator = heard.makeAsyncIterator()
            if let first = await iterator.next() { times.append(first - asked) }
            timeout.cancel()
            speaker.cancel()
            out.unsubscribe()
            _ = try? await caller.request(fleet.subjects.end(worker: call.workerID, call: call.callID), payload: CallEnd(callID: call.callID, reason: .caller).encoded(),
                                          timeout: .seconds(10))
        }
        guard let summary = LatencySummary(times) else {
            report.add(Row(name: "route to agent's first audio, pool \(pool)", note: "no call's audio came back within 20 s"))
            await fleet.removeAll()
            return
        }
        report.add(Row(name: pool > 0 ? "route to agent's first audio, warm pool" : "route to agent's first audio, no pool",
                       summary: summary, note: pool > 0 ? "goal p99 <= 50 ms (includes placement and one echo)" : "a process started per call"))
        await fleet.removeAll()
    }

    /// A call whose agent speaks a steady tone, moved back and forth between two workers: the longest silence
    /// the caller hears around each move (the old session holds, the new worker starts a fresh agent session
    /// from the checkpoint and the agent's first audio plays at once).
    private func migrationGaps(_ fleet: BenchFleet, caller: NATSConnection, command: String, logger: Logger,
                               into report: inout Report) async throws {
        let moves = 40
        for id in ["move-a", "move-b"] {
            let bridge = AgentBridge(settings: AgentSettings(source: .processes(AgentCommand(command: command, poolSize: 2))),
                                     metrics: MetricsRegistry(), logger: logger)
            _ = try await fleet.addWorker(id, capacity: 10, handler: bridge)
        }
        try await fleet.waitForWorkers(["move-a", "move-b"])
        let call = try await route(caller, fleet, ["agent": "tone"])
        let ear = try Ear(caller, call.media.out)
        try await Task.sleep(for: .seconds(2))
        var gaps: [Duration] = [], failed = 0
        for _ in 0..<moves {
            let start = ContinuousClock.now
            do { _ = try await fleet.router.migrate(call.callID, requestedBy: "bench") } catch { failed += 1 }
            let end = ContinuousClock.now
            // The pool refills behind each move; a steady second of tone before the next.
            try await Task.sleep(for: .seconds(1))
            gaps.append(ear.longestGap(from: start - .milliseconds(60), to: end + .milliseconds(300)))
        }
        report.add(Row(name: "agent call moved: longest gap the caller hears", summary: LatencySummary(gaps)!,
                       note: "\(moves) moves (\(failed) refused) of a call whose agent speaks a tone; 20 ms between packets; goal p99 <= 40 ms"))
        await fleet.removeAll()
    }

    private func route(_ caller: NATSConnection, _ fleet: BenchFleet, _ metadata: [String: String]) async throws -> Placement {
        let reply = try RouteReply.decode(try await caller.request(fleet.subjects.route, payload: RouteRequest(tenant: "bench", metadata: metadata).encoded()).payload)
        guard let call = reply.call else { throw SwitchboardError(.noCapacity, "not placed: \(reply.error?.message ?? "no reason given")") }
        return call
    }

    static func residentBytes() -> Int64 {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return ResourceParsing.kilobytesField("VmRSS", in: status) ?? 0
    }
}

/// The reference agent as a server of its own (dies with this process), and a direct WebSocket client to time its echo.
private final class AgentServer: Sendable {
    let pid: Int32
    let address: AgentAddress

    private init(pid: Int32, address: AgentAddress) {
        self.pid = pid
        self.address = address
    }

    static func start(python: String, script: String) async throws -> AgentServer {
        let port = try AgentProbe.freePort()
        let pid = try await AgentProbe.spawn("\(python) \(script) --port \(port) >/dev/null 2>&1")
        let server = AgentServer(pid: pid, address: AgentAddress(host: "127.0.0.1", port: port, path: "/ws"))
        let deadline = ContinuousClock.now + .seconds(30)
        while !AgentProbe.accepts(port: port) {
            guard ContinuousClock.now < deadline else {
                server.stop()
                throw SwitchboardError(.timeout, "the reference agent did not start")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return server
    }

    func stop() {
        killpg(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    /// Sends `media` one message at a time over a WebSocket of its own and times each echo.
    func directEchoTimes(count: Int) async throws -> [Duration] {
        try await AgentProbe.echoTimes(address, count: count)
    }
}
