import Foundation
import SwitchboardCore
import Testing

@Suite struct AgentPlayoutTests {
    private func samples(_ count: Int, _ value: Int16 = 1) -> [Int16] { Array(repeating: value, count: count) }

    @Test func audioOfAnySizeLeavesInFramesOneATick() {
        var playout = AgentPlayout(frameSamples: 160)
        playout.enqueue(samples(100, 1))
        playout.enqueue(samples(380, 2))  // 480 in all: three frames
        var frames: [[Int16]] = []
        for _ in 0..<5 { if let frame = playout.tick().frame { frames.append(frame) } }
        #expect(frames.count == 3)
        #expect(frames.allSatisfy { $0.count == 160 })
        #expect(frames[0].prefix(100).allSatisfy { $0 == 1 } && frames[0].suffix(60).allSatisfy { $0 == 2 })
        #expect(playout.isEmpty && playout.queuedSamples == 0)
    }

    @Test func aShortTailWaitsOneTickForMoreThenGoesPadded() {
        var playout = AgentPlayout(frameSamples: 160)
        playout.enqueue(samples(200))
        #expect(playout.tick().frame?.count == 160)
        #expect(playout.tick().frame == nil)  // 40 left: one tick for the agent to send more
        playout.enqueue(samples(120, 3))  // it did: a whole frame again
        let joined = playout.tick().frame
        #expect(joined?.prefix(40).allSatisfy { $0 == 1 } == true && joined?.suffix(120).allSatisfy { $0 == 3 } == true)
        playout.enqueue(samples(10))
        #expect(playout.tick().frame == nil)
        let padded = playout.tick().frame
        #expect(padded?.count == 160 && padded?.prefix(10).allSatisfy { $0 == 1 } == true && padded?.suffix(150).allSatisfy { $0 == 0 } == true)
    }

    @Test func aMarkReturnsWhenItsAudioHasLeftAndAtOnceWhenNothingIsQueued() {
        var playout = AgentPlayout(frameSamples: 160)
        #expect(playout.enqueue(mark: "idle") == ["idle"])
        playout.enqueue(samples(320))
        #expect(playout.enqueue(mark: "a").isEmpty)
        playout.enqueue(samples(80))  // a short piece before a mark goes at once, padded: the mark must not wait
        #expect(playout.enqueue(mark: "b").isEmpty)
        #expect(playout.enqueue(mark: "c").isEmpty)
        let first = playout.tick()
        #expect(first.frame != nil && first.marks.isEmpty)
        let second = playout.tick()
        #expect(second.frame != nil && second.marks == ["a"])
        let third = playout.tick()
        #expect(third.frame?.suffix(80).allSatisfy { $0 == 0 } == true)
        #expect(third.marks == ["b", "c"])
        #expect(playout.tick() == .init(frame: nil, marks: []))
    }

    @Test func clearDropsEverythingAtOnceAndReturnsTheWaitingMarksInOrder() {
        var playout = AgentPlayout(frameSamples: 160)
        playout.enqueue(samples(8_000))  // a second of speech
        _ = playout.enqueue(mark: "m1")
        playout.enqueue(samples(1_600))
        _ = playout.enqueue(mark: "m2")
        #expect(playout.tick().frame != nil)
        #expect(playout.clear() == ["m1", "m2"])
        // The very next tick sends nothing: barge-in silences the agent within one frame.
        #expect(playout.tick() == .init(frame: nil, marks: []))
        #expect(playout.queuedSamples == 0)
        playout.enqueue(samples(160, 7))
        #expect(playout.tick().frame == samples(160, 7))
    }

    @Test func theQueueIsBoundedAndCountsWhatItDrops() {
        var playout = AgentPlayout(frameSamples: 160, maxQueuedSamples: 1_000)
        playout.enqueue(samples(900))
        playout.enqueue(samples(300))
        #expect(playout.queuedSamples == 1_000)
        #expect(playout.droppedSamples == 200)
        _ = playout.tick()
        playout.enqueue(samples(160))
        #expect(playout.queuedSamples == 1_000)
        #expect(playout.droppedSamples == 200)
    }

    @Test func longRunsStayCompact() {
        var playout = AgentPlayout(frameSamples: 160)
        var sent = 0
        for i in 0..<10_000 {
            playout.enqueue(samples(173))
            if i % 7 == 0 { _ = playout.enqueue(mark: "m\(i)") }
            if playout.tick().frame != nil { sent += 1 }
        }
        while !playout.isEmpty { if playout.tick().frame != nil { sent += 1 } }
        // Every sample left, in frames; only mark boundaries and the tail pad.
        #expect(sent * 160 >= 10_000 * 173)
        #expect(sent * 160 < 10_000 * 173 + 160 * (10_000 / 7 + 2))
    }
}

