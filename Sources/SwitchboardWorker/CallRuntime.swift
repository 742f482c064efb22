import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import Synchronization

extension Worker {
    typealias CallAction = CallLifecycle.Action

    /// Runs one call said yes to, until its slot is free: carries out, in order, the actions of its lifecycle
    /// that need I/O (its records in Redis, a hold's checkpoint, the tasks that carry its audio).
    ///
    /// Cancelled (the worker torn down rather than stopped): an end already decided (`stop()` just before) is
    /// still carried out and written; a call with none is left as a crash would leave it, unended, for the routers
    /// to resume elsewhere.
    func runCall(_ callID: String) async {
        guard let running = state.withLock({ $0.calls[callID] }) else { return }
        let log = logger.with([LogKey.callID: "\(callID)", LogKey.tenant: "\(running.tenant)"])
        await withDiscardingTaskGroup { tasks in
            var honorCancellation = true
            while true {
                switch await running.actions.next(honoringCancellation: honorCancellation) {
                case .action(.startTasks):
                    tasks.addTask { await self.carry(running, log: log) }
                case .action(let action):
                    await perform(action, running, log: log)
                case .finished:
                    return
                case .cancelled:
                    guard state.withLock({ $0.calls[callID]?.lifecycle.isEnding == true }) else { return }
                    honorCancellation = false  // its tasks stop (cancelled too), then its end is written
                }
            }
        }
    }

    /// Feeds one event to a call's lifecycle under the lock and carries out what it decides after it; false
    /// when this worker holds no such call. `replyTo`: the order the event came with (hold, unhold, release).
    @discardableResult
    func handle(_ callID: String, _ event: CallLifecycle.Event, replyTo message: NATSMessage? = nil) -> Bool {
        let now = ContinuousClock.now
        let decided = state.withLock { state -> (Running, [CallAction], wasFull: Bool)? in
            guard var call = state.calls[callID] else { return nil }
            let actions = call.lifecycle.on(event, now: now)
            if let message, actions.contains(.hold) { call.pendingReply = message }  // answered when written
            var wasFull = false
            if actions.contains(where: \.frees) {
                wasFull = state.slots.activeCalls >= state.slots.capacity
                state.slots.end(callID)
                state.calls[callID] = nil
            } else {
                state.calls[callID] = call
            }
            return (call, actions, wasFull)
        }
        guard let (call, actions, wasFull) = decided else { return false }
        dispatch(actions, call, replyTo: message, wasFull: wasFull)
        return true
    }

