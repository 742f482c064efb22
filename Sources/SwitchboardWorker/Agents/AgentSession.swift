import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardOpus
import Synchronization

/// What one call's agent sessions share: the live session (the caller's audio and keys go to it, and nowhere
/// between two sessions), and the state to start the next one with.
final class CallLink: Sendable {
    private struct Live {
        var session: AgentSessionIO?
        /// Keys pressed while no session was live (before the first, or during a restart): an event the agent
        /// must not miss, unlike audio gone stale. Sent when the next session starts; at most 32 kept.
        var heldDigits: [Character] = []
    }

    private let live = Mutex(Live())
    private let state: Mutex<String?>

    init(savedState: String?) { state = Mutex(savedState) }

    /// The agent's last checkpoint (or the one the call resumed with).
    var savedState: String? {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }

    /// The session is live (its `start` sent): keys held meanwhile go to it now.
    func attach(_ session: AgentSessionIO) {
        live.withLock { live in
            // Under the lock (a write only queues on the socket), so a key pressed now cannot overtake them.
            for digit in live.heldDigits { session.fromCaller(digit: digit) }
            live.heldDigits.removeAll()
            live.session = session
        }
    }

    func detach() { live.withLock { $0.session = nil } }

    /// The caller's audio to the live session's agent, on the caller's task: no hop between the decode and the
    /// socket. Dropped while no session is live (stale by the time one is).
    func send(audio samples: [Int16]) {
        live.withLock { $0.session }?.fromCaller(samples)
    }

    /// A key the caller pressed, to the live session's agent, or held for the next one.
    func send(digit: Character) {
        let session = live.withLock { live -> AgentSessionIO? in
            if live.session == nil, live.heldDigits.count < 32 { live.heldDigits.append(digit) }
            return live.session
        }
        session?.fromCaller(digit: digit)
    }
}

/// One agent session's audio and socket: the caller's 48 kHz resampled to mu-law 8 kHz `media` for the agent;
/// the agent's mu-law queued (`AgentPlayout`) and played to the caller a 20 ms frame at a time, at once when
/// playback was idle (an agent answering frame by frame adds no wait for a tick); marks; its socket's writes
/// (thread-safe: NIO channels are), numbered; when it last answered a ping.
final class AgentSessionIO: Sendable {
    let channel: any NIOCore.Channel
    let streamSid: String
    let quotedSid: String
    private let sequence = Atomic<Int>(1)  // `start` is 1
    let lastPong = Atomic<Int64>(ContinuousClock.now.millis)

    private struct Uplink {
        let down: Resampler
        var pending: [Int16] = []
        var chunk = 0
    }

    struct Playback {
        var playout = AgentPlayout()
        /// Nothing was queued at the last tick: the play loop waits for a wake, and new audio plays at once.
        var idle = true
        let up: Resampler
        var pending: [Int16] = []
    }

    private let uplink: Mutex<Uplink>
    let playback: Mutex<Playback>
    /// A frame played by `fromAgent` while idle: the play loop takes up the 20 ms cadence from there.
    let wakes: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private let frameSamples: Int
    /// Sends one frame of `frameSamples` 48 kHz samples to the caller.
    private let speak: @Sendable ([Int16]) -> Void