@Suite struct AgentSupervisorTests {
    @Test func aHangUpEndsTheCallAndAClosedSessionDoesNothing() {
        var supervisor = AgentSupervisor()
        #expect(supervisor.sessionEnded(.hungUp, nowMillis: 0) == .endCall(.agentHangup))
        #expect(supervisor.sessionEnded(.closedByCall, nowMillis: 0) == .none)
    }

    @Test func oneFailureRestartsASecondWithinTheWindowEndsTheCall() {
        var supervisor = AgentSupervisor(maxRestarts: 1, windowMillis: 60_000)
        #expect(supervisor.sessionEnded(.failed("socket_lost"), nowMillis: 1_000) == .restart)
        #expect(supervisor.sessionEnded(.failed("unreachable"), nowMillis: 30_000) == .endCall(.agentFailed))
    }

    @Test func failuresFarApartEachGetTheirRestart() {
        var supervisor = AgentSupervisor(maxRestarts: 1, windowMillis: 60_000)
        for hour in 0..<24 {
            #expect(supervisor.sessionEnded(.failed("socket_lost"), nowMillis: Int64(hour) * 3_600_000) == .restart)
        }
        #expect(supervisor.restarts.count == 1)
    }
}

@Suite struct MediaStreamMessageTests {
    @Test func theWorkerSpeaksTwilioMediaStreams() throws {
        let start = MediaStream.start(.init(accountSid: "AC1", streamSid: "MZ1", callSid: "c-1",
                                            customParameters: ["state": #"{"a":"b\"c"}"#, "resumed": "true"]))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(start.utf8)) as? [String: Any])
        let body = try #require(object["start"] as? [String: Any])
        #expect(object["event"] as? String == "start" && object["streamSid"] as? String == "MZ1" && object["sequenceNumber"] as? String == "1")
        #expect(body["callSid"] as? String == "c-1" && body["streamSid"] as? String == "MZ1" && body["tracks"] as? [String] == ["inbound"])
        let format = try #require(body["mediaFormat"] as? [String: Any])
        #expect(format["encoding"] as? String == "audio/x-mulaw" && format["sampleRate"] as? Int == 8000)
        #expect((body["customParameters"] as? [String: String])?["state"] == #"{"a":"b\"c"}"#)

        let media = MediaStream.media(quotedStreamSid: JSONText.quoted("MZ1"), sequence: 2, chunk: 1, timestampMillis: 0, payload: [0xFF, 0x7F])
        let decoded = try #require(try JSONSerialization.jsonObject(with: Data(media.utf8)) as? [String: Any])
        #expect((decoded["media"] as? [String: Any])?["payload"] as? String == "/38=")
        #expect((decoded["media"] as? [String: Any])?["chunk"] as? String == "1")

        let mark = MediaStream.mark(quotedStreamSid: "\"MZ1\"", sequence: 9, name: "a\nb\u{1}")
        let markObject = try #require(try JSONSerialization.jsonObject(with: Data(mark.utf8)) as? [String: Any])
        #expect((markObject["mark"] as? [String: Any])?["name"] as? String == "a\nb\u{1}")
    }

    @Test func agentMessagesDecodeOrAreRefusedWithACode() throws {
        func decode(_ text: String) throws(SwitchboardError) -> MediaStream.AgentEvent { try MediaStream.decodeAgentMessage(Array(text.utf8)) }
        #expect(try decode(#"{"event":"media","media":{"payload":"/38="}}"#) == .media([0xFF, 0x7F]))
        #expect(try decode(#"{"event":"mark","mark":{"name":"x"}}"#) == .mark("x"))
        #expect(try decode(#"{"event":"clear","streamSid":"MZ"}"#) == .clear)
        #expect(try decode(#"{"event":"checkpoint","state":{"b":1,"a":[true]}}"#) == .checkpoint(#"{"a":[true],"b":1}"#))
        #expect(try decode(#"{"event":"checkpoint","state":3}"#) == .checkpoint("3"))
        #expect(try decode(#"{"event":"transcript"}"#) == .other("transcript"))
        for bad in ["nope", "[]", #"{"event":1}"#, #"{"event":"media"}"#, #"{"event":"media","media":{"payload":"%%"}}"#,
                    #"{"event":"mark","mark":{}}"#, #"{"event":"checkpoint"}"#] {
            #expect(throws: SwitchboardError.self, "\(bad)") { try decode(bad) }
            do { _ = try decode(bad) } catch { #expect(error.code == .badMessage) }
        }
        let big = #"{"event":"checkpoint","state":""# + String(repeating: "x", count: 70_000) + #""}"#
        do { _ = try decode(big); Issue.record("a 70 KB state was taken") } catch { #expect(error.code == .tooLarge) }
        let huge = String(repeating: " ", count: MediaStream.maxAgentMessageBytes + 1)
        do { _ = try decode(huge); Issue.record("an oversized message was taken") } catch { #expect(error.code == .tooLarge) }
    }
}