    /// Carries out what needs no waiting at once; queues the rest for the call's task (`runCall`).
    func dispatch(_ actions: [CallAction], _ call: Running, replyTo message: NATSMessage? = nil, wasFull: Bool = false) {
        let callID = call.callID
        for action in actions {
            switch action {
            case .claim, .recordStart, .startTasks, .hold, .checkOwnership, .recordEnd, .forget:
                call.actions.yield(action)
            case .answerAccepted:
                let acceptSeq = state.withLock { $0.slots.accepted }
                if let reply = call.pendingReply {
                    answer(reply, .accept(workerID: configuration.id, version: configuration.version, region: configuration.region,
                                          acceptSeq: acceptSeq))
                }
                metrics.increment(MetricNames.offersAnswered, ["result": "accepted"], help: "Offers answered by result")
                heartbeatAfterAccept()
            case .answerRefused(let reason):
                if let reply = call.pendingReply {
                    answer(reply, .refuse(reason, workerID: configuration.id, version: configuration.version, region: configuration.region))
                }
                metrics.increment(MetricNames.offersAnswered, ["result": "refused_\(reason.rawValue)"], help: "Offers answered by result")
            case .observeStart(let took):
                metrics.observe(MetricNames.callStartSeconds, [:], took.microseconds / 1e6, buckets: MetricNames.latencyBuckets,
                                help: "Time from a call's audio being carried to its handler (agent) having started")
                note(callID, "agent_started", ["start_ms": "\(took.milliseconds)"])
            case .unhold:
                call.session.unhold()
            case .silence:
                call.session.silence()  // at once: the call's tasks may take a moment to wind down
                logger.notice("another worker holds the call now: letting go of it", metadata: [LogKey.callID: "\(callID)"])
            case .stopTasks:
                call.stop.yield()
            case .keepEndForRepair(let reason, let epoch):
                let dropped = state.withLock {
                    $0.repair.endFailed(.init(callID: callID, tenant: call.tenant, epoch: epoch, reason: reason))
                }
                if let dropped {
                    logger.error("too many call ends waiting for Redis: one is left to its record's expiry",
                                 metadata: ["dropped_call_id": "\(dropped.callID)"])
                }
            case .publishEnded(let reason):
                publishEvent(CallEvent(callID: callID, event: .ended, workerID: configuration.id, reason: reason.rawValue,
                                       atMillis: wallClock.unixMillis))
            case .answerEndRequests(let reason):
                let ended = Array(#"{"v":1,"ended":true,"reason":"\#(reason.rawValue)"}"#.utf8)
                for request in call.waitingEnds.all { try? nats.reply(to: request, payload: ended) }  // a lost reply: the asker times out and reads the record
            case .replyOK:
                if let reply = message ?? call.pendingReply { self.reply(to: reply) }
            case .replyHeld(let checkpoint):
                if let reply = message ?? call.pendingReply { self.reply(to: reply, checkpoint: checkpoint) }
            case .replyError(let error):
                if let reply = message ?? call.pendingReply { self.reply(to: reply, error: error) }
            case .free(let reason):
                free(call, reason: reason, wasFull: wasFull)
            }
        }
    }

    /// The call's slot is free (taken out of the state with the decision): what is left of it goes.
    private func free(_ call: Running, reason: EndReason?, wasFull: Bool) {
        call.media.unsubscribe()
        call.endRequests.unsubscribe()
        call.actions.finish()
        call.stop.finish()
        if let cpu = handler.finish(callID: call.callID), cpu > .zero {
            // Metered with the next refresh (one write for every call ended since), kept until Redis takes it.
            state.withLock { $0.agentCPU[call.tenant, default: 0] += cpu.milliseconds }
            metrics.increment(MetricNames.usageAgentCPUSeconds, ["tenant": tenantLabels.label(call.tenant)], by: Double(cpu.milliseconds) / 1000,
                              help: "CPU time of the calls' agent processes, by tenant")
        }
        if let reason {
            metrics.increment(MetricNames.callsEnded, ["reason": reason.rawValue], help: "Calls ended, by reason")
            logger.info(reason == .migrated ? "call moved to another worker" : "call ended",
                        metadata: [LogKey.callID: "\(call.callID)", LogKey.reason: "\(reason.rawValue)"])
        }
        if wasFull { heartbeatTrigger.yield() }  // a slot opened on a full worker: tell the routers now
        drainTrigger.yield()
    }

    /// Carries out one action that needs I/O and feeds what came of it back to the call's lifecycle.
    private func perform(_ action: CallAction, _ call: Running, log: Logger) async {
        let callID = call.callID
        switch action {
        case .claim:
            let resume = call.offer.resume!
            do {
                if let epoch = try await callStore.claim(callID, worker: configuration.id, from: resume, incarnation: incarnation,
                                                         version: configuration.version, region: configuration.region) {
                    log.info("call taken on", metadata: ["from_worker": "\(resume.fromWorker)", "reason": "\(resume.reason.rawValue)",
                                                         "checkpoint_seq": "\(resume.checkpoint.seq)", "epoch": "\(epoch)"])
                    note(callID, "taken_on", ["from_worker": resume.fromWorker, "reason": resume.reason.rawValue, "epoch": "\(epoch)",
                                              "checkpoint_seq": "\(resume.checkpoint.seq)"])
                    // The claim is the move: the caller follows it from here, even if the router that offered the
                    // call gave up waiting for this accept (it says so too once it hears it; on the bus only, the
                    // router notes the move on the timeline).
                    publishEvent(CallEvent(callID: callID, event: resume.reason == .failover ? .resumed : .migrated, workerID: configuration.id,
                                           fromWorker: resume.fromWorker, atMillis: wallClock.unixMillis), note: false)
                    handle(callID, .claimed(epoch: epoch))
                    return
                }
                log.warning("call not taken on: its record moved on since the router read it")
            } catch {
                log.warning("call not taken on: cannot claim it in Redis", metadata: [LogKey.error: "\(error)"])
            }
            handle(callID, .claimFailed)
        case .recordStart:
            var superseded = false
            do {
                superseded = try await callStore.start(callID, tenant: call.tenant, worker: configuration.id, incarnation: incarnation,
                                                       startedAt: call.startedAt) == .superseded
                if superseded { log.warning("the call's record was ended or taken on before it started here") }
            } catch {
                // The refresh writes the record again once Redis answers.
                log.error("record call start failed", metadata: [LogKey.error: "\(error)"])
            }
            if !superseded { note(callID, "started", ["tenant": call.tenant]) }
            handle(callID, .startRecorded(superseded: superseded))
        case .hold:
            switch await writeCheckpoint(callID, call.session, always: true, hold: true, log: log) {
            case .written(let checkpoint): handle(callID, .holdWritten(checkpoint))
            case .moved: handle(callID, .holdFailed(moved: true))
            case .unchanged, .failed: handle(callID, .holdFailed(moved: false))
            }
        case .checkOwnership:
            // A router held the call and then neither released nor unheld it (it may have vanished): still ours?
            guard let held = state.withLock({ $0.calls[callID]?.held }) else { return }
            let owned: Bool?
            switch try? await callStore.refresh([held], worker: configuration.id, incarnation: incarnation, version: configuration.version,
                                                region: configuration.region, leaseTime: configuration.leaseTime).first?.ownership {
            case .superseded?: owned = false
            case .owned?, .reasserted?, .missing?: owned = true
            case nil: owned = nil  // Redis did not answer: asked again
            }
            if owned == true {
                log.warning("a held call was neither released nor resumed in time: sending its audio again")
            }
            handle(callID, .ownershipChecked(owned: owned))
        case .recordEnd(let reason, let epoch):
            let span = tracer.start("end", parent: call.startSpan?.context,
                                    attributes: ["switchboard.call_id": callID, "switchboard.end_reason": reason.rawValue])
            defer { span?.end() }
            call.startSpan?.end()  // a call that ended before its agent started
            let write: CallLifecycle.EndWrite
            do {
                let ended = try await callStore.end(callID, tenant: call.tenant, worker: configuration.id, epoch: epoch, reason: reason,
                                                    retention: configuration.endedCallRetention)
                countMetered(call.tenant, ended.meteredMillis)
                if ended.ownership == .owned {
                    write = .written
                } else {
                    log.warning("call end not recorded: another worker holds the call now")
                    write = .notOwned
                }
            } catch {
                // Written again at each refresh until Redis takes it (`repairRecords`).
                log.error("record call end failed; it is written again once Redis answers", metadata: [LogKey.error: "\(error)"])
                write = .failed
            }
            handle(callID, .endRecorded(write))
        case .forget:
            // Another worker holds the call now (or never let this one claim it): only this worker's set changes.
            do {
                try await callStore.forget(callID, worker: configuration.id)
                handle(callID, .endRecorded(.written))
            } catch {
                // A call left in the set is a stray to the next refreshes (`repairRecords`), which take it out.
                log.warning("call not taken out of this worker's set in Redis", metadata: [LogKey.error: "\(error)"])
                handle(callID, .endRecorded(.failed))
            }
        default:
            assertionFailure("\(action) is carried out at once, not queued")
        }
    }

    /// The call's tasks, from `startTasks` to `stopTasks`: the caller's audio and keys decoded for the handler,
    /// end requests taken, the handler run. Anything that ends the call goes through its lifecycle.
    private func carry(_ call: Running, log: Logger) async {
        let callID = call.callID
        let (audio, audioIn) = AsyncStream.makeStream(of: AudioFrame.self, bufferingPolicy: .bufferingNewest(50))
        let (dtmf, dtmfIn) = AsyncStream.makeStream(of: Character.self, bufferingPolicy: .bufferingNewest(32))
        let context = CallContext(callID: callID, tenant: call.tenant, metadata: call.offer.metadata,
                                  traceparent: call.startSpan?.context.traceparent,
                                  sampleRate: configuration.sampleRate, audio: audio, dtmf: dtmf, session: call.session,
                                  hangUp: { [self] reason in handle(callID, .endRequested(reason)) },
                                  announceStart: { [self] in
                                      call.startSpan?.end()
                                      handle(callID, .handlerStarted)
                                  },
                                  checkpointNow: { [self] () throws(SwitchboardError) in
                                      if case .moved = await writeCheckpoint(callID, call.session, always: true, log: log) {
                                          handle(callID, .superseded)
                                      }
                                  },
                                  noteEvent: { [self] type, attributes in note(callID, type, attributes) })
        log.info("call started")
        if !handler.announcesStart {
            call.startSpan?.end()
            handle(callID, .handlerStarted)
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.receiveMedia(call.media, into: audioIn, dtmf: dtmfIn, sampleRate: self.configuration.sampleRate,
                                        heard: call.heard, logger: log)
            }
            group.addTask {
                for await message in call.endRequests {
                    switch Result(catching: { () throws(SwitchboardError) in try CallEnd.decode(message.payload) }) {
                    case .success(let end):
                        call.waitingEnds.add(message)
                        self.handle(callID, .endRequested(end.reason))
                    case .failure(let error):
                        self.metrics.increment(MetricNames.badMessages, ["kind": "call_end", "code": error.code.rawValue])
                        try? self.nats.reply(to: message, payload: RouteReply(error: error).encoded())  // counted above; the asker times out
                    }
                }
            }
            group.addTask {
                do {
                    try await self.handler.run(context)
                } catch where !(error is CancellationError) {
                    self.metrics.increment(MetricNames.handlerErrors, help: "Call handlers that failed (the call then ends, reason handler)")
                    log.warning("handler failed", metadata: [LogKey.error: "\(error)"])
                } catch {}
                // A reason the handler gave as it returned (an agent's hang-up) came first; else this one counts.
                if !Task.isCancelled { self.handle(callID, .endRequested(.handler)) }
            }
            for await _ in call.stops { break }
            group.cancelAll()
        }
        call.media.unsubscribe()
        call.endRequests.unsubscribe()
        audioIn.finish()
        dtmfIn.finish()
        handle(callID, .tasksStopped)
    }