    init(channel: any NIOCore.Channel, streamSid: String, frameSamples: Int, speak: @escaping @Sendable ([Int16]) -> Void) throws(SwitchboardError) {
        self.channel = channel
        self.streamSid = streamSid
        quotedSid = JSONText.quoted(streamSid)
        self.frameSamples = frameSamples
        self.speak = speak
        uplink = Mutex(Uplink(down: try Resampler(from: 48_000, to: 8_000)))
        playback = Mutex(Playback(up: try Resampler(from: 8_000, to: 48_000)))
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func nextSequence() -> Int { sequence.add(1, ordering: .relaxed).newValue }

    func send(_ frame: WebSocketFrame) { channel.writeAndFlush(frame, promise: nil) }
    func write(_ text: String) { send(AgentSocket.text(text)) }

    // MARK: Caller to agent

    /// 20 ms of the caller's 48 kHz audio: one `media` event of 160 mu-law bytes.
    func fromCaller(_ samples: [Int16]) {
        let messages = uplink.withLock { uplink -> [String] in
            uplink.pending += uplink.down.process(samples)
            var messages: [String] = []
            while uplink.pending.count >= 160 {
                uplink.chunk += 1
                messages.append(MediaStream.media(quotedStreamSid: quotedSid, sequence: nextSequence(), chunk: uplink.chunk,
                                                  timestampMillis: Int64(uplink.chunk - 1) * 20,
                                                  payload: MuLaw.encode(Array(uplink.pending.prefix(160)))))
                uplink.pending.removeFirst(160)
            }
            return messages
        }
        for message in messages { write(message) }
    }

    func fromCaller(digit: Character) {
        write(MediaStream.dtmf(quotedStreamSid: quotedSid, sequence: nextSequence(), digit: digit))
    }

    // MARK: Agent to caller

    /// The agent's audio: queued, and its first frame played now when playback was idle. Returns the samples
    /// dropped for a full queue.
    func fromAgent(_ muLaw: [UInt8]) -> Int {
        let (dropped, woke, frame, marks) = playback.withLock { playback -> (Int, Bool, [Int16]?, [String]) in
            let before = playback.playout.droppedSamples
            playback.playout.enqueue(MuLaw.decode(muLaw))
            let dropped = playback.playout.droppedSamples - before
            guard playback.idle, !playback.playout.isEmpty else { return (dropped, false, nil, []) }
            // Idle: play now (a piece shorter than a frame waits one tick in the loop), and wake the loop.
            playback.idle = false
            let tick = playback.playout.tick()
            return (dropped, true, tick.frame.flatMap { Self.upsample($0, &playback, frameSamples) }, tick.marks)
        }
        if let frame { speak(frame) }
        writeMarks(marks)
        if woke { wake.yield() }
        return dropped
    }

    /// One tick of the play loop: sends the next frame, if any. False when playback is idle (nothing queued).
    func tick() -> Bool {
        let (frame, marks, idle) = playback.withLock { playback -> ([Int16]?, [String], Bool) in
            let tick = playback.playout.tick()
            playback.idle = tick.frame == nil && playback.playout.isEmpty
            return (tick.frame.flatMap { Self.upsample($0, &playback, frameSamples) }, tick.marks, playback.idle)
        }
        if let frame { speak(frame) }
        writeMarks(marks)
        return !idle
    }

    /// An 8 kHz frame at 48 kHz: exactly `frameSamples` once the resampler's output has caught up.
    private static func upsample(_ frame: [Int16], _ playback: inout Playback, _ frameSamples: Int) -> [Int16]? {
        playback.pending += playback.up.process(frame)
        guard playback.pending.count >= frameSamples else { return nil }
        defer { playback.pending.removeFirst(frameSamples) }
        return Array(playback.pending.prefix(frameSamples))
    }

    func writeMarks(_ names: [String]) {
        for name in names { write(MediaStream.mark(quotedStreamSid: quotedSid, sequence: nextSequence(), name: name)) }
    }

    func stop(accountSid: String, callSid: String) -> String {
        MediaStream.stop(quotedStreamSid: quotedSid, sequence: nextSequence(), accountSid: accountSid, callSid: callSid)
    }

    /// A close frame; then the agent closes the connection, as the server does at the end of the closing
    /// handshake, or the worker does after `limit` (a call's end never waits long on its agent).
    func close(within limit: Duration, sendingClose: Bool = true) async {
        if sendingClose {
            var code = ByteBuffer()
            code.write(webSocketErrorCode: .normalClosure)
            send(AgentSocket.control(.connectionClose, code))
        }
        let channel = channel
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await channel.closeFuture.get() }  // not cancellable: the other task ends it
            group.addTask {
                try? await Task.sleep(for: limit)
                channel.close(promise: nil)
            }
            await group.next()
            group.cancelAll()
        }
    }
}
