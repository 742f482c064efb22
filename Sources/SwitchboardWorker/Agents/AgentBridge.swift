import Foundation
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardObservability
import SwitchboardOpus
import Synchronization

/// Where a worker's agents run, and how the bridge to them behaves (docs/agents.md).
public struct AgentSettings: Sendable {
    public enum Source: Sendable, Equatable {
        /// One long-running agent server (a Pipecat FastAPI app, say), reached once per call.
        case server(AgentAddress)
        /// One agent process per call, from a warm pool.
        case processes(AgentCommand)
    }

    public var source: Source
    /// Time to connect to the agent and upgrade to WebSocket.
    public var connectTimeout: Duration = .seconds(5)
    /// `start.accountSid`: a placeholder, since there is no Twilio account (bots that insist on one get this).
    public var accountSid = "AC00000000000000000000000000000000"
    /// A ping goes to the agent this often; an agent that answers none for `pongTimeout` is hung.
    public var pingInterval: Duration = .seconds(2)
    public var pongTimeout: Duration = .seconds(10)
    /// How the agent server's reachability is checked between calls (an offer is refused while it is down).
    public var probeInterval: Duration = .seconds(1)

    public init(source: Source) { self.source = source }
}

/// The agent bridge: hosts each call by connecting to the user's own agent over WebSocket and being, exactly,
/// the media-server side of Twilio Media Streams, so an unmodified Pipecat bot runs behind it.
///
/// Per call: the caller's Opus 48 kHz becomes mu-law 8 kHz in 20 ms `media` events; the agent's `media` of any
/// size is queued, repacketized into 20 ms frames and paced at real time toward the caller (`AgentPlayout`),
/// `clear` empties the queue at once and marks come back when their audio has played. The agent's
/// `checkpoint` events are the call's saved state; a call that moves starts a fresh agent session with it
/// (`resumed=true`). An agent that fails is restarted once from that state (`AgentSupervisor`); its hang-up
/// (closing its socket) ends the call.
public final class AgentBridge: CallHandler {
    public let settings: AgentSettings
    /// The agent processes (with `--agent-command`).
    public let pool: AgentProcessPool?
    private let metrics: MetricsRegistry
    private let logger: Logger
    /// The agent server answered its last probe (with `--agent-url`).
    private let serverReachable = Atomic<Bool>(false)

    public init(settings: AgentSettings, metrics: MetricsRegistry, logger: Logger) {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        if case .processes(let command) = settings.source {
            pool = AgentProcessPool(command, metrics: metrics, logger: logger)
        } else {
            pool = nil
        }
    }

    public func reserve(callID: String) -> Bool {
        if let pool { return pool.reserve(callID: callID) }
        return serverReachable.load(ordering: .relaxed)
    }

    public func release(callID: String) { pool?.release(callID: callID) }
    public func finish(callID: String) -> Duration? { pool?.release(callID: callID) }

    public var processIDs: [Int32] { pool?.alivePIDs ?? [] }

    /// A call is live once its agent has its `start` (the worker's silence clock starts then).
    public var announcesStart: Bool { true }

    public var isReady: Bool {
        guard let pool else { return serverReachable.load(ordering: .relaxed) }
        return pool.settings.poolSize == 0 || pool.readyCount > 0
    }

    public func runBackground() async {
        switch settings.source {
        case .processes:
            await pool?.run()
        case .server(let address):
            while !Task.isCancelled {
                let up = await Self.probe(address)
                if serverReachable.exchange(up, ordering: .relaxed) != up {
                    logger.log(level: up ? .info : .warning, up ? "agent server reachable" : "agent server unreachable: offers are refused",
                               metadata: ["agent": "\(address)"])
                }
                try? await Task.sleep(for: settings.probeInterval)
            }
        }
    }

