import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

@Suite("Bad input")
struct BadInputTests {
    @Test func garbageAndOversizedInputGetCodedErrorsAndNothingDies() async throws {
        try await withTestCluster { cluster in
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
                let reply = try RouteReply.decode(try await cluster.client.request(cluster.subjects.route, payload: payload, timeout: .seconds(10)).payload)
                #expect(reply.error != nil, "route accepted \(payload.prefix(8))")
                #expect(["bad_request", "too_large"].contains(reply.error?.code ?? ""))
            }
            // Heartbeat subject: counted and ignored.
            try cluster.client.publish(cluster.subjects.heartbeat(worker: worker.id), payload: garbage)
            try cluster.client.publish(cluster.subjects.heartbeat(worker: worker.id), payload: huge)
            // Offer subject: refused with bad_offer.
            let offerReply = try await cluster.client.request(cluster.subjects.offer(worker: worker.id), payload: garbage, timeout: .seconds(10))
            #expect(try OfferReply.decode(offerReply.payload).reason == .badOffer)

            // A live call's end and media subjects.
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            try await eventually("active") { worker.worker.activeCalls == 1 }
            // A heartbeat for this worker sent under another worker's id (a forged incarnation, which
            // would fail over the live call): refused, counted; the call goes on (below).
            try cluster.client.publish(cluster.subjects.heartbeat(worker: "mallory"), payload: Heartbeat(
                workerID: worker.id, version: "1.0.0", region: "local", zone: "local-a", state: .ready, capacity: 4, activeCalls: 0, cpu: 0,
                memoryUsedBytes: 0, memoryLimitBytes: 0, seq: 1, incarnation: "forged").encoded())
            // A migrate request for this call from a worker that does not hold it: refused, counted.
            let forgedMove = try await cluster.client.request(cluster.subjects.migrate(worker: "mallory"),
                                                              payload: MigrateRequest(callID: call.callID, requestedBy: "drain:\(worker.id)").encoded(),
                                                              timeout: .seconds(10))
            #expect(try MigrateReply.decode(forgedMove.payload).error?.code == "forbidden")
            let endReply = try await cluster.client.request(cluster.subjects.end(worker: call.workerID, call: call.callID), payload: garbage, timeout: .seconds(10))
            #expect(try RouteReply.decode(endReply.payload).error?.code == "bad_request")
            for bad in [garbage, [], huge.prefix(2000).map { $0 }, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]] {
                try cluster.client.publish(call.media.in, payload: bad)
            }
            try await cluster.client.flush()
            try await eventually("bad messages counted") {
                (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "heartbeat", "code": "bad_message"]) ?? 0) >= 1
                    && (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "heartbeat", "code": "too_large"]) ?? 0) >= 1
                    && (worker.worker.metrics.value("switchboard_bad_messages_total", ["kind": "media", "code": "bad_message"]) ?? 0) >= 2
                    && (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "heartbeat", "code": "forbidden"]) ?? 0) >= 1
                    && (router.router.metrics.value("switchboard_bad_messages_total", ["kind": "migrate_request", "code": "forbidden"]) ?? 0) >= 1
            }
            // The call survived its garbage, and everything still works.
            #expect(worker.worker.activeCalls == 1)
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call != nil)
            #expect(try await cluster.http("GET", "/healthz").status == 200)
        }
    }

    /// Messages built to hit arithmetic at its limits (a deadline of Int64.min once killed a worker), sent to a
    /// live router and worker running as processes: each is refused with a code or ignored, both stay up, and
    /// a call placed afterwards speaks.
    @Test func craftedMessagesAtTheLimitsKillNeitherRouterNorWorker() async throws {
        try await withTestCluster { cluster in
            let router = try cluster.spawnRouter(id: "r1")
            try await router.waitForOutput("listening on", timeout: .seconds(30))
            let worker = try cluster.spawnWorker(id: "w1", ["--handler", "tone"])
            try await eventually(timeout: .seconds(30), "the router places on w1") { (try? await cluster.routeByNATS(RouteRequest(tenant: "t")).call) != nil }
            let min = "-9223372036854775808", max = "9223372036854775807", umax = "18446744073709551615"
            func drain(_ deadline: String, _ requested: String = "0") -> String {
                #"{"worker_id":"w1","deadline_ms":\#(deadline),"at_deadline":"migrate","requested_by":"x","requested_at_ms":\#(requested)}"#
            }
            func checkpoint(_ takenAt: String, seq: String = "1") -> String {
                #"{"v":1,"seq":\#(seq),"media_seq":4294967295,"media_ts":4294967295,"taken_at_ms":\#(takenAt)}"#
            }
            let requests: [(String, String)] = [
                (cluster.subjects.control(worker: "w1"), #"{"v":1,"op":"drain","drain":\#(drain(min))}"#),
                (cluster.subjects.control(worker: "w1"), #"{"v":1,"op":"drain","drain":\#(drain(max, max))}"#),
                (cluster.subjects.control(worker: "w1"), #"{"v":1,"op":"hold","call_id":"\#(String(repeating: "c", count: 5000))"}"#),
                (cluster.subjects.offer(worker: "w1"), #"{"v":1,"call_id":"c-x1","tenant":"t","metadata":{},"router_id":"r","resume":{"reason":"failover","from_worker":"w9","epoch":\#(max),"checkpoint":\#(checkpoint(min))}}"#),
                (cluster.subjects.offer(worker: "w1"), #"{"v":1,"call_id":"c-x2","tenant":"t","metadata":{},"router_id":"r","deploy_revision":\#(min),"resume":{"reason":"migrate","from_worker":"w9","checkpoint":\#(checkpoint(max, seq: umax))}}"#),
                (cluster.subjects.offer(worker: "w1"), #"{"v":1,"call_id":"c-x3","tenant":"t","metadata":{},"router_id":"r","deploy_revision":\#(max)}"#),
                (cluster.subjects.ping(worker: "w1"), String(repeating: "[", count: 5000)),
                (cluster.subjects.route, #"{"v":1,"tenant":"t","metadata":{"k":\#(String(repeating: "[", count: 3000))}}"#),
                (cluster.subjects.migrate(worker: "w1"), #"{"v":1,"call_id":"c-none","requested_by":"\#(String(repeating: "x", count: 10_000))"}"#),
            ]
            for (subject, body) in requests {
                _ = try? await cluster.client.request(subject, payload: Array(body.utf8), timeout: .seconds(5))
            }
            let broadcasts: [(String, String)] = [
                (cluster.subjects.heartbeat(worker: "w1"), #"{"v":1,"worker_id":"w1","version":"1","region":"local","zone":"local-a","state":"ready","capacity":\#(max),"active_calls":\#(min),"cpu":1e308,"memory_used_bytes":\#(max),"memory_limit_bytes":1,"seq":\#(umax),"incarnation":"i","accepted":\#(umax)}"#),
                (cluster.subjects.heartbeat(worker: "ghost"), #"{"v":1,"worker_id":"ghost","version":"1","region":"local","zone":"local-a","state":"ready","capacity":100000,"active_calls":0,"cpu":0,"memory_used_bytes":\#(max),"memory_limit_bytes":\#(max),"seq":\#(umax),"incarnation":"i","accepted":\#(umax)}"#),
                (cluster.subjects.drains, #"{"v":1,"worker_id":"w1","drain":\#(drain(min, min))}"#),
                (cluster.subjects.deploy, #"{"v":1,"policy":{"v":1,"revision":\#(max),"active":"1","previous":[],"retired":{"0":\#(max)},"rollback_window_ms":\#(max),"drain_deadline_ms":0,"at_deadline":"migrate","changed_at_ms":0,"changed_by":""}}"#),
                (cluster.subjects.deploy, #"{"v":1,"policy":{"v":1,"revision":5,"active":"1","canary":{"version":"2","percent":1e400,"by":"call"},"previous":[],"retired":{},"rollback_window_ms":0,"drain_deadline_ms":0,"at_deadline":"migrate","changed_at_ms":0,"changed_by":""}}"#),
            ]
            for (subject, body) in broadcasts { try cluster.client.publish(subject, payload: Array(body.utf8)) }
            try await cluster.client.flush()

            // Both alive, and a call placed now speaks.
            try await Task.sleep(for: .milliseconds(500))
            #expect(router.process.isRunning, "router died:\n\(router.output)")
            #expect(worker.process.isRunning, "worker died:\n\(worker.output)")
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            let tap = try AudioTap(cluster.client, call.media.out)
            try await eventually(timeout: .seconds(10), "the new call speaks") { tap.count >= 25 }
            #expect(call.workerID == "w1")
        }
    }
}
