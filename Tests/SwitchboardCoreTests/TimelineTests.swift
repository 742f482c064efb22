import Foundation
import SwitchboardCore
import Testing

@Suite struct TimelineTests {
    @Test func anEventIsCheckedAndRoundTripsThroughAStreamEntry() throws {
        let event = TimelineEvent(atMillis: 1_765_000_000_000, source: .router, member: "router-1", type: "placed",
                                  attributes: ["worker": "w1", "offers": "2", "note": "a, b = c"])
        try event.validate()
        let fields = event.streamFields
        #expect(Array(fields.prefix(8)) == ["t", "1765000000000", "src", "router", "id", "router-1", "type", "placed"])
        let pairs = stride(from: 0, to: fields.count, by: 2).map { (fields[$0], fields[$0 + 1]) }
        #expect(TimelineEvent(streamFields: pairs) == event)
        #expect(TimelineEvent(streamFields: [("t", "1"), ("src", "nobody"), ("id", "x"), ("type", "y")]) == nil)
        #expect(TimelineEvent(streamFields: [("src", "worker"), ("id", "x"), ("type", "y")]) == nil)

        var bad = [event]
        bad.append(TimelineEvent(atMillis: -5, source: .worker, member: "w", type: "x"))
        bad.append(TimelineEvent(atMillis: 1_765_000_000_000, source: .worker, member: "w 1", type: "x"))
        bad.append(TimelineEvent(atMillis: 1_765_000_000_000, source: .worker, member: "w", type: "no.dots"))
        bad.append(TimelineEvent(atMillis: 1_765_000_000_000, source: .worker, member: "w", type: "x", attributes: ["k": String(repeating: "v", count: 257)]))
        bad.append(TimelineEvent(atMillis: 1_765_000_000_000, source: .worker, member: "w", type: "x", attributes: ["k": "line\nbreak"]))
        bad.append(TimelineEvent(atMillis: 1_765_000_000_000, source: .worker, member: "w", type: "x",
                                 attributes: Dictionary(uniqueKeysWithValues: (0..<17).map { ("k\($0)", "v") })))
        for event in bad.dropFirst() {
            #expect(throws: SwitchboardError.self) { try event.validate() }
        }
    }

    @Test func aTimelineIsInTimeOrderAndKeepsEachMembersOrderOnTies() throws {
        func at(_ ms: Int64, _ member: String, _ type: String) -> TimelineEvent {
            TimelineEvent(atMillis: ms, source: .worker, member: member, type: type)
        }
        // As two writers flushed them: each one's in its own order, the two interleaved out of time order.
        let written = [at(10, "a", "started"), at(30, "a", "x"), at(30, "a", "y"), at(20, "b", "p"), at(30, "b", "q"), at(5, "b", "o")]
        let timeline = Timeline(callID: "c1", events: written, dropped: 0)
        #expect(timeline.events.map(\.type) == ["o", "started", "p", "x", "y", "q"])
        let json = try JSONEncoder().encode(timeline)
        #expect(try JSONDecoder().decode(Timeline.self, from: json) == timeline)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(object["call_id"] as? String == "c1" && (object["events"] as? [[String: Any]])?.first?["at_ms"] as? Int == 5)
    }
}

@Suite struct SpeechAndTurnTests {
    /// Feeds `pattern` (L loud, q quiet), one 20 ms frame per character from `from`.
    func feed(_ detector: inout SpeechDetector, _ pattern: String, from: Int64 = 0) -> [SpeechDetector.Change] {
        pattern.enumerated().compactMap { i, c in detector.frame(rms: c == "L" ? 2_000 : 10, atMillis: from + Int64(i) * 20) }
    }

    @Test func speechStartsWithThreeLoudFramesAndStopsAfterAHangover() {
        var detector = SpeechDetector()
        // A click (two loud frames) is not speech; then speech from frame 5 to 14 with a 200 ms pause inside.
        let changes = feed(&detector, "qLLqq" + "LLLLL" + "qqqqqqqqqq" + "LLLLL" + String(repeating: "q", count: 20))
        #expect(changes == [.started(atMillis: 100), .stopped(atMillis: 500)])
        #expect(!detector.speaking)
        var open = SpeechDetector()
        _ = feed(&open, "LLLL")
        #expect(open.finish() == .stopped(atMillis: 80) && open.finish() == nil)
    }

    @Test func aTurnIsTheAgentAnsweringACallerWhoStopped() {
        var turns = TurnTracker()
        // The agent talking over the caller is no turn; answering after the caller stopped is.
        turns.caller(.started(atMillis: 0))
        #expect(turns.agent(.started(atMillis: 500)) == nil)
        turns.caller(.stopped(atMillis: 1_000))
        #expect(turns.agent(.started(atMillis: 1_640)) == TurnTracker.Turn(number: 1, callerStoppedAt: 1_000, agentStartedAt: 1_640))
        #expect(turns.agent(.started(atMillis: 2_000)) == nil, "one answer per turn")
        // A caller who speaks again before the agent answers: the turn runs from the second stop.
        turns.caller(.started(atMillis: 3_000))
        turns.caller(.stopped(atMillis: 3_500))
        turns.caller(.started(atMillis: 3_700))
        turns.caller(.stopped(atMillis: 4_000))
        #expect(turns.agent(.started(atMillis: 4_300))?.latencyMillis == 300)
        #expect(turns.turns == 2)
    }

    @Test func aLegObserverReportsSpeechTurnsAndPlayoutOnTheMediaClock() {
        var observer = LegObserver(member: "gw-1", statsEveryMillis: 1_000)
        var events: [TimelineEvent] = []
        var stats = JitterBuffer.Stats()
        for i in 0..<150 {
            let at = Int64(i) * 20
            // The caller speaks for 0.4 s; the agent answers 0.6 s after the caller stopped, for 0.4 s.
            events += observer.caller(rms: (10..<30).contains(i) ? 3_000 : 0, atMillis: at)
            stats.played += 1
            events += observer.agent(rms: (60..<80).contains(i) ? 3_000 : 0, atMillis: at, stats: stats, jitterMillis: 2.5)
        }
        events += observer.finish()
        let speech = events.filter { $0.type.hasPrefix("speech") }.map { "\($0.attributes["channel"]!) \($0.type) \($0.atMillis)" }
        #expect(speech == ["caller speech_started 200", "caller speech_stopped 600", "agent speech_started 1200", "agent speech_stopped 1600"])
        let turn = events.first { $0.type == "turn" }
        #expect(turn?.attributes == ["number": "1", "latency_ms": "600", "caller_stopped_at_ms": "600"] && turn?.atMillis == 1_200)
        let media = events.filter { $0.type == "media" }
        #expect(media.count == 2 && media[0].attributes["played"] == "51" && media[0].attributes["jitter_ms"] == "2.5", "\(media)")
        #expect(events.allSatisfy { $0.source == .gateway && $0.member == "gw-1" && (try? $0.validate()) != nil })
    }
}