    /// Whether the agent server accepts TCP connections (off the cooperative pool: a name lookup may block).
    private static func probe(_ address: AgentAddress) async -> Bool {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: AgentSystem.accepts(host: address.host, port: address.port)) }
        }
    }

    public func run(_ call: CallContext) async throws {
        let log = logger.with([LogKey.callID: "\(call.callID)", LogKey.tenant: "\(call.tenant)"])
        let link = CallLink(savedState: call.restoredStateJSON)
        var supervisor = AgentSupervisor()
        var resumed = call.isResumed
        var fresh = false
        await withTaskGroup(of: Void.self) { group in
            // The caller's audio and keys go to whichever session is live (none between two).
            group.addTask {
                for await frame in call.audio { link.send(audio: frame.samples) }
            }
            group.addTask {
                for await digit in call.dtmf { link.send(digit: digit) }
            }
            while !Task.isCancelled {
                let end = await runSession(call, link: link, resumed: resumed, fresh: fresh, log: log)
                metrics.increment(MetricNames.agentSessions, ["result": end.label], help: "Agent sessions, by how they ended")
                switch supervisor.sessionEnded(Task.isCancelled ? .closedByCall : end, nowMillis: ContinuousClock.now.millis) {
                case .restart:
                    log.warning("agent failed: starting a fresh session from the saved state", metadata: [LogKey.reason: "\(end.label)"])
                    call.note("agent_restarted", ["reason": end.label])
                    resumed = true
                    fresh = true
                case .endCall(let reason):
                    if reason == .agentFailed {
                        log.error("agent failed again: ending the call", metadata: [LogKey.reason: "\(end.label)"])
                    }
                    call.end(reason)
                    group.cancelAll()
                    return
                case .none:
                    group.cancelAll()
                    return
                }
            }
            group.cancelAll()
        }
    }

    /// One agent session: connect, `connected` and `start`, then media both ways until the agent hangs up or
    /// fails, or the call ends (then `stop`, and the socket is closed without waiting on the agent).
    private func runSession(_ call: CallContext, link: CallLink, resumed: Bool, fresh: Bool, log: Logger) async -> AgentSupervisor.SessionEnd {
        let began = ContinuousClock.now
        let address: AgentAddress
        let channel: AgentSocket.Channel
        do {
            switch settings.source {
            case .server(let server): address = server
            case .processes: address = try await pool!.address(for: call.callID, tenant: call.tenant, fresh: fresh)
            }
            channel = try await AgentSocket.connect(address, timeout: settings.connectTimeout, maxMessageBytes: MediaStream.maxAgentMessageBytes)
        } catch {
            if Task.isCancelled { return .closedByCall }
            log.warning("agent not reached", metadata: [LogKey.error: "\(error)"])
            return .failed("unreachable")
        }
        let session: AgentSessionIO
        do {
            session = try AgentSessionIO(channel: channel.channel, streamSid: "MZ" + Identifiers.random(bytes: 16),
                                         frameSamples: call.frameSamples) { samples in try? call.send(samples) }  // a lost frame: as on the bus
        } catch {
            channel.channel.close(promise: nil)
            log.error("cannot set up the agent session's audio", metadata: [LogKey.error: "\(error)"])
            return .failed("audio_setup")
        }
        var parameters = ["call_id": call.callID, "tenant": call.tenant, "resumed": resumed ? "true" : "false",
                          "metadata": String(decoding: WireCodec.encode(call.metadata), as: UTF8.self)]
        if let state = link.savedState { parameters["state"] = state }
        if let traceparent = call.traceparent { parameters["traceparent"] = traceparent }
        session.write(MediaStream.connected())
        session.write(MediaStream.start(.init(accountSid: settings.accountSid, streamSid: session.streamSid, callSid: call.callID,
                                              customParameters: parameters)))
        metrics.observe(MetricNames.agentSessionStartSeconds, [:], (ContinuousClock.now - began).microseconds / 1e6,
                        buckets: MetricNames.latencyBuckets, help: "Time from a call's start to its agent's start event")
        log.info("agent session started", metadata: ["agent": "\(address)", "resumed": "\(resumed)"])
        call.started()

        link.attach(session)
        defer { link.detach() }
        var end = AgentSupervisor.SessionEnd.closedByCall
        do {
            try await channel.executeThenClose { inbound, _ in
                end = await withTaskGroup(of: AgentSupervisor.SessionEnd?.self) { group in
                    group.addTask { await self.readAgent(inbound, session: session, call: call, link: link, log: log) }
                    group.addTask { await self.play(session: session); return nil }
                    group.addTask { await self.keepAlive(session: session) }
                    let first = await group.next() ?? nil
                    group.cancelAll()
                    return first ?? .closedByCall
                }
                if case .closedByCall = end { session.write(session.stop(accountSid: settings.accountSid, callSid: call.callID)) }
                // After the agent's own close (echoed as it came), no second close frame: only the connection's end.
                await session.close(within: .milliseconds(300), sendingClose: end != .hungUp)
            }
        } catch {
            log.debug("agent socket closed with an error", metadata: [LogKey.error: "\(error)"])
        }
        return end
    }

    /// The agent's messages, until it hangs up or fails (nil never: the session ends with this task).
    private func readAgent(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, session: AgentSessionIO, call: CallContext,
                           link: CallLink, log: Logger) async -> AgentSupervisor.SessionEnd {
        do {
            for try await frame in inbound {
                switch frame.opcode {
                case .text:
                    let event: MediaStream.AgentEvent
                    do {
                        event = try MediaStream.decodeAgentMessage(Array(buffer: frame.unmaskedData))
                    } catch {
                        metrics.increment(MetricNames.agentMessages, ["result": error.code.rawValue], help: "Messages from agents, by result")
                        log.warning("agent sent a message the worker refuses: closing its session", metadata: [LogKey.error: "\(error)"])
                        return .failed(error.code.rawValue)
                    }
                    metrics.increment(MetricNames.agentMessages, ["result": "ok"], help: "Messages from agents, by result")
                    switch event {
                    case .media(let bytes):
                        let dropped = session.fromAgent(bytes)
                        if dropped > 0 { metrics.increment(MetricNames.agentAudioDropped, by: Double(dropped), help: "Agent audio dropped for a full playout queue (samples)") }
                    case .mark(let name):
                        session.writeMarks(session.playback.withLock { $0.playout.enqueue(mark: name) })
                    case .clear:
                        session.writeMarks(session.playback.withLock { $0.playout.clear() })
                        call.clear()
                    case .checkpoint(let state):
                        call.save(json: state)
                        link.savedState = state
                    case .other:
                        metrics.increment(MetricNames.agentMessages, ["result": "unknown_event"], help: "Messages from agents, by result")
                    }
                case .ping:
                    session.send(AgentSocket.control(.pong, frame.unmaskedData))
                case .pong:
                    session.lastPong.store(ContinuousClock.now.millis, ordering: .relaxed)
                case .connectionClose:
                    session.send(AgentSocket.control(.connectionClose, frame.unmaskedData))  // echo its close: the handshake's end
                    return .hungUp
                default:
                    metrics.increment(MetricNames.agentMessages, ["result": "binary_frame"], help: "Messages from agents, by result")
                    return .failed("binary_frame")
                }
            }
            return Task.isCancelled ? .closedByCall : .failed("socket_lost")
        } catch {
            return Task.isCancelled ? .closedByCall : .failed(error is NIOWebSocketError ? "protocol_error" : "socket_lost")
        }
    }

    /// Every 20 ms while the agent has audio queued: the next frame to the caller, then the marks whose audio
    /// has all been sent. Idle, it waits for the agent's next audio, which `fromAgent` plays at once.
    private func play(session: AgentSessionIO) async {
        let clock = ContinuousClock()
        var next = clock.now
        var wakes = session.wakes.makeAsyncIterator()
        while !Task.isCancelled {
            guard session.tick() else {
                guard await wakes.next() != nil else { return }
                next = clock.now + .milliseconds(20)  // `fromAgent` just played a frame: the next is due 20 ms on
                do { try await Task.sleep(until: next, clock: clock) } catch { return }
                continue
            }
            next += .milliseconds(20)
            if clock.now - next > .milliseconds(100) { next = clock.now }  // fell behind (a stall): no burst to catch up
            do { try await Task.sleep(until: next, clock: clock) } catch { return }
        }
    }

    /// Pings the agent; an agent that answers none for `pongTimeout` is hung, and fails.
    private func keepAlive(session: AgentSessionIO) async -> AgentSupervisor.SessionEnd? {
        while !Task.isCancelled {
            do { try await Task.sleep(for: settings.pingInterval) } catch { return nil }
            if ContinuousClock.now.millis - session.lastPong.load(ordering: .relaxed) > settings.pongTimeout.milliseconds {
                metrics.increment(MetricNames.agentMessages, ["result": "ping_timeout"], help: "Messages from agents, by result")
                return .failed("ping_timeout")
            }
            session.send(AgentSocket.control(.ping, ByteBuffer(string: "sb")))
        }
        return nil
    }
}

extension AgentSupervisor.SessionEnd {
    var label: String {
        switch self {
        case .hungUp: return "hung_up"
        case .failed(let why): return why
        case .closedByCall: return "closed_by_call"
        }
    }
}

extension ContinuousClock.Instant {
    /// Milliseconds on this clock since an arbitrary origin, for machines that take time as a number.
    var millis: Int64 { (self - ContinuousClock.Instant.origin).milliseconds }
    private static let origin = ContinuousClock.now
}
