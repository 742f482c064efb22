import SwitchboardCore
import Testing

@Suite struct StereoAlignerTests {
    /// A frame of 4 samples all `value` (a frame's samples are its identity in these tests).
    func frame(_ value: Int16) -> [Int16] { [Int16](repeating: value, count: 4) }
    func left(_ stereo: [[Int16]]) -> [Int16] { stereo.map { $0[0] } }
    func right(_ stereo: [[Int16]]) -> [Int16] { stereo.map { $0[1] } }

    @Test func bothChannelsLineUpSlotBySlot() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 5, maxFrames: 1_000)
        for slot in 0..<10 {
            a.caller(frame(Int16(slot + 1)), arrivalSlot: slot)
            a.agent(frame(Int16(100 + slot)), slot: slot)
        }
        let out = a.take()
        #expect(left(out) == (1...10).map(Int16.init) && right(out) == (100..<110).map(Int16.init))
        #expect(out.allSatisfy { $0.count == 8 })
    }

    @Test func aStallThenABurstOfTheCallerIsWrittenOnceInItsPlace() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 10, maxFrames: 1_000)
        for slot in 0..<20 { a.agent(nil, slot: slot) }
        for slot in 0..<3 { a.caller(frame(Int16(slot + 1)), arrivalSlot: slot) }
        // Frames 4...8 were held up by the network and arrive together at slot 8.
        for n in 4...8 { a.caller(frame(Int16(n)), arrivalSlot: 8) }
        for slot in 8..<20 { a.caller(frame(Int16(slot + 1)), arrivalSlot: slot) }
        let out = a.finish()
        #expect(left(out) == (1...20).map(Int16.init), "each frame once, in order, no gap")
    }

    @Test func aLongSilenceOfTheCallerIsKept() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 5, maxFrames: 1_000)
        for slot in 0..<40 { a.agent(nil, slot: slot) }
        a.caller(frame(1), arrivalSlot: 0)
        a.caller(frame(2), arrivalSlot: 30)  // it sent nothing for 30 slots: that silence is real
        let out = a.finish()
        #expect(out.count == 40 && left(out)[0] == 1 && left(out)[30] == 2)
        #expect(left(out)[1..<30].allSatisfy { $0 == 0 })
    }

    @Test func whatTheCallerHeardIsTheAgentChannelWithItsGaps() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 5, maxFrames: 1_000)
        a.agent(frame(7), slot: 0)
        a.agent(frame(8), slot: 1)
        a.agent(frame(9), slot: 1)  // a second tick in the same slot: not heard twice
        a.agent(frame(10), slot: 4)  // the clock stalled over slots 2 and 3
        for slot in 0..<5 { a.caller(frame(1), arrivalSlot: slot) }
        let out = a.take()
        #expect(right(out) == [7, 8, 0, 0, 10] && a.overlapped == 1)
    }

    @Test func aChannelFarBehindIsSilenceAndHeldFramesStayBounded() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 5, maxFrames: 1_000)
        for slot in 0..<20 { a.agent(frame(5), slot: slot) }
        let out = a.take()  // the caller never came: what is more than 5 slots old goes out with silence on the left
        #expect(out.count == 15 && left(out).allSatisfy { $0 == 0 } && right(out).allSatisfy { $0 == 5 })
        // A caller frame arriving now belongs after what went out: it is never dropped.
        a.caller(frame(3), arrivalSlot: 2)
        #expect(left(a.finish()).contains(3))
    }

    @Test func theRecordingStopsAtItsLongest() {
        var a = StereoAligner(frameSamples: 4, maxLagFrames: 5, maxFrames: 8)
        for slot in 0..<20 {
            a.caller(frame(1), arrivalSlot: slot)
            a.agent(frame(2), slot: slot)
        }
        #expect(a.take().count == 8 && a.capped)
        a.agent(frame(2), slot: 21)
        #expect(a.finish().isEmpty)
    }

    @Test func peaksAreTheLoudestSampleOfEachChannel() {
        #expect(StereoAligner.peaks([0, 0, 0, 0]) == (0, 0))
        let loud = StereoAligner.peaks([Int16.max, 100, -32768, -100])
        #expect(loud.left == 255 && loud.right > 10 && loud.right < 30)
    }
}

