import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import Synchronization

extension Worker {
    /// Runs one accepted call from start to end: record it, carry its audio through the handler, end it for
    /// the first reason that comes (caller, handler, maximum duration, worker stopping), record the end, free
    /// the slot.
    func runCall(_ offer: Offer) async {
        let callID = offer.callID
        let log = logger.with([LogKey.callID: "\(callID)", LogKey.tenant: "\(offer.tenant)"])
        guard let running = state.withLock({ $0.calls[callID] }) else { return }
        let session = running.session

        if let resume = offer.resume {
            // Claimed before the offer was accepted (`claimAndAnswer`): the record names this worker already.
            log.info("call taken on", metadata: ["from_worker": "\(resume.fromWorker)", "reason": "\(resume.reason.rawValue)",
                                                 "checkpoint_seq": "\(resume.checkpoint.seq)", "epoch": "\(running.epoch ?? 0)"])
        } else {
            do {
                if try await callStore.start(callID, worker: configuration.id, incarnation: incarnation,
                                             startedAt: running.startedAt) == .superseded {
                    log.warning("the call's record was ended or taken on before it started here")
                    letGo(callID)
                }
            } catch {
                // The refresh writes the record again once Redis answers.
                log.error("record call start failed", metadata: [LogKey.error: "\(error)"])
            }
        }

        let endRequests = EndRequests()
        let media = running.media
        let endSubscription = running.endRequests
        let (audio, audioIn) = AsyncStream.makeStream(of: AudioFrame.self, bufferingPolicy: .bufferingNewest(50))
        let (dtmf, dtmfIn) = AsyncStream.makeStream(of: Character.self, bufferingPolicy: .bufferingNewest(32))
        let context = CallContext(callID: callID, tenant: offer.tenant, metadata: offer.metadata,
                                  sampleRate: configuration.sampleRate, audio: audio, dtmf: dtmf, session: session,
                                  hangUp: { reason in running.end.yield(reason) },
                                  checkpointNow: { [self] () throws(SwitchboardError) in
                                      if case .moved = await writeCheckpoint(callID, session, always: true, log: log) {
                                          letGo(callID)
                                      }
                                  })
        log.info("call started")
        let heard = MediaClock()
        let reason = await withTaskGroup(of: EndReason?.self) { group in
            group.addTask {
                await self.receiveMedia(media, into: audioIn, dtmf: dtmfIn, sampleRate: self.configuration.sampleRate, heard: heard, logger: log)
                return nil
            }
            if let timeout = configuration.mediaTimeout {
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: min(timeout / 4, .seconds(1)))
                        // Silence while this worker is cut off or frozen is not the caller's.
                        if !self.nats.isConnected || self.stallWatch.stalled { heard.touch() }
                        if heard.silence >= timeout {
                            log.warning("no audio from the caller for \(timeout): ending the call")
                            return .noMedia
                        }
                    }
                    return nil
                }
            }
            group.addTask {
                for await message in endSubscription {
                    switch Result(catching: { () throws(SwitchboardError) in try CallEnd.decode(message.payload) }) {
                    case .success(let end):
                        endRequests.add(message)
                        running.end.yield(end.reason)
                    case .failure(let error):
                        self.metrics.increment(MetricNames.badMessages, ["kind": "call_end", "code": error.code.rawValue])
                        try? self.nats.reply(to: message, payload: RouteReply(error: error).encoded())
                    }
                }
                return nil
            }
            group.addTask {
                do {
                    try await self.handler.run(context)
                } catch where !(error is CancellationError) {
                    self.metrics.increment(MetricNames.handlerErrors, help: "Call handlers that failed (the call then ends, reason handler)")
                    log.warning("handler failed", metadata: [LogKey.error: "\(error)"])
                } catch {}
                // Through the call's one end stream, so a reason the handler gave as it returned (an agent's
                // hang-up) comes first, not `handler`.
                if !Task.isCancelled { running.end.yield(.handler) }
                return nil
            }
            group.addTask {
                for await reason in running.ends { return reason }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: self.configuration.maxCallDuration)
                return Task.isCancelled ? nil : .maxDuration
            }
            var first: EndReason = .workerStopping
            for await result in group {
                if let result {
                    first = result
                    break
                }
            }
            group.cancelAll()
            media.unsubscribe()
            endSubscription.unsubscribe()
            audioIn.finish()
            dtmfIn.finish()
            return first
        }

        let epoch = state.withLock { $0.calls[callID]?.epoch }
        var recordedEnd = false
        do {
            if reason == .migrated || epoch == nil {
                // Another worker holds the call now (or never let this one claim it): only this worker's set changes.
                try await callStore.forget(callID, worker: configuration.id)
            } else if try await callStore.end(callID, tenant: offer.tenant, worker: configuration.id, epoch: epoch!, reason: reason,
                                              retention: configuration.endedCallRetention) == .owned {
                recordedEnd = true
            } else {
                log.warning("call end not recorded: another worker holds the call now")
            }
        } catch {
            // Written again at each refresh until Redis takes it (`repairRecords`).
            log.error("record call end failed; it is written again once Redis answers", metadata: [LogKey.error: "\(error)"])
            if reason != .migrated, let epoch {
                let dropped = state.withLock {
                    $0.repair.endFailed(.init(callID: callID, tenant: offer.tenant, epoch: epoch, reason: reason))
                }
                if let dropped {
                    log.error("too many call ends waiting for Redis: one is left to its record's expiry",
                              metadata: ["dropped_call_id": "\(dropped.callID)"])
                }
            }
            recordedEnd = reason != .migrated
        }
        if recordedEnd {
            publishEvent(CallEvent(callID: callID, event: .ended, workerID: configuration.id, reason: reason.rawValue,
                                   atMillis: unixMillisNow()))
        }
        let wasFull = state.withLock { state -> Bool in
            let wasFull = state.slots.activeCalls >= state.slots.capacity
            state.slots.end(callID)
            state.calls.removeValue(forKey: callID)
            return wasFull
        }
        running.end.finish()
        handler.release(callID: callID)
        metrics.increment(MetricNames.callsEnded, ["reason": reason.rawValue], help: "Calls ended, by reason")
        log.info(reason == .migrated ? "call moved to another worker" : "call ended", metadata: [LogKey.reason: "\(reason.rawValue)"])
        let ended = Array(#"{"v":1,"ended":true,"reason":"\#(reason.rawValue)"}"#.utf8)
        if reason != .migrated {
            for request in endRequests.all { try? nats.reply(to: request, payload: ended) }
        }
        if wasFull { heartbeatTrigger.yield() }  // a slot opened on a full worker: tell the routers now
        drainTrigger.yield()
    }

    func publishEvent(_ event: CallEvent) {
        try? nats.publish(configuration.subjects.events(call: event.callID), payload: event.encoded())
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

    init(callID: String, nats: NATSConnection, subject: String, sampleRate: Int, bitrate: Int, metrics: MetricsRegistry,
         resumingFrom checkpoint: Checkpoint? = nil, unixNowMillis: Int64 = 0, watch: StallWatch? = nil) {
        self.watch = watch
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
            return true
        }
        metrics.increment(MetricNames.mediaPackets, ["direction": sent ? "out" : "out_dropped"], help: "Media packets, by direction")
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

    var isHeld: Bool { state.withLock { $0.held } }

    /// The migration failed: send again. False if it was not held.
    @discardableResult
    func unhold() -> Bool {
        state.withLock { state in
            defer { state.held = false }
            return state.held
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

    var silence: Duration { .milliseconds((clock.now - base).milliseconds - last.load(ordering: .relaxed)) }
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
