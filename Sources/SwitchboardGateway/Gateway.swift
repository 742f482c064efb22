import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import Synchronization
import WSCore

/// The gateway: takes calls in from Twilio Media Streams and from its browser page, places them through the
/// routers, and carries each caller's leg for the whole call, following the call from worker to worker
/// (docs/gateway.md). Stateless apart from its live legs.
///
/// Each leg runs in its socket's task (the HTTP server's), as a `LegMachine` under the leg's lock: events in,
/// actions run after the lock. One clock task plays every live leg's next frame every 20 ms. SIGTERM drains:
/// new streams are refused, live legs go on until they end or the drain deadline.
public final class Gateway: Service, Sendable {
    public let configuration: GatewayConfiguration
    public let nats: NATSConnection
    public let metrics: MetricsRegistry
    /// Unix time for tokens and the legs' media clocks: `configuration.wallClock`.
    let wallClock: WallClock
    /// Where what the legs show goes (each call's timeline), or nil when timelines are off.
    public let timeline: TimelineWriter?
    let logger: Logger

    private struct State {
        var legs: [ObjectIdentifier: Leg] = [:]
        var draining = false
    }
    private let state = Mutex(State())

    /// Where this gateway's spans go (each leg's call, and its route); nil: tracing is off.
    public let tracer: Tracer?
    /// The one thread that writes recordings (when this gateway records): a stalled volume holds it, never a thread
    /// of the concurrency pool that the calls' audio runs on.
    private let recordingThread: NIOThreadPool?

    /// `redis`: where calls' timelines are written (nil: not written).
    public init(configuration: GatewayConfiguration, nats: NATSConnection, redis: RedisClient? = nil, metrics: MetricsRegistry = MetricsRegistry(),
                tracer: Tracer? = nil, logger: Logger = Logger(label: "switchboard.gateway")) {
        self.configuration = configuration
        self.tracer = tracer
        self.nats = nats
        self.metrics = metrics
        wallClock = configuration.wallClock
        let logger = logger.with([LogKey.gatewayID: "\(configuration.id)"])
        self.logger = logger
        timeline = redis.map { redis in
            TimelineWriter(store: TimelineStore(redis: redis, keys: configuration.keys, cap: configuration.timelineCap,
                                                retention: configuration.timelineRetention),
                           metrics: metrics, logger: logger)
        }
        recordingThread = configuration.recording.map { _ in NIOThreadPool(numberOfThreads: 1) }
        recordingThread?.start()
    }

    /// Live legs, by kind.
    public var legCounts: [LegKind: Int] {
        state.withLock { state in
            var counts = Dictionary(uniqueKeysWithValues: LegKind.allCases.map { ($0, 0) })
            for leg in state.legs.values { counts[leg.kind, default: 0] += 1 }
            return counts
        }
    }

    /// The calls of the live legs that are placed.
    public var liveCalls: [String] { state.withLock { $0.legs.values.compactMap(\.callID) } }

    public var isDraining: Bool { state.withLock { $0.draining } }
    /// Takes new streams: connected to NATS and not draining.
    public var isReady: Bool { nats.isConnected && !isDraining }

    public func updateGauges() {
        for (kind, count) in legCounts {
            metrics.set(GatewayMetrics.legs, ["kind": kind.rawValue], to: Double(count), help: "Live caller legs")
        }
    }