@Suite struct ByteRangeTests {
    @Test func rangesAreReadAsRFC9110Says() throws {
        #expect(try ByteRange.parse(nil, size: 100) == nil)
        #expect(try ByteRange.parse("bytes=0-", size: 100) == 0..<100)
        #expect(try ByteRange.parse("bytes=10-19", size: 100) == 10..<20)
        #expect(try ByteRange.parse("bytes=90-200", size: 100) == 90..<100)
        #expect(try ByteRange.parse("bytes=-30", size: 100) == 70..<100)
        #expect(try ByteRange.parse("bytes=-300", size: 100) == 0..<100)
        // Not served as ranges (the whole file is): several ranges, other units, nonsense.
        for header in ["bytes=0-1,5-6", "items=0-5", "bytes=5-2", "bytes=x-3", "bytes=-", "bytes=--3"] {
            #expect(try ByteRange.parse(header, size: 100) == nil, "\(header)")
        }
        for header in ["bytes=100-", "bytes=150-160", "bytes=-0"] {
            #expect(throws: SwitchboardError.self, "\(header)") { try ByteRange.parse(header, size: 100) }
        }
    }

    @Test func recordingPathsStayInTheirDirectory() throws {
        #expect(try RecordingInfo.paths(tenant: "acme", callID: "c123").audio == "acme/c123.opus")
        for (tenant, call) in [("..", "c1"), ("acme", "../../etc/passwd"), ("a/b", "c1"), ("acme", ""), ("acme", "c1.opus")] {
            #expect(throws: SwitchboardError.self) { try RecordingInfo.paths(tenant: tenant, callID: call) }
        }
        let info = RecordingInfo(callID: "c1", tenant: "acme", gateway: "gw", startedAtMillis: 1, sampleRate: 8_000, bitrate: 32_000)
        #expect(try RecordingInfo.decodeStored(WireCodec.encode(info)) == info)
        var evil = info
        evil.tenant = "../x"
        #expect(throws: SwitchboardError.self) { try RecordingInfo.decodeStored(WireCodec.encode(evil)) }
    }
}

@Suite struct CallQueryTests {
    let now: Int64 = 1_765_000_000_000  // 2025-12-06T05:46:40Z

    @Test func aQueryIsReadFromTheRequestWithDefaults() throws {
        let q = try CallQuery.parse([:], nowMillis: now)
        #expect(q.untilMillis == now && q.sinceMillis == now - 86_400_000 && q.limit == 50 && q.tenant == nil)
        #expect(q.days == ["2025-12-06", "2025-12-05"])
        let full = try CallQuery.parse(["tenant": "acme", "since": "2025-12-01T00:00:00Z", "until": "\(now)", "end_reason": "worker_lost",
                                        "worker": "w-1", "version": "1.2.0", "state": "ended", "limit": "10", "cursor": "2.40"], nowMillis: now)
        #expect(full.tenant == "acme" && full.sinceMillis == 1_764_547_200_000 && full.endReason == "worker_lost" && full.limit == 10)
        #expect(full.days.count == 6 && full.days.first == "2025-12-06" && full.days.last == "2025-12-01")
        #expect(full.cursor == CallQuery.Cursor(day: 2, offset: 40))
        // A window that ends on a day's first millisecond still touches only the days it covers.
        let edge = try CallQuery.parse(["since": "1764979200000", "until": "1764979200000"], nowMillis: now)
        #expect(edge.days == ["2025-12-06"])
    }

    @Test func badQueriesGetClearErrors() {
        for bad in [["since": "yesterday"], ["since": "\(now)", "until": "\(now - 1)"], ["since": "0", "until": "\(now)"],
                    ["limit": "0"], ["limit": "201"], ["limit": "x"], ["tenant": "../x"], ["worker": "a b"], ["state": "gone"],
                    ["end_reason": "Caller!"], ["cursor": "9.0"], ["cursor": "x"], ["cursor": "0.-1"]] {
            #expect(throws: SwitchboardError.self, "\(bad)") { try CallQuery.parse(bad, nowMillis: now) }
        }
    }

    @Test func entriesMatchTheFilters() throws {
        var q = try CallQuery.parse(["end_reason": "caller", "worker": "w1"], nowMillis: now)
        let record = CallRecord(callID: "c1", tenant: "acme", workerID: "w1", version: "1", region: "r", state: .ended)
        var ended = record
        ended.endReason = "caller"
        #expect(q.matches(CallListEntry(callID: "c1", tenant: "acme", placedAtMillis: now, record: ended)))
        #expect(!q.matches(CallListEntry(callID: "c1", tenant: "acme", placedAtMillis: now, record: record)), "no end reason yet")
        #expect(!q.matches(CallListEntry(callID: "c1", tenant: "acme", placedAtMillis: now, record: nil)), "expired: nothing to match")
        q = try CallQuery.parse(["tenant": "acme"], nowMillis: now)
        #expect(q.matches(CallListEntry(callID: "c1", tenant: "acme", placedAtMillis: now, record: nil)))
        #expect(!q.matches(CallListEntry(callID: "c1", tenant: "other", placedAtMillis: now, record: ended)))
    }
}
