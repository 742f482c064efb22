import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardOpus
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Testing

@Suite("Calls end to end")
struct CallFlowTests {
    @Test func callsRoutedByHTTPAndByNATSLandOnAWorkerAndAreRecorded() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(capacity: 4)
            try await cluster.waitForWorkers(1)

            let (status, body) = try await cluster.http("POST", "/v1/calls", body: Array(#"{"tenant":"acme","region":"local","metadata":{"from":"+3312"}}"#.utf8))
            #expect(status == 201)
            let byHTTP = try decodeJSON(Placement.self, body)
            #expect(byHTTP.workerID == worker.id && byHTTP.version == "1.0.0" && byHTTP.region == "local")
            #expect(byHTTP.media == MediaSubjects(in: cluster.subjects.mediaIn(worker: byHTTP.workerID, call: byHTTP.callID),
                                                  out: cluster.subjects.mediaOut(worker: "*", call: byHTTP.callID)))
            let text = String(decoding: body, as: UTF8.self)
            for key in ["\"call_id\"", "\"worker_id\"", "\"media\"", "\"in\"", "\"out\""] { #expect(text.contains(key)) }

            let reply = try await cluster.routeByNATS(RouteRequest(tenant: "acme"))
            let byNATS = try #require(reply.call)
            #expect(byNATS.workerID == worker.id && byNATS.callID != byHTTP.callID)

            // During the call: the record is active on the worker, and the worker's set holds both calls.
            try await eventually("both calls active in Redis") {
                let a = try await cluster.record(byHTTP.callID)["state"]
                let b = try await cluster.record(byNATS.callID)["state"]
                return a == "active" && b == "active"
            }
            let record = try await cluster.record(byHTTP.callID)
            #expect(record["tenant"] == "acme" && record["worker_id"] == worker.id && record["region"] == "local")
            #expect(try await cluster.workerCalls(worker.id) == [byHTTP.callID, byNATS.callID])
            #expect(worker.worker.activeCalls == 2)

            let (showStatus, showBody) = try await cluster.http("GET", "/v1/calls/\(byHTTP.callID)")
            #expect(showStatus == 200)
            #expect(try decodeJSON(CallRecord.self, showBody).state == .active)
        }
    }

    @Test func aToneSentAsOpusComesBackAtTheSameFrequency() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker()
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call)

            let out = try cluster.client.subscribe(to: call.media.out)
            let collector = Task { () -> [MediaPacket] in
                var packets: [MediaPacket] = []
                for await message in out {
                    if let p = try? MediaPacket.decode(message.payload) { packets.append(p) }
                    if packets.count == 50 { break }
                }
                return packets
            }
            let encoder = try OpusEncoder()
            var tone = ToneGenerator(frequency: 440)
            for seq in 0..<50 {
                let packet = MediaPacket(sequence: UInt32(seq), timestamp: UInt32(seq * 960), payload: try encoder.encode(tone.next(960)))
                try cluster.client.publish(call.media.in, payload: packet.encoded())
                try await Task.sleep(for: .milliseconds(5))
            }
            let timeout = Task { try await Task.sleep(for: .seconds(5)); out.unsubscribe() }
            let packets = await collector.value
            timeout.cancel()
            // Every frame echoed, but for one or two on a starved test machine: the worker, sharing this busy process,
            // may take itself for frozen for a moment and hold back a frame (as a worker that stalled must).
            #expect(packets.count >= 48, "\(packets.count) of 50 echoed")
            #expect(packets.map(\.sequence) == (0..<UInt32(packets.count)).map { $0 }, "the worker numbers its packets")
            let decoder = try OpusDecoder()
            var samples: [Int16] = []
            for p in packets.dropFirst(5) { samples += try decoder.decode(p.payload) }
            let frequency = SignalAnalysis.dominantFrequency(samples, sampleRate: 48_000, from: 100, to: 2000)
            #expect(abs(frequency - 440) <= 3, "echo at \(frequency) Hz")
            #expect(SignalAnalysis.rms(samples) > 2000)
        }
    }

    @Test func deleteEndsTheCallRecordsItAndFreesTheSlot() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            let worker = try await cluster.addWorker(capacity: 1)
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call)
            try await eventually("call active") { try await cluster.record(call.callID)["state"] == "active" }

            let (status, body) = try await cluster.http("DELETE", "/v1/calls/\(call.callID)")
            #expect(status == 200)
            let ended = try decodeJSON(CallRecord.self, body)
            #expect(ended.state == .ended && ended.endReason == "api")
            #expect(worker.worker.activeCalls == 0)
            #expect(try await cluster.workerCalls(worker.id).isEmpty)
            let ttl = try await cluster.redis.send(["TTL", cluster.keys.call(call.callID)]).int ?? -1
            #expect(ttl > 0, "an ended call's record expires")
            // The slot is free again: the router sees it and a new call is placed on the same worker.
            // (Free by the router's count: its own offer's slot until a heartbeat shows the accept, which a heartbeat
            // from before the call, saying 0 calls, does not.)
            try await eventually("router sees the free slot") { router.router.workers().first?.freeSlots == 1 }
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call?.workerID == worker.id)
            // Ending twice is harmless; an unknown call is 404.
            #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200)
            let (missing, missingBody) = try await cluster.http("DELETE", "/v1/calls/cdoesnotexist")
            #expect(missing == 404 && errorCode(missingBody) == "not_found")
        }
    }

    /// The router and the worker stamp what they write with the wall clock their configuration gives, not the
    /// machine's: the record's placement, start and end, and each one's events on the call's timeline.
    @Test func routerAndWorkerStampTimesWithTheirConfiguredWallClocks() async throws {
        try await withTestCluster { cluster in
            let placedAt: Int64 = 1_767_225_599_000  // 2025-12-31T23:59:59Z
            try await cluster.addRouter { $0.wallClock = .fixed(placedAt) }
            try await cluster.addWorker { $0.wallClock = WallClock.fixed(placedAt).advanced(by: .seconds(5)) }
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call)
            try await eventually("call active") { try await cluster.record(call.callID)["state"] == "active" }
            #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200)
            let record = try await cluster.record(call.callID)
            #expect(record["created_at"] == String(placedAt) && record["started_at"] == String(placedAt + 5_000)
                    && record["ended_at"] == String(placedAt + 5_000), "\(record)")
            try await eventually("placed, started and ended on the timeline") {
                let response = try await cluster.http("GET", "/v1/calls/\(call.callID)/timeline")
                guard response.status == 200 else { return false }
                let events = try JSONDecoder().decode(Timeline.self, from: response.body).events
                let at = Dictionary(events.map { ("\($0.source.rawValue) \($0.type)", $0.atMillis) }, uniquingKeysWith: { first, _ in first })
                return at["router placed"] == placedAt && at["worker started"] == placedAt + 5_000 && at["worker ended"] == placedAt + 5_000
            }
        }
    }

    @Test func callerEndMessageEndsTheCall() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker()
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call)
            try await eventually("call active") { worker.worker.activeCalls == 1 }
            let reply = try await cluster.client.request(cluster.subjects.end(worker: call.workerID, call: call.callID),
                                                         payload: CallEnd(callID: call.callID, reason: .caller).encoded(), timeout: .seconds(10))
            #expect(reply.text.contains("\"ended\":true"))
            #expect(worker.worker.activeCalls == 0)
            #expect(try await cluster.record(call.callID)["end_reason"] == "caller")
        }
    }

    @Test func callsEndAtTheirMaximumDurationAndWhenTheHandlerReturns() async throws {
        struct Brief: CallHandler {
            func run(_ call: CallContext) async throws { try await Task.sleep(for: .milliseconds(100)) }
        }
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let capped = try await cluster.addWorker(id: "capped", region: "a") { $0.maxCallDuration = .milliseconds(300) }
            let brief = try await cluster.addWorker(id: "brief", region: "b", handler: Brief())
            try await cluster.waitForWorkers(2)
            let long = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t", region: "a")).call)
            let short = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t", region: "b")).call)
            try await eventually("both ended") {
                let a = try await cluster.record(long.callID)["state"]
                let b = try await cluster.record(short.callID)["state"]
                return a == "ended" && b == "ended"
            }
            #expect(try await cluster.record(long.callID)["end_reason"] == "max_duration")
            #expect(try await cluster.record(short.callID)["end_reason"] == "handler")
            // (A slot is freed once the end's write returns, which may be after this test read the record.)
            try await eventually("both slots free") { capped.worker.activeCalls == 0 && brief.worker.activeCalls == 0 }
        }
    }

    @Test func aCallWhoseCallerSendsNoAudioEndsAndOneThatSpeaksGoesOn() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker { $0.mediaTimeout = .seconds(2) }
            try await cluster.waitForWorkers(1)
            let silent = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            let speaking = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            let encoder = try OpusEncoder()
            var tone = ToneGenerator(frequency: 300)
            let start = ContinuousClock.now
            var seq: UInt32 = 0
            // The speaking caller sends 20 ms frames for two and a half media timeouts (paced by the clock).
            while ContinuousClock.now - start < .seconds(5) {
                let packet = MediaPacket(sequence: seq, timestamp: seq &* 960, payload: try encoder.encode(tone.next(960)))
                try cluster.client.publish(speaking.media.in, payload: packet.encoded())
                seq &+= 1
                try await Task.sleep(for: .milliseconds(20))
            }
            try await eventually(timeout: .seconds(10), "the silent call ended") { try await cluster.record(silent.callID)["state"] == "ended" }
            #expect(try await cluster.record(silent.callID)["end_reason"] == "no_media")
            #expect(try await cluster.record(speaking.callID)["state"] == "active", "audio kept it going")
        }
    }
}
