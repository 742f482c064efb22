import SwitchboardCore
import Testing

@Suite struct CallRecordTests {
    @Test func readsWhatRouterAndWorkerWrote() throws {
        let placed = CallRecord(callID: "c1", tenant: "acme", workerID: "w1", version: "1.0", region: "eu", state: .placed, createdAt: 5)
        var fields = Dictionary(uniqueKeysWithValues: placed.placementFields)
        #expect(CallRecord(callID: "c1", fields: fields) == placed)
        fields["state"] = "ended"
        fields["ended_at"] = "9"
        fields["end_reason"] = "caller"
        let ended = try #require(CallRecord(callID: "c1", fields: fields))
        #expect(ended.state == .ended && ended.endedAt == 9 && ended.endReason == "caller")
        #expect(CallRecord(callID: "c1", fields: [:]) == nil)
        #expect(CallRecord(callID: "c1", fields: ["state": "active"]) == nil)
    }

    @Test func apiMappingOfErrorCodes() {
        #expect(SwitchboardError(.badMessage, "x").api == (400, "bad_request"))
        #expect(SwitchboardError(.invalidArgument, "x").api == (400, "bad_request"))
        #expect(SwitchboardError(.notFound, "x").api == (404, "not_found"))
        #expect(SwitchboardError(.tooLarge, "x").api == (413, "too_large"))
        #expect(SwitchboardError(.noCapacity, "x").api == (503, "no_capacity"))
        #expect(SwitchboardError(.connectionFailed, "x").api == (503, "unavailable"))
        #expect(RouteReply(error: SwitchboardError(.badMessage, "bad")).error?.code == "bad_request")
    }
}