    // MARK: - Run

    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.playoutClock() }
            if let timeline { group.addTask { await timeline.run() } }
            if let options = configuration.recording { group.addTask { await self.recordingLoop(options) } }
            if let tracer { group.addTask { await tracer.run() } }
            try? await gracefulShutdown()
            await drain()
            group.cancelAll()
        }
        try? await recordingThread?.shutdownGracefully()  // it fails only if already shut down
    }

    /// Stops taking new streams; waits for live legs to end by themselves until the deadline, then ends the
    /// calls still on and closes their streams.
    public func drain() async {
        let live = state.withLock { state in
            state.draining = true
            return state.legs.count
        }
        logger.notice("draining: no new streams", metadata: ["legs": "\(live)", "deadline_s": "\(configuration.drainDeadline.components.seconds)"])
        let deadline = ContinuousClock.now + configuration.drainDeadline
        while ContinuousClock.now < deadline, state.withLock({ !$0.legs.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(100))
        }
        let left = state.withLock { Array($0.legs.values) }
        if !left.isEmpty { logger.warning("drain deadline passed: ending the calls still on", metadata: ["legs": "\(left.count)"]) }
        for leg in left { handle(leg, .deadline) }
        // Their closes are written within 2 s.
        let closing = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < closing, state.withLock({ !$0.legs.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - Legs

    /// Why a new stream is refused, or nil when it is taken (and counted as live).
    func admit(_ leg: Leg) -> String? {
        let refusal: String? = state.withLock { state in
            if state.draining { return "draining" }
            if state.legs.count >= configuration.maxLegs { return "full" }
            state.legs[ObjectIdentifier(leg)] = leg
            return nil
        }
        if let refusal { refuse(refusal) }
        return refusal
    }

    func refuse(_ reason: String) {
        metrics.increment(GatewayMetrics.refusals, ["reason": reason], help: "Streams and requests the gateway refused, by reason")
    }

    /// Serves one caller's socket until the leg ends: reads the caller, writes the queue toward it, and runs the
    /// leg's jobs (its route), all in one task group. `cutOff` closes the connection at once; it is called when
    /// the leg's close could not be written (a caller that stopped reading).
    func serve(kind: LegKind, tenant: String, inbound: WebSocketInboundStream,
               outbound: WebSocketOutboundWriter, logger baseLogger: Logger, cutOff: @Sendable () -> Void) async {
        let leg = Leg(kind: kind, tenant: tenant, gatewayID: configuration.id, maxQueuedFrames: configuration.maxQueuedFrames,
                      slowReaderPatience: configuration.slowReaderPatience, startedUnixMillis: wallClock.unixMillis,
                      logger: baseLogger.with([LogKey.tenant: "\(tenant)", "leg": "\(kind.rawValue)"]),
                      span: tracer.start("call", kind: .server, parent: nil,
                                         attributes: ["switchboard.tenant": tenant, "switchboard.leg": kind.rawValue]))
        if let refusal = admit(leg) {
            let error = SwitchboardError(.unavailable, refusal == "draining" ? "this gateway is draining" : "this gateway is full")
            if kind == .browser { try? await outbound.write(.text(BrowserStream.error(error))) }
            try? await outbound.close(.init(codeNumber: 1013), reason: error.message)
            return
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.write(leg, to: outbound) }
            group.addTask {
                await self.read(leg, from: inbound)
                self.handle(leg, .hungUp)  // the socket ended (after a close this changes nothing)
            }
            if kind == .browser {
                note(leg, "answered", at: leg.startedUnixMillis, ["kind": "browser"])
                perform(leg, [.route])
            }
            for await job in leg.jobs { group.addTask(operation: job) }
            group.cancelAll()
        }
        if !leg.state.withLock({ $0.closeWritten }) { cutOff() }
        observe(leg, leg.state.withLock { $0.observer.finish() })
        leg.span?.end()
        if let recording = leg.state.withLock({ state -> Recording? in defer { state.recording = nil }; return state.recording }) {
            await finish(leg, recording)
        }
        await disconnect(leg)
        state.withLock { _ = $0.legs.removeValue(forKey: ObjectIdentifier(leg)) }
        // The leg's audio toward its caller, in the counters and in one line with its call id.
        let (stats, jitter) = leg.state.withLock { ($0.jitter.stats, $0.jitter.jitterMillis) }
        metrics.increment(GatewayMetrics.concealed, by: Double(stats.concealed), help: "Frames toward callers made up by Opus concealment")
        metrics.increment(GatewayMetrics.lost, by: Double(stats.lost), help: "The agent's packets that never reached the gateway")
        leg.logger.info("leg closed", metadata: [
            LogKey.callID: "\(leg.callID ?? "-")", "played": "\(stats.played)", "concealed": "\(stats.concealed)",
            "lost": "\(stats.lost)", "late": "\(stats.late)", "dropped": "\(stats.dropped)",
            "queue_dropped": "\(leg.state.withLock { $0.reader.dropped })",
            "jitter_ms": "\(String(format: "%.1f", jitter))", "seconds": "\((ContinuousClock.now - leg.started).components.seconds)",
        ])
    }

    /// Feeds `event` to the leg's machine and runs what it decides.
    func handle(_ leg: Leg, _ event: LegMachine.Event) {
        perform(leg, leg.state.withLock { $0.machine.handle(event) })
    }

    private func perform(_ leg: Leg, _ actions: [LegMachine.Action]) {
        for action in actions {
            switch action {
            case .route:
                leg.run { await self.route(leg) }
            case .forward, .dropEarly:
                break  // the reader acts on these itself: they carry the caller's audio
            case .connect:
                let callID = leg.callID ?? "-"
                leg.logger.info("call placed", metadata: [LogKey.callID: "\(callID)"])
                if leg.kind == .browser { leg.send(.text(BrowserStream.started(callID: callID))) }
            case .endCall(let reason):
                let call = leg.state.withLock { $0.call }
                do {
                    try call?.leg.end(reason)
                } catch {
                    // The worker ends the call anyway once the caller's audio stops (its media timeout).
                    leg.logger.warning("could not ask for the call's end", metadata: [LogKey.error: "\(error)"])
                }
            case .closeEnded(let reason):
                note(leg, "closed", ["reason": reason.rawValue])
                leg.span?.set("switchboard.end_reason", reason.rawValue)
                if leg.kind == .browser { leg.send(.text(BrowserStream.ended(reason))) }
                leg.close(.normalClosure, "call ended: \(reason.rawValue)")
                metrics.increment(GatewayMetrics.legsTotal, ["kind": leg.kind.rawValue, "result": reason.rawValue], help: "Caller legs, by how they ended")
            case .closeWithError(let error):
                leg.logger.warning("leg closed with an error", metadata: [LogKey.error: "\(error)"])
                leg.span?.fail("\(error.code.rawValue): \(error.message)")
                note(leg, "closed", ["error": error.code.rawValue])
                if leg.kind == .browser { leg.send(.text(BrowserStream.error(error))) }
                leg.close(error.code == .badMessage || error.code == .tooLarge ? .protocolError : .unexpectedServerError, error.message)
                metrics.increment(GatewayMetrics.legsTotal, ["kind": leg.kind.rawValue, "result": error.code.rawValue], help: "Caller legs, by how they ended")
            }
        }
    }

    /// Drops the leg's hold on its call: the audio subscription, the call's own connection (once what it sent,
    /// an end request say, has reached the server, or half a second passed).
    private func disconnect(_ leg: Leg) async {
        guard let call = leg.state.withLock({ state -> Leg.Call? in defer { state.call = nil }; return state.call }) else { return }
        call.audioOut.unsubscribe()
        guard call.owned else { return }
        try? await call.nats.flush(timeout: .milliseconds(500))  // a flush that fails leaves nothing more to wait for
        call.nats.close()
    }

    // MARK: - The caller's socket

    private func write(_ leg: Leg, to outbound: WebSocketOutboundWriter) async {
        for await message in leg.outgoing {
            do {
                switch message {
                case .text(let text):
                    try await outbound.write(.text(text))
                    leg.wrote()
                case .binary(let bytes):
                    try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                    leg.wrote()
                case .close(let code, let reason):
                    try await outbound.close(code, reason: String(reason.utf8.prefix(120)) ?? "")
                    leg.state.withLock { $0.closeWritten = true }
                }
            } catch {
                break
            }
        }
        leg.finish()
    }

    private func read(_ leg: Leg, from inbound: WebSocketInboundStream) async {
        // Whole messages up to twice what the decoders take: they refuse (and count) the rest.
        let maxSize = 2 * (leg.kind == .twilio ? TwilioStream.maxMessageBytes : max(BrowserStream.frameBytes, BrowserStream.maxTextBytes))
        do {
            for try await message in inbound.messages(maxSize: maxSize) {
                let flooding = leg.state.withLock { !$0.flood.take(now: .now) }
                if flooding {
                    badInput(leg, SwitchboardError(.rateLimited, "more messages than a caller sends"), reason: "flood")
                    return
                }
                switch (leg.kind, message) {
                case (.twilio, .text(let text)):
                    do {
                        twilio(leg, try TwilioStream.decode(Array(text.utf8)))
                    } catch {
                        badInput(leg, error, reason: error.code.rawValue)
                    }
                case (.browser, .binary(let buffer)):
                    do {
                        let samples = try BrowserStream.audio(Array(buffer: buffer))
                        if forward(leg) { toCall(leg, samples) }
                    } catch {
                        badInput(leg, error, reason: error.code.rawValue)
                    }
                case (.browser, .text(let text)):
                    do {
                        switch try BrowserStream.decode(Array(text.utf8)) {
                        case .dtmf(let digit): if forward(leg) { toCall(leg, digit: digit) }
                        case .hangup: handle(leg, .hungUp)
                        }
                    } catch {
                        badInput(leg, error, reason: error.code.rawValue)
                    }
                case (.twilio, .binary):
                    badInput(leg, SwitchboardError(.badMessage, "binary message on a media stream"), reason: "binary")
                }
                if !leg.isOpen { return }
            }

        } catch {
            // Over the size limit, or not WebSocket: the socket is done for.
            badInput(leg, SwitchboardError(.badMessage, "websocket: \(error)"), reason: "protocol")
        }
    }

    private func badInput(_ leg: Leg, _ error: SwitchboardError, reason: String) {
        metrics.increment(MetricNames.badMessages, ["kind": "\(leg.kind.rawValue)_stream", "code": reason])
        handle(leg, .refused(error))
    }

    private func twilio(_ leg: Leg, _ event: TwilioStream.Event) {
        switch event {
        case .connected, .mark:
            break
        case .start(let start):
            leg.state.withLock { state in
                state.quotedStreamSid = JSONText.quoted(start.streamSid)
                state.metadata["twilio_call_sid"] = start.callSid
                for (name, value) in start.customParameters where state.metadata.count < 16 && name != "token" {
                    state.metadata[name] = value
                }
                state.logger = state.logger.with(["twilio_call_sid": "\(start.callSid)"])
            }
            note(leg, "answered", ["kind": "twilio", "twilio_call_sid": String(start.callSid.prefix(64))])
            input(leg, .started)
        case .media(_, let payload):
            guard forward(leg) else { return }
            toCall(leg, MuLaw.decode(payload))
        case .dtmf(let digit):
            if forward(leg) { toCall(leg, digit: digit) }
        case .stop:
            handle(leg, .hungUp)
        }
    }

    /// Whether the caller's audio goes on to the call now (counted when it is dropped).
    private func forward(_ leg: Leg) -> Bool {
        let actions = input(leg, .media)
        if actions == [.forward] { return true }
        if actions == [.dropEarly] {
            metrics.increment(GatewayMetrics.dropped, ["direction": "in", "reason": "not_placed"], help: "Caller or agent frames dropped, by why")
        }
        return false
    }

    /// Feeds one of the caller's messages to the leg's machine; one out of order (media before the stream's start,
    /// a second start) is refused and counted as bad input. Returns what the machine decided.
    @discardableResult
    private func input(_ leg: Leg, _ event: LegMachine.Event) -> [LegMachine.Action] {
        let actions = leg.state.withLock { $0.machine.handle(event) }
        for case .closeWithError(let error) in actions {
            metrics.increment(MetricNames.badMessages, ["kind": "\(leg.kind.rawValue)_stream", "code": error.code.rawValue])
        }
        if actions != [.forward] && actions != [.dropEarly] { perform(leg, actions) }
        return actions
    }

    // MARK: - Audio

    /// The caller's samples toward the call: whole 20 ms frames, Opus-encoded at the caller's rate (Opus
    /// carries any of its rates; the worker decodes at its own), numbered, sent to the worker holding the call.
    private func toCall(_ leg: Leg, _ samples: [Int16]) {
        let began = ContinuousClock.now
        let at = leg.mediaMillis(began)
        let (packets, call, events): ([[UInt8]], Leg.Call?, [TimelineEvent]) = leg.state.withLock { state in
            state.pending += samples
            var packets: [[UInt8]] = []
            var events: [TimelineEvent] = []
            let frame = leg.kind.frameSamples
            while state.pending.count >= frame {
                let pcm = Array(state.pending.prefix(frame))
                state.pending.removeFirst(frame)
                events += state.observer.caller(rms: SignalAnalysis.rms(pcm), atMillis: at)
                state.recording?.caller(pcm, at: began)
                do {
                    if state.encoder == nil { state.encoder = try OpusEncoder(sampleRate: leg.kind.sampleRate) }
                    let packet = MediaPacket(sequence: state.sequence, timestamp: state.sequence &* 960, payload: try state.encoder!.encode(pcm))
                    state.sequence &+= 1
                    packets.append(packet.encoded())
                } catch {
                    state.logger.error("cannot encode the caller's audio", metadata: [LogKey.error: "\(error)"])
                }
            }
            return (packets, state.call, events)
        }
        observe(leg, events)
        guard !packets.isEmpty, let call else { return }
        metrics.observe(GatewayMetrics.transcodeSeconds, ["direction": "in"], (ContinuousClock.now - began).microseconds / 1e6 / Double(packets.count),
                        buckets: GatewayMetrics.transcodeBuckets, help: "Time to transcode one 20 ms frame, by direction")
        for packet in packets {
            do {
                try call.leg.send(packet)
            } catch {
                metrics.increment(GatewayMetrics.dropped, ["direction": "in", "reason": "bus"], help: "Caller or agent frames dropped, by why")
            }
        }
    }

    private func toCall(_ leg: Leg, digit: Character) {
        let (call, packet) = leg.state.withLock { ($0.call, MediaPacket.dtmf(digit, sequence: $0.sequence, timestamp: $0.sequence &* 960)) }
        note(leg, "dtmf", ["digit": String(digit)])
        try? call?.leg.send(packet.encoded())  // a key lost to a broken bus is lost like its audio
    }

    /// A packet from the call toward the caller (on NATS's delivery thread).
    private func fromCall(_ leg: Leg, _ bytes: [UInt8]) {
        let packet: MediaPacket
        do {
            packet = try MediaPacket.decode(bytes)
        } catch {
            metrics.increment(MetricNames.badMessages, ["kind": "media", "code": error.code.rawValue])
            return
        }
        switch packet.kind {
        case .audio:
            let now = ContinuousClock.now
            let (result, jitter) = leg.state.withLock { state in
                let result = state.jitter.insert(packet, arrivalMillis: Double((now - leg.started).milliseconds))
                return (result, state.jitter.jitterMillis)
            }
            metrics.observe(GatewayMetrics.jitterSeconds, [:], jitter / 1000, buckets: GatewayMetrics.jitterBuckets,
                            help: "Arrival jitter of the agent's audio (RFC 3550), at each packet")
            switch result {
            case .late: metrics.increment(GatewayMetrics.dropped, ["direction": "out", "reason": "late"], help: "Caller or agent frames dropped, by why")
            case .trimmed(let n): metrics.increment(GatewayMetrics.dropped, ["direction": "out", "reason": "backlog"], by: Double(n), help: "Caller or agent frames dropped, by why")
            case .queued, .duplicate: break
            }
        case .clear:
            leg.state.withLock { $0.jitter.clear() }
            note(leg, "clear")
            leg.send(.text(leg.kind == .twilio ? TwilioStream.clear(quotedStreamSid: leg.state.withLock { $0.quotedStreamSid }) : BrowserStream.clear))
        case .dtmf:
            break  // keys go toward the call only
        }
    }

    /// Every 20 ms: each live leg's next frame toward its caller.
    private func playoutClock() async {
        let clock = ContinuousClock()
        var next = clock.now
        while !Task.isCancelled {
            next += .milliseconds(20)
            if clock.now - next > .milliseconds(100) { next = clock.now }  // fell behind (a stall): no burst
            do { try await Task.sleep(until: next, clock: clock) } catch { return }
            for leg in state.withLock({ Array($0.legs.values) }) { play(leg, tick: next) }
        }
    }

    /// Plays the leg's frame of the tick due at `tick`: a clock catching up after a short stall plays its late
    /// ticks back to back, each frame in its own place on the media clock (the caller's player queues them, so
    /// the caller hears no gap, and neither does the recording); ticks it gave up on are a gap. The recording and
    /// the timeline take what the caller hears: a frame dropped for a full queue (a caller not reading) is silence.
    private func play(_ leg: Leg, tick: ContinuousClock.Instant) {
        let began = ContinuousClock.now
        let at = leg.mediaMillis(tick)
        // One lock per frame: decode, queue toward the caller, and record what the caller hears (silence when
        // nothing plays, or when the frame was dropped for a full queue).
        let (transcoded, full, events) = leg.state.withLock { state -> (ContinuousClock.Instant?, SlowReader.Verdict?, [TimelineEvent]) in
            guard state.machine.phase == .live else { return (nil, nil, []) }
            var heard: [Int16]?
            do {
                switch state.jitter.tick() {
                case .nothing:
                    break
                case .packet(let packet):
                    if state.decoder == nil { state.decoder = try OpusDecoder(sampleRate: leg.kind.sampleRate) }
                    heard = try state.decoder!.decode(packet.payload)
                case .conceal:
                    heard = try state.decoder?.decodeMissing()
                }
            } catch {
                heard = nil  // a packet the decoder refuses: nothing plays for it
            }
            var transcoded: ContinuousClock.Instant?
            var full: SlowReader.Verdict?
            if let samples = heard {
                let message: Outgoing = switch leg.kind {
                case .twilio: .text(TwilioStream.media(quotedStreamSid: state.quotedStreamSid, payload: MuLaw.encode(samples)))
                case .browser: .binary(BrowserStream.encode(samples))
                }
                transcoded = .now
                if !leg.send(message) {
                    full = state.reader.queueFull(at: .now)
                    heard = nil
                }
            }
            state.recording?.agent(heard, at: tick)
            return (transcoded, full, state.observer.agent(rms: heard.map(SignalAnalysis.rms) ?? 0, atMillis: at, stats: state.jitter.stats,
                                                           jitterMillis: state.jitter.jitterMillis))
        }
        observe(leg, events)
        if let transcoded {
            metrics.observe(GatewayMetrics.transcodeSeconds, ["direction": "out"], (transcoded - began).microseconds / 1e6,
                            buckets: GatewayMetrics.transcodeBuckets, help: "Time to transcode one 20 ms frame, by direction")
        }
        switch full {
        case .drop?:
            metrics.increment(GatewayMetrics.queueDropped, help: "Frames toward callers dropped because the caller's queue was full")
        case .slowReader?:
            badInput(leg, SwitchboardError(.slowConsumer, "the caller's socket took nothing for \(configuration.slowReaderPatience)"),
                     reason: "slow_reader")
        case nil:
            break
        }
    }

    /// Notes one event of this gateway on the leg's call's timeline, at `at` (now, on the leg's media clock).
    private func note(_ leg: Leg, _ type: String, at: Int64? = nil, _ attributes: [String: String] = [:]) {
        observe(leg, [TimelineEvent(atMillis: at ?? leg.mediaMillis(), source: .gateway, member: configuration.id, type: type,
                                    attributes: attributes)])
    }

    /// Notes `events` on the leg's call's timeline; before the call is placed, holds them (a few) until it is.
    private func observe(_ leg: Leg, _ events: [TimelineEvent]) {
        guard let timeline, !events.isEmpty else { return }
        let callID = leg.state.withLock { state -> String? in
            guard let callID = state.call?.placement.callID else {
                state.earlyEvents += events.prefix(max(0, Leg.maxEarlyEvents - state.earlyEvents.count))
                return nil
            }
            return callID
        }
        if let callID { for event in events { timeline.record(callID, event) } }
    }

    // MARK: - Routing

    /// Asks a router for a worker, and connects the leg to the call.
    private func route(_ leg: Leg) async {
        let metadata = leg.state.withLock { $0.metadata }
        let request = RouteRequest(tenant: leg.tenant, region: configuration.region, zone: configuration.zone,
                                   locality: .preferred, metadata: metadata)
        var headers = NATSHeaders()
        if let key = configuration.tenantKeys[leg.tenant] { headers["Authorization"] = "Bearer \(key)" }
        let span = tracer.start("route", kind: .client, parent: leg.span?.context)
        defer { span?.end() }
        if let context = span?.context { headers["traceparent"] = context.traceparent }
        do {
            let message = try await nats.request(configuration.subjects.route, payload: request.encoded(), headers: headers,
                                                 timeout: configuration.routeTimeout)
            let reply = try RouteReply.decode(message.payload)
            guard let placement = reply.call else {
                let body = reply.error ?? ErrorBody(code: "internal_error", message: "empty route reply")
                throw SwitchboardError(.init(rawValue: body.code), body.message)
            }
            span?.set("switchboard.call_id", placement.callID)
            leg.span?.set("switchboard.call_id", placement.callID)
            try await connect(leg, placement)
        } catch {
            let failure = (error as? SwitchboardError) ?? SwitchboardError(.unavailable, "\(error)")
            span?.fail("\(failure.code.rawValue): \(failure.message)")
            refuse(failure.code.rawValue)
            leg.logger.warning("call not placed", metadata: [LogKey.error: "\(failure)"])
            handle(leg, .routeFailed(failure))
        }
    }

    private func connect(_ leg: Leg, _ placement: Placement) async throws {
        let media = try await nats.connection(for: placement, name: "gateway-\(configuration.id)-\(placement.callID)")
        let owned = media !== nats
        do {
            let audioOut = try media.subscribe(to: placement.media.out) { [weak leg] message in
                if let leg { self.fromCall(leg, message.payload) }
            }
            let callLeg = try CallLeg(media, placement: placement, subjects: configuration.subjects) { [weak leg] event in
                guard let leg else { return }
                switch event.event {
                case .ended: self.handle(leg, .callEnded(event.reason.flatMap(EndReason.init(rawValue:)) ?? .handler))
                case .migrating, .migrated, .resumed:
                    leg.logger.info("call \(event.event.rawValue)", metadata: [LogKey.callID: "\(event.callID)", LogKey.workerID: "\(event.workerID)"])
                case .placed: break
                }
            }
            let recording = placement.record == true ? configuration.recording.flatMap { startRecording(leg, placement.callID, $0) } : nil
            let early = leg.state.withLock { state in
                state.call = Leg.Call(placement: placement, nats: media, owned: owned, leg: callLeg, audioOut: audioOut)
                state.recording = recording
                state.logger = state.logger.with([LogKey.callID: "\(placement.callID)"])
                defer { state.earlyEvents.removeAll() }
                return state.earlyEvents
            }
            for event in early { timeline?.record(placement.callID, event) }
            if let recording { note(leg, "recording_started", at: recording.info.withLock { $0.startedAtMillis }, ["bitrate": "\(recording.info.withLock { $0.bitrate })"]) }
        } catch {
            if owned { media.close() }
            throw error
        }
        handle(leg, .routed)
    }
}

extension Leg {
    var isOpen: Bool { state.withLock { $0.machine.phase != .closed } }
}


// MARK: - Recording

extension Gateway {
    /// The call's recording (its files are opened by its first flush); nil (counted, logged: the call goes on
    /// unrecorded) when its encoder cannot be made.
    fileprivate func startRecording(_ leg: Leg, _ callID: String, _ options: RecordingOptions) -> Recording? {
        let now = ContinuousClock.now
        do {
            let recording = try Recording(callID: callID, tenant: leg.tenant, gateway: configuration.id, sampleRate: leg.kind.sampleRate,
                                          startedAt: now, startedAtMillis: leg.mediaMillis(now), options: options)
            metrics.increment(GatewayMetrics.recordings, ["result": "started"], help: "Call recordings, by what became of them")
            return recording
        } catch {
            metrics.increment(GatewayMetrics.recordings, ["result": "failed"], help: "Call recordings, by what became of them")
            leg.logger.error("the call is not recorded", metadata: [LogKey.callID: "\(callID)", LogKey.error: "\(error)"])
            return nil
        }
    }

    /// The leg is over: the rest of its recording written and closed, and said on the call's timeline.
    func finish(_ leg: Leg, _ recording: Recording) async {
        account(leg, await onRecordingThread { recording.flush(final: true) })
        let info = recording.info.withLock { $0 }
        note(leg, "recording_stopped", ["duration_ms": "\(info.durationMillis)", "bytes": "\(info.bytes)", "capped": "\(info.capped)"])
        metrics.increment(GatewayMetrics.recordings, ["result": info.capped ? "capped" : "complete"], help: "Call recordings, by what became of them")
    }

    private func account(_ leg: Leg, _ flushed: Recording.Flushed) {
        metrics.increment(GatewayMetrics.recordingBytes, by: Double(flushed.bytes), help: "Bytes of recordings written")
        if flushed.capped {
            note(leg, "recording_capped", ["max_s": "\(configuration.recording?.maxDuration.components.seconds ?? 0)"])
            leg.logger.warning("the recording reached its longest and stopped; the call goes on")
        }
        if let failure = flushed.failure {
            metrics.increment(GatewayMetrics.recordings, ["result": "failed"], help: "Call recordings, by what became of them")
            leg.logger.error("the recording stopped: its files cannot be written", metadata: [LogKey.error: "\(failure)"])
        }
    }

    /// Runs blocking file I/O on the recording thread; inline once that has stopped (the gateway is going).
    private func onRecordingThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        // runIfActive throws only when the thread has stopped: `work` itself cannot throw.
        if let thread = recordingThread, let result = try? await thread.runIfActive(work) { return result }
        return work()
    }

    /// Every 250 ms, what each recording has ready is encoded and written (on the recording thread, off the
    /// playout clock); every ten minutes, recordings past their retention are deleted.
    func recordingLoop(_ options: RecordingOptions) async {
        var lastSweep: ContinuousClock.Instant?
        while !Task.isCancelled {
            if lastSweep.map({ ContinuousClock.now - $0 >= .seconds(600) }) ?? true {
                lastSweep = .now
                let now = wallClock.unixMillis
                let removed = await onRecordingThread { options.sweep(nowMillis: now) }
                if removed > 0 {
                    metrics.increment(GatewayMetrics.recordingsSwept, by: Double(removed), help: "Recordings deleted at the end of their retention")
                    logger.info("recordings past their retention deleted", metadata: ["calls": "\(removed)"])
                }
            }
            let live = state.withLock { Array($0.legs.values) }.compactMap { leg in leg.state.withLock { $0.recording }.map { (leg, $0) } }
            metrics.set(GatewayMetrics.recordingsLive, to: Double(live.count), help: "Calls being recorded")
            let flushed = await onRecordingThread { live.map { $0.1.flush() } }
            for ((leg, _), result) in zip(live, flushed) { account(leg, result) }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}
