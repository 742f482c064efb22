import Testing
@testable import SwitchboardCore

@Suite struct BusRoleTests {
    let s = Subjects.default

    @Test func aWorkersOwnCredentialNamesOnlyItself() {
        let p = BusRole.worker.permissions(s, member: "w1")
        #expect(p.publish == ["sb.heartbeat.w1", "sb.migrate.w1", "sb.media.w1.*.out", "sb.call.w1.*.events"])
        #expect(p.subscribe == ["sb.worker.w1.>", "sb.media.w1.*.in", "sb.call.w1.*.end", "sb.deploy", "_INBOX.worker.w1.>"])
        #expect(p.responses)
        #expect(BusRole.worker.inboxPrefix(member: "w1") == "_INBOX.worker.w1")
    }

    @Test func aSharedCredentialCoversTheWholeRole() {
        let p = BusRole.worker.permissions(s)
        #expect(p.publish == ["sb.heartbeat.*", "sb.migrate.*", "sb.media.*.*.out", "sb.call.*.*.events"])
        #expect(p.subscribe.last == "_INBOX.worker.>")
        #expect(BusRole.gateway.permissions(s, member: "g1") == .init(publish: ["sb.route"], subscribe: ["_INBOX.gateway.g1.>"], responses: false))
        #expect(BusRole.router.inboxPrefix(member: "r1") == "_INBOX.router", "routers share one inbox space")
        #expect(BusRole.router.permissions(s).subscribe.contains("sb.heartbeat.*"))
    }

    @Test func aCallersCredentialFollowsItsCallToAnyWorker() {
        let p = BusRole.call(s, "c1")
        #expect(p.publish == ["sb.media.*.c1.in", "sb.call.*.c1.end"])
        #expect(p.subscribe == ["sb.media.*.c1.out", "sb.call.*.c1.events"])
        #expect(!p.responses)
    }

    @Test func theSenderOfAPerWorkerSubjectIsItsLastToken() {
        #expect(Subjects.sender(of: s.heartbeat(worker: "w-7")) == "w-7")
        #expect(Subjects.sender(of: s.migrate(worker: "a_b")) == "a_b")
        #expect(Subjects.sender(of: "plain") == "plain")
    }
}