    /// Ticks every call's lifecycle a few times a second, all under one lock: its maximum duration, the caller's
    /// silence, a hold nobody answered. A tick that comes late (this process was frozen) or finds the worker cut
    /// off from NATS excuses the silence: it was the observer's.
    func callClock() async {
        var last = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let now = ContinuousClock.now
            let cutOff = !nats.isConnected || stallWatch.stalled || now - last > .seconds(1)
            last = now
            let due = state.withLock { state -> [(Running, [CallAction])] in
                var due: [(Running, [CallAction])] = []
                var index = state.calls.startIndex
                while index != state.calls.endIndex {  // each call changed in place: no copy of the table per tick
                    let lastHeard = state.calls.values[index].heard.lastHeard
                    let actions = state.calls.values[index].lifecycle.on(.tick(lastHeard: lastHeard, cutOff: cutOff), now: now)
                    if !actions.isEmpty { due.append((state.calls.values[index], actions)) }
                    state.calls.formIndex(after: &index)
                }
                return due
            }
            for (call, actions) in due { dispatch(actions, call) }
        }
    }

    /// Tells the call's gateway and listeners what became of the call, and notes it on its timeline.
    func publishEvent(_ event: CallEvent, note noted: Bool = true) {
        // Fails only with the connection closed or its reconnect buffer full; the event is on the timeline either way.
        try? nats.publish(configuration.subjects.events(worker: configuration.id, call: event.callID), payload: event.encoded())
        if noted { note(event.callID, event.event.rawValue, event.reason.map { ["reason": $0] } ?? [:]) }
    }

    /// Notes one event on a call's timeline (queued; written off the call's path).
    func note(_ callID: String, _ type: String, _ attributes: [String: String] = [:]) {
        timeline.record(callID, TimelineEvent(atMillis: wallClock.unixMillis, source: .worker, member: configuration.id, type: type,
                                              attributes: attributes))
    }

    /// Decodes the caller's packets into frames for the handler; a gap in sequence numbers (up to 5 packets)
    /// becomes concealed frames, a late or repeated packet is dropped, a malformed one is counted.
    func receiveMedia(_ media: NATSSubscription, into audio: AsyncStream<AudioFrame>.Continuation,
                      dtmf: AsyncStream<Character>.Continuation, sampleRate: Int, heard: MediaClock, logger: Logger) async {
        let decoder: OpusDecoder
        do {
            decoder = try OpusDecoder(sampleRate: sampleRate)
        } catch {
            logger.error("cannot create the audio decoder", metadata: [LogKey.error: "\(error)"])
            return
        }
        var last: UInt32?
        for await message in media {
            do {
                let packet = try MediaPacket.decode(message.payload)
                if let digit = packet.digit {
                    dtmf.yield(digit)
                    metrics.increment(MetricNames.mediaPackets, ["direction": "in_dtmf"], help: "Media packets, by direction")
                    continue
                }
                guard packet.kind == .audio else {  // a `clear` goes toward callers only
                    metrics.increment(MetricNames.badMessages, ["kind": "media", "code": "bad_message"])
                    continue
                }
                if let last {
                    let gap = packet.sequence &- last
                    if gap == 0 || gap > UInt32.max / 2 { continue }  // repeated or late
                    if gap > 1 {
                        metrics.increment(MetricNames.mediaLost, by: Double(gap - 1), help: "Caller packets missing from the sequence")
                    }
                    if gap > 1 && gap <= 6 {
                        for _ in 1..<gap { audio.yield(AudioFrame(samples: try decoder.decodeMissing(), concealed: true)) }
                        metrics.increment(MetricNames.mediaConcealed, by: Double(gap - 1), help: "Frames made up for missing packets (Opus concealment)")
                    }
                }
                last = packet.sequence
                audio.yield(AudioFrame(samples: try decoder.decode(packet.payload)))
                heard.touch()
                metrics.increment(MetricNames.mediaPackets, ["direction": "in"], help: "Media packets, by direction")
            } catch {
                metrics.increment(MetricNames.badMessages, ["kind": "media", "code": error.code.rawValue])
            }
        }
    }

}

