import SwitchboardCore
import Testing

/// The gateway's pure parts: its playout toward the caller, a leg's machine, and the browser protocol.
struct JitterBufferTests {
    static func packet(_ seq: Int) -> MediaPacket {
        MediaPacket(sequence: UInt32(truncatingIfNeeded: seq), timestamp: UInt32(truncatingIfNeeded: seq * 960), payload: [UInt8(seq & 0xFF)])
    }

    /// Plays packets arriving every 20 ms, in order, one per tick, after holding `target` back.
    static func run(_ buffer: inout JitterBuffer, _ seqs: [Int], startingAt time: Double = 0) -> [JitterBuffer.Output] {
        var out: [JitterBuffer.Output] = []
        for (i, seq) in seqs.enumerated() {
            _ = buffer.insert(packet(seq), arrivalMillis: time + Double(i) * 20)
            out.append(buffer.tick())
        }
        return out
    }

    @Test func steadyPacketsPlayInOrderAfterTheTarget() {
        var buffer = JitterBuffer()
        let out = Self.run(&buffer, Array(0..<20))
        #expect(buffer.target == buffer.settings.minDepth)
        #expect(out.first == .nothing)  // the first packet waits for the second
        let played = out.compactMap { if case .packet(let p) = $0 { Int(p.sequence) } else { nil } }
        #expect(played == Array(0..<19))
        #expect(buffer.stats.concealed == 0 && buffer.stats.lost == 0)
    }

    @Test func aLostPacketIsConcealedAndSkipped() {
        var buffer = JitterBuffer()
        let out = Self.run(&buffer, [0, 1, 2, 4, 5, 6, 7])
        #expect(out.contains(.conceal))
        let played = out.compactMap { if case .packet(let p) = $0 { Int(p.sequence) } else { nil } }
        #expect(played == [0, 1, 2, 4, 5])
        #expect(buffer.stats.lost == 1)
    }

    @Test func whenPacketsStopAFewFramesAreConcealedThenNothingPlays() {
        var buffer = JitterBuffer()
        _ = Self.run(&buffer, Array(0..<10))
        var tail: [JitterBuffer.Output] = []
        for _ in 0..<10 { tail.append(buffer.tick()) }
        let concealed = tail.filter { $0 == .conceal }.count
        #expect(tail.first != .nothing)  // what was queued plays out first
        #expect(concealed == buffer.settings.concealFrames)
        #expect(tail.suffix(3).allSatisfy { $0 == .nothing })
        #expect(!buffer.playing)
    }

    /// A move: the new worker's numbering jumps ahead; the buffer follows it at once, never waiting for the packets
    /// the caller was never going to get, and drops the old worker's late stragglers.
    @Test func aJumpInNumberingIsFollowedAndLatePacketsAreDropped() {
        var buffer = JitterBuffer()
        _ = Self.run(&buffer, Array(0..<10))
        for _ in 0..<6 { _ = buffer.tick() }
        let out = Self.run(&buffer, Array(60..<70), startingAt: 400)
        let played = out.compactMap { if case .packet(let p) = $0 { Int(p.sequence) } else { nil } }
        #expect(played.first == 60)
        #expect(played == Array(60..<(60 + played.count)))
        #expect(buffer.insert(Self.packet(9), arrivalMillis: 700) == .late)
    }

    /// A burst after a stall: the oldest are dropped so the caller never hears stale audio late.
    @Test func aBurstIsTrimmedToTheTarget() {
        var buffer = JitterBuffer()
        var trimmed = 0
        for seq in 0..<30 {
            if case .trimmed(let n) = buffer.insert(Self.packet(seq), arrivalMillis: 1_000) { trimmed += n }
        }
        #expect(trimmed > 0)
        #expect(buffer.depth <= buffer.target + buffer.settings.slack)
        guard case .packet(let first) = buffer.tick() else { Issue.record("nothing played"); return }
        #expect(first.sequence > 20, "plays the newest, not the stale head")
    }

    @Test func jitterRaisesTheTargetWithinItsBounds() {
        var buffer = JitterBuffer()
        for seq in 0..<200 {
            _ = buffer.insert(Self.packet(seq), arrivalMillis: Double(seq) * 20 + (seq.isMultiple(of: 2) ? 0 : 35))
            _ = buffer.tick()
        }
        #expect(buffer.jitterMillis > 10)
        #expect(buffer.target > buffer.settings.minDepth && buffer.target <= buffer.settings.maxDepth)
    }

    @Test func clearDropsWhatIsQueued() {
        var buffer = JitterBuffer()
        for seq in 0..<4 { _ = buffer.insert(Self.packet(seq), arrivalMillis: Double(seq)) }
        buffer.clear()
        #expect(buffer.depth == 0 && buffer.tick() == .nothing)
    }

    @Test func sequenceNumbersWrap() {
        var buffer = JitterBuffer()
        let seqs = (0..<8).map { Int(UInt32.max) - 3 + $0 }
        let out = Self.run(&buffer, seqs)
        let played = out.compactMap { if case .packet(let p) = $0 { p.sequence } else { nil } }
        #expect(played == seqs.dropLast().map { UInt32(truncatingIfNeeded: $0) })
    }
}

struct LegMachineTests {
    @Test func aTwilioLegRoutesOnStartAndForwardsOnceLive() {
        var leg = LegMachine(waitsForStart: true)
        #expect(leg.handle(.started) == [.route])
        #expect(leg.handle(.media) == [.dropEarly])
        #expect(leg.handle(.routed) == [.connect])
        #expect(leg.handle(.media) == [.forward])
        #expect(leg.handle(.hungUp) == [.endCall(.caller), .closeEnded(.caller)])
        #expect(leg.phase == .closed)
        #expect(leg.handle(.media) == [])
    }

