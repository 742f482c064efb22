import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

@Suite("Bad input")
struct BadInputTests {
    @Test func garbageAndOversizedInputGetCodedErrorsAndNothingDies() async throws {
        let cluster = try await TestCluster()
        let router = try await cluster.addRouter()
        let worker = try await cluster.addWorker()
        try await cluster.waitForWorkers(1)
        let garbage: [UInt8] = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x7b]
        let huge = [UInt8](repeating: UInt8(ascii: "x"), count: 70 * 1024)

        // HTTP
        let cases: [(String, String, [UInt8]?, Int, String)] = [
            ("POST", "/v1/calls", garbage, 400, "bad_request"),
            ("POST", "/v1/calls", [], 400, "bad_request"),
            ("POST", "/v1/calls", Array(#"{"tenant": 42}"#.utf8), 400, "bad_request"),
            ("POST", "/v1/calls", Array(#"{"tenant": "a b"}"#.utf8), 400, "bad_request"),
            ("POST", "/v1/calls", Array(#"{"v": 9, "tenant": "t"}"#.utf8), 400, "bad_request"),
            ("POST", "/v1/calls", huge, 413, "too_large"),
            ("GET", "/v1/calls/not..an.id", nil, 400, "bad_request"),
            ("GET", "/v1/calls/cunknown", nil, 404, "not_found"),
            ("GET", "/v1/nothing-here", nil, 404, "not_found"),
        ]
        for (method, path, body, status, code) in cases {
            let (got, data) = try await cluster.http(method, path, body: body)
            #expect(got == status && errorCode(data) == code, "\(method) \(path): \(got) \(String(decoding: data, as: UTF8.self))")
        }

        // NATS route subject
        for payload in [garbage, [], Array(#"{"v":1}"#.utf8), Array(repeating: UInt8(ascii: " "), count: 20 * 1024)] {
            let reply = try RouteReply.decode(try await cluster.client.request(cluster.subjects.route, payload: payload).payload)
            #expect(reply.error != nil, "route accepted \(payload.prefix(8))")
            #expect(["bad_request", "too_large"].contains(reply.error?.code ?? ""))
        }
        // Heartbeat subject: counted and ignored.
        try cluster.client.publish(cluster.subjects.heartbeat, payload: garbage)
        try cluster.client.publish(cluster.subjects.heartbeat, payload: huge)
        // Offer subject: refused with bad_offer.
        let offerReply = try await cluster.client.request(cluster.subjects.offer(worker: worker.id), payload: garbage)
        #expect(try OfferReply.decode(offerReply.payload).reason == .badOffer)

        // A live call's end and media subjects.
        let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
        try await eventually("active") { worker.worker.activeCalls == 1 }
        let endReply = try await cluster.client.request(cluster.subjects.end(call: call.callID), payload: garbage)
        #expect(try RouteReply.decode(endReply.payload).error?.code == "bad_request")
        for bad in [garbage, [], huge.prefix(2000).map { $0 }, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]] {
            try cluster.client.publish(call.media.in, payload: bad)
        }
        try await cluster.client.flush()
        try await eventually("bad messages counted") {
            (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "heartbeat", "code": "bad_message"]) ?? 0) >= 1
                && (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "heartbeat", "code": "too_large"]) ?? 0) >= 1
                && (worker.worker.metrics.value("switchboard_bad_messages_total", ["kind": "media", "code": "bad_message"]) ?? 0) >= 2
        }
        // The call survived its garbage, and everything still works.
        #expect(worker.worker.activeCalls == 1)
        #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call != nil)
        #expect(try await cluster.http("GET", "/healthz").status == 200)
        await cluster.shutdown()
    }
}