/// One call's outgoing audio and saved state on this worker: encodes the handler's frames and publishes them
/// as numbered media packets, keeps the handler's latest state, and takes checkpoints of both.
///
/// One lock keeps a frame and the state that goes with it together: a checkpoint is always of audio sent.
/// While a migration holds the call, frames are dropped (the next worker resumes from the checkpoint taken
/// at the hold), and nothing is sent twice. The state is kept as a value and encoded only when a checkpoint
/// is taken (about once a second), not with every frame.
final class CallSession: Sendable {
    typealias HandlerState = any Encodable & Sendable

    private struct State {
        /// Made with the first frame sent, not when the offer is accepted: the accept is on every call's
        /// placement path, and an encoder takes a while to set up.
        var encoder: OpusEncoder?
        var sequence: UInt32
        var timestamp: UInt32
        var held = false
        /// Set while the worker confirms it still owns the call (after a stall or a reconnection): no audio
        /// goes out, so two workers never speak on one call.
        var fenced = false
        /// Another worker holds the call now: nothing more goes out, whatever unfences or unholds it later.
        var superseded = false
        /// The handler's latest state: a value saved since the last checkpoint, else the last one's JSON.
        var saved: HandlerState?
        var savedJSON: String?
        var checkpointSeq: UInt64
        /// A frame has gone out on this worker (the first is noted on the call's timeline).
        var spoke = false
    }

