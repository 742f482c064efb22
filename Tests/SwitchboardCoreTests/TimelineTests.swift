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