    @Test func mediaBeforeStartOrASecondStartIsRefused() {
        var early = LegMachine(waitsForStart: true)
        guard case .closeWithError(let error)? = early.handle(.media).first else { Issue.record("not refused"); return }
        #expect(error.code == .badMessage && early.phase == .closed)
        var twice = LegMachine(waitsForStart: true)
        _ = twice.handle(.started)
        _ = twice.handle(.routed)
        let actions = twice.handle(.started)
        #expect(actions.first == .endCall(.caller))
        #expect(actions.count == 2 && twice.phase == .closed)
    }

    /// The caller hangs up (or is refused) while the route is under way: the call, once placed, is ended.
    @Test func aHangUpDuringTheRouteEndsTheCallOncePlaced() {
        var leg = LegMachine(waitsForStart: false)
        #expect(leg.handle(.hungUp) == [])
        #expect(leg.handle(.routed) == [.endCall(.caller), .closeEnded(.caller)])
        #expect(leg.phase == .closed)
        var refused = LegMachine(waitsForStart: false)
        let error = SwitchboardError(.rateLimited, "flood")
        #expect(refused.handle(.refused(error)) == [.closeWithError(error)])
        #expect(refused.handle(.refused(error)) == [], "closed once")
        #expect(refused.handle(.routed) == [.endCall(.caller)], "the socket is closed already")
        var failed = LegMachine(waitsForStart: false)
        _ = failed.handle(.refused(error))
        #expect(failed.handle(.routeFailed(SwitchboardError(.noCapacity, "full"))) == [])
        // A drain's deadline during the route: the call, once placed, ends as the gateway's.
        var draining = LegMachine(waitsForStart: false)
        #expect(draining.handle(.deadline) == [])
        #expect(draining.handle(.routed) == [.endCall(.gatewayStopping), .closeEnded(.gatewayStopping)])
    }

    @Test func theClustersEndAndTheDrainDeadlineCloseTheLeg() {
        var ended = LegMachine(waitsForStart: false)
        _ = ended.handle(.routed)
        #expect(ended.handle(.callEnded(.api)) == [.closeEnded(.api)])
        #expect(ended.handle(.hungUp) == [], "the call is over: nothing to end")
        var drained = LegMachine(waitsForStart: false)
        _ = drained.handle(.routed)
        #expect(drained.handle(.deadline) == [.endCall(.gatewayStopping), .closeEnded(.gatewayStopping)])
        var failed = LegMachine(waitsForStart: false)
        let error = SwitchboardError(.noCapacity, "full")
        #expect(failed.handle(.routeFailed(error)) == [.closeWithError(error)])
    }
}

struct BrowserStreamTests {
    @Test func framesRoundTripAndOnlyWholeFramesAreTaken() throws {
        let samples = (0..<BrowserStream.frameSamples).map { Int16($0 * 101 - 16_000) }
        #expect(try BrowserStream.audio(BrowserStream.encode(samples)) == samples)
        #expect(throws: SwitchboardError.self) { try BrowserStream.audio([UInt8](repeating: 0, count: 639)) }
        #expect((try? BrowserStream.audio([UInt8](repeating: 0, count: 64_000))) == nil)
    }

    @Test func eventsAreValidated() throws {
        #expect(try BrowserStream.decode(Array(##"{"event":"dtmf","digit":"#"}"##.utf8)) == .dtmf("#"))
        #expect(try BrowserStream.decode(Array(#"{"event":"hangup"}"#.utf8)) == .hangup)
        for bad in [#"{"event":"dtmf","digit":"x"}"#, #"{"event":"dance"}"#, "[]", "{", String(repeating: " ", count: 2_000)] {
            #expect(throws: SwitchboardError.self, "\(bad.prefix(20))") { try BrowserStream.decode(Array(bad.utf8)) }
        }
        #expect(BrowserStream.ended(.caller) == #"{"event":"ended","reason":"caller"}"#)
        #expect(BrowserStream.started(callID: "c\"1").contains(#""call_id":"c\"1""#))
    }
}

struct SlowReaderTests {
    /// A gateway that fell behind fills the queue while its caller reads: frames are dropped, the leg goes on.
    @Test func aFullQueueWhoseSocketStillTakesWritesDropsFramesAndNeverCloses() {
        var judge = SlowReader(patience: .seconds(5))
        let start = ContinuousClock.now
        for second in 0..<60 {
            let now = start + .seconds(second)
            #expect(judge.queueFull(at: now) == .drop)
            #expect(judge.queueFull(at: now + .milliseconds(900)) == .drop)
            judge.wrote()  // the socket took a write in between
        }
        #expect(judge.dropped == 120)
    }

    /// A socket that takes nothing while its queue stays full is a slow reader once `patience` has passed, and not
    /// a moment before.
    @Test func aSocketThatTakesNothingForThePatienceIsASlowReader() {
        var judge = SlowReader(patience: .seconds(5))
        let start = ContinuousClock.now
        #expect(judge.queueFull(at: start) == .drop)
        #expect(judge.queueFull(at: start + .milliseconds(4_999)) == .drop)
        #expect(judge.queueFull(at: start + .seconds(5)) == .slowReader)
        // A write restarts the count from the next time the queue is full.
        judge.wrote()
        #expect(judge.queueFull(at: start + .seconds(30)) == .drop)
        #expect(judge.queueFull(at: start + .seconds(34)) == .drop)
        #expect(judge.queueFull(at: start + .seconds(35)) == .slowReader)
    }
}