    private let state: Mutex<State>
    private let nats: NATSConnection
    private let subject: String
    private let metrics: MetricsRegistry
    private let sampleRate: Int
    private let bitrate: Int
    /// The checkpoint the call was resumed from, nil for a new call.
    let restored: Checkpoint?
    private let watch: StallWatch?
    let callID: String
    /// Called once, after the first frame went out.
    private let firstAudio: (@Sendable () -> Void)?

    init(callID: String, nats: NATSConnection, subject: String, sampleRate: Int, bitrate: Int, metrics: MetricsRegistry,
         resumingFrom checkpoint: Checkpoint? = nil, unixNowMillis: Int64 = 0, watch: StallWatch? = nil,
         firstAudio: (@Sendable () -> Void)? = nil) {
        self.watch = watch
        self.firstAudio = firstAudio
        self.callID = callID
        let position = checkpoint.map { c in
            c.mediaPosition(elapsedMillis: unixNowMillis.subtractingReportingOverflow(c.takenAtMillis).partialValue)
        } ?? (sequence: 0, timestamp: 0)
        state = Mutex(State(sequence: position.sequence, timestamp: position.timestamp, savedJSON: checkpoint?.state,
                            checkpointSeq: checkpoint?.seq ?? 0))
        self.nats = nats
        self.subject = subject
        self.metrics = metrics
        self.sampleRate = sampleRate
        self.bitrate = bitrate
        self.restored = checkpoint
    }

    /// Encodes one frame and sends it; with `newState`, records it as the handler's state after this frame.
    func send(_ samples: [Int16], state newState: HandlerState? = nil) throws {
        var first = false
        let sent = try state.withLock { state -> Bool in
            guard !state.held else { return false }  // the checkpoint of the hold stands
            // Fenced, or this process has just woken from a stall its watch has not handled yet: another
            // worker may hold the call now.
            guard !state.fenced, !state.superseded, watch?.stalled != true else { return false }
            // Cut off from NATS, a frame would wait in the client's buffer and reach the caller seconds late,
            // after a reconnection, maybe after another worker took the call on: it is dropped instead.
            guard nats.isConnected else { return false }
            if let newState { state.saved = newState }
            if state.encoder == nil { state.encoder = try OpusEncoder(sampleRate: sampleRate, bitrate: bitrate) }
            let payload = try state.encoder!.encode(samples)
            let packet = MediaPacket(sequence: state.sequence, timestamp: state.timestamp, payload: payload)
            state.sequence &+= 1
            state.timestamp &+= 960  // 20 ms at 48 kHz, whatever the sample rate
            do {
                try nats.publish(subject, payload: packet.encoded())
            } catch let error as SwitchboardError where Self.isConnectionTrouble(error) {
                // The connection broke under this very write (it was up a moment ago): the frame is lost, as
                // it would be on the wire, and the call goes on; the handler must not fail for the bus's
                // trouble (a NATS restart once ended a call this way). The caller conceals the gap.
                return false
            }
            first = !state.spoke
            state.spoke = true
            return true
        }
        if first { firstAudio?() }
        metrics.increment(MetricNames.mediaPackets, ["direction": sent ? "out" : "out_dropped"], help: "Media packets, by direction")
    }

    /// Tells the caller's side that the agent was interrupted: audio it has queued must not play. Numbered as
    /// the next audio packet; not sent while the call is held, fenced or cut off (no audio is then either).
    func sendClear() {
        state.withLock { state in
            guard !state.held, !state.fenced, !state.superseded, watch?.stalled != true, nats.isConnected else { return }
            // Lost when the bus breaks under it, like an audio packet: the caller's side then plays out what it
            // holds (a few frames).
            try? nats.publish(subject, payload: MediaPacket.clear(sequence: state.sequence, timestamp: state.timestamp).encoded())
        }
    }

    static func isConnectionTrouble(_ error: SwitchboardError) -> Bool {
        [.connectionFailed, .connectionClosed, .timeout, .unavailable].contains(error.code)
    }

    /// Records the handler's state (taken at the next checkpoint).
    func save(_ newState: HandlerState) {
        state.withLock { state in
            if !state.held { state.saved = newState }
        }
    }

    /// A checkpoint of the state now if it changed since the last one (or `always`); nil when unchanged.
    /// - Throws: `tooLarge` when the handler's state is over 64 KiB as JSON (the last good checkpoint stands).
    func checkpoint(always: Bool = false, hold: Bool = false, unixNowMillis: Int64) throws(SwitchboardError) -> Checkpoint? {
        try state.withLock { state throws(SwitchboardError) -> Checkpoint? in
            if hold { state.held = true }
            if let saved = state.saved {
                state.saved = nil
                let json = (saved as? PreEncodedState)?.json ?? String(decoding: WireCodec.encode(saved), as: UTF8.self)
                guard json.utf8.count <= Checkpoint.maxStateBytes else {
                    throw SwitchboardError(.tooLarge, "call state of \(json.utf8.count) bytes is over \(Checkpoint.maxStateBytes)")
                }
                state.savedJSON = json
            } else if !always {
                return nil
            }
            state.checkpointSeq += 1
            return Checkpoint(seq: state.checkpointSeq, state: state.savedJSON, mediaSequence: state.sequence,
                              mediaTimestamp: state.timestamp, takenAtMillis: unixNowMillis)
        }
    }

    /// Stops (or, false, resumes) sending while ownership is being confirmed.
    func fence(_ on: Bool) {
        state.withLock { $0.fenced = on }
    }

    /// Stops sending for good: another worker holds the call.
    func silence() {
        state.withLock { $0.superseded = true }
    }

    /// The migration failed: send again. False if it was not held.
    @discardableResult
    func unhold() -> Bool {
        state.withLock { state in
            defer { state.held = false }
            return state.held
        }
    }
}

/// One call's actions that need I/O, in order, for its task (`runCall`). Unlike an `AsyncStream`, waiting can
/// go on after the task is cancelled, so an end already decided is still carried out.
final class ActionQueue: Sendable {
    enum Next: Sendable {
        case action(CallLifecycle.Action)
        case finished
        case cancelled
    }

    private struct State {
        var pending: [CallLifecycle.Action] = []
        var finished = false
        var waiter: CheckedContinuation<Next, Never>?
    }
    private let state = Mutex(State())

    func yield(_ action: CallLifecycle.Action) {
        let waiter = state.withLock { state -> CheckedContinuation<Next, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending.append(action)
            return nil
        }
        waiter?.resume(returning: .action(action))
    }

    /// No more actions: the waiting task gets `finished` once the pending ones are taken.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<Next, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .finished)
    }

    /// The next action; `cancelled` when the task is (and `honoringCancellation`) and none is pending.
    func next(honoringCancellation: Bool) async -> Next {
        if honoringCancellation && Task.isCancelled && state.withLock({ $0.pending.isEmpty }) { return .cancelled }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Next, Never>) in
                let now: Next? = state.withLock { state in
                    if !state.pending.isEmpty { return .action(state.pending.removeFirst()) }
                    if state.finished { return .finished }
                    if honoringCancellation && Task.isCancelled { return .cancelled }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            guard honoringCancellation else { return }
            let waiter = state.withLock { state -> CheckedContinuation<Next, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: .cancelled)
        }
    }
}

/// When the caller's audio was last heard on a call.
final class MediaClock: Sendable {
    private let clock = ContinuousClock()
    private let base = ContinuousClock.now
    private let last = Atomic<Int64>(0)  // ms since `base`

    init() { touch() }

    func touch() { last.store((clock.now - base).milliseconds, ordering: .relaxed) }

    var lastHeard: ContinuousClock.Instant { base + .milliseconds(last.load(ordering: .relaxed)) }
}

/// End requests waiting for the call to finish ending, to be answered then.
final class EndRequests: Sendable {
    private let messages = Mutex<[NATSMessage]>([])
    func add(_ message: NATSMessage) { messages.withLock { $0.append(message) } }
    var all: [NATSMessage] { messages.withLock { $0 } }
}

/// Notices this process's own stalls: a loop touches it every 100 ms, and a frame about to go out while the
/// last touch is older than the limit is held back (the process was frozen; ownership must be confirmed).
final class StallWatch: Sendable {
    private let base = ContinuousClock.now
    private let lastTouch = Atomic<Int64>(0)
    let limit: Duration

    init(limit: Duration) { self.limit = limit }

    private var sinceBase: Int64 {
        let (seconds, atto) = (ContinuousClock.now - base).components
        return seconds * 1_000_000_000 + atto / 1_000_000_000
    }

    /// Records that the loop ran.
    func touch() { lastTouch.store(sinceBase, ordering: .relaxed) }

    /// Time since the loop last ran.
    var sinceLastTouch: Duration { .nanoseconds(sinceBase - lastTouch.load(ordering: .relaxed)) }

    var stalled: Bool { sinceLastTouch > limit }
}
