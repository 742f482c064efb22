import SwitchboardCore
import Testing

@Suite struct WireMessageTests {
    static let heartbeat = Heartbeat(workerID: "w-1", version: "1.2.0", region: "eu-west", zone: "eu-west-a", state: .ready,
                                     capacity: 10, activeCalls: 3, cpu: 0.25, memoryUsedBytes: 1 << 20,
                                     memoryLimitBytes: 1 << 30, seq: 7, incarnation: "abc")

    @Test func everyMessageRoundTrips() throws {
        #expect(try Heartbeat.decode(Self.heartbeat.encoded()) == Self.heartbeat)
        let route = RouteRequest(tenant: "acme", region: "eu-west", metadata: ["from": "+331234"])
        #expect(try RouteRequest.decode(route.encoded()) == route)
        let local = RouteRequest(tenant: "acme", region: "eu-west", zone: "eu-west-b", locality: .preferred, explain: true)
        #expect(try RouteRequest.decode(local.encoded()) == local)
        #expect(try RouteRequest.decode(Array(#"{"v":1,"tenant":"a","region":"eu"}"#.utf8)).locality == .required)
        let placement = Placement(callID: "c1", workerID: "w-1", version: "1.2.0", region: "eu-west",
                                  media: MediaSubjects(in: "sb.media.c1.in", out: "sb.media.c1.out"))
        #expect(try RouteReply.decode(RouteReply(call: placement).encoded()) == RouteReply(call: placement))
        let failure = RouteReply(error: SwitchboardError(.init(rawValue: "no_capacity"), "no worker"))
        #expect(try RouteReply.decode(failure.encoded()) == failure)
        let offer = Offer(callID: "c1", tenant: "acme", region: nil, metadata: [:], routerID: "r-1")
        #expect(try Offer.decode(offer.encoded()) == offer)
        let accept = OfferReply.accept(workerID: "w-1", version: "1", region: "eu", acceptSeq: 7)
        #expect(try OfferReply.decode(accept.encoded()) == accept)
        let refuse = OfferReply.refuse(.full, workerID: "w-1", version: "1", region: "eu")
        #expect(try OfferReply.decode(refuse.encoded()) == refuse)
        let end = CallEnd(callID: "c1", reason: .caller)
        #expect(try CallEnd.decode(end.encoded()) == end)
        let packet = MediaPacket(sequence: 0xDEADBEEF, timestamp: 960 * 5, payload: [1, 2, 3])
        #expect(try MediaPacket.decode(packet.encoded()) == packet)
    }

    @Test func jsonFieldNamesAreTheContract() {
        let text = String(decoding: Self.heartbeat.encoded(), as: UTF8.self)
        for key in ["\"worker_id\"", "\"active_calls\"", "\"memory_used_bytes\"", "\"seq\"", "\"v\":1"] {
            #expect(text.contains(key), "\(key) in \(text)")
        }
        let route = try? RouteRequest.decode(Array(#"{"v":1,"tenant":"acme"}"#.utf8))
        #expect(route?.metadata == [:] && route?.region == nil)
    }

    @Test func heartbeatRejections() {
        var cases: [(String, Heartbeat)] = []
        var h = Self.heartbeat; h.workerID = "w 1"; cases.append(("space in id", h))
        h = Self.heartbeat; h.workerID = "w.1"; cases.append(("dot in id", h))
        h = Self.heartbeat; h.workerID = ""; cases.append(("empty id", h))
        h = Self.heartbeat; h.capacity = -1; cases.append(("negative capacity", h))
        h = Self.heartbeat; h.activeCalls = -3; cases.append(("negative calls", h))
        h = Self.heartbeat; h.cpu = 1.5; cases.append(("cpu over 1", h))
        h = Self.heartbeat; h.cpu = -0.1; cases.append(("cpu under 0", h))
        h = Self.heartbeat; h.region = String(repeating: "r", count: 65); cases.append(("long region", h))
        for (name, bad) in cases {
            #expect(throws: SwitchboardError.self, "\(name)") { _ = try Heartbeat.decode(bad.encoded()) }
        }
        // An unknown state string is refused by the decoder.
        let text = String(decoding: Self.heartbeat.encoded(), as: UTF8.self).replacingOccurrences(of: "\"ready\"", with: "\"dancing\"")
        #expect(throws: SwitchboardError.self) { _ = try Heartbeat.decode(Array(text.utf8)) }
    }

    @Test func routeAndOfferRejections() {
        let bad: [[UInt8]] = [
            Array(#"{"v":1}"#.utf8),
            Array(#"{"v":1,"tenant":""}"#.utf8),
            Array(#"{"v":1,"tenant":"a/b"}"#.utf8),
            Array(#"{"v":1,"tenant":"a","metadata":{"k":5}}"#.utf8),
            Array(#"{"v":2,"tenant":"a"}"#.utf8),
            Array(#"{"v":1,"tenant":"a","zone":"eu-a"}"#.utf8),
            Array(#"{"v":1,"tenant":"a","region":"eu","locality":"sometimes"}"#.utf8),
            Array(#"{"v":1,"tenant":"a","explain":"yes"}"#.utf8),
            RouteRequest(tenant: "a", metadata: Dictionary(uniqueKeysWithValues: (0..<40).map { ("k\($0)", "v") })).encoded(),
        ]
        for bytes in bad {
            #expect(throws: SwitchboardError.self, "\(String(decoding: bytes, as: UTF8.self))") { _ = try RouteRequest.decode(bytes) }
        }
        #expect(throws: SwitchboardError.self) { _ = try RouteReply.decode(Array(#"{"v":1}"#.utf8)) }
        #expect(throws: SwitchboardError.self) { _ = try OfferReply.decode(Array(#"{"v":1,"accepted":false,"worker_id":"w","version":"1","region":"r"}"#.utf8)) }
        #expect(throws: SwitchboardError.self) { _ = try CallEnd.decode(Array(#"{"v":1,"call_id":"c","reason":"bored"}"#.utf8)) }
    }

    @Test func resumptionNotices() throws {
        let waiting = ResumptionNotice.waiting("c1", router: "r-1", hold: .seconds(2))
        #expect(try ResumptionNotice.decode(waiting.encoded()) == waiting)
        #expect(waiting.holdMillis == 2000)
        #expect(ResumptionNotice.waiting("c1", router: "r-1", hold: .seconds(600)).holdMillis == 60_000, "held at most a minute")
        let done = ResumptionNotice.done("c1", router: "r-1", worker: "w-2", acceptSeq: 9)
        #expect(try ResumptionNotice.decode(done.encoded()) == done)
        #expect(String(decoding: done.encoded(), as: UTF8.self).contains(#""accept_seq":9"#))
        let bad = [
            #"{"v":1,"call_id":"c1","router_id":"r","hold_ms":0}"#,
            #"{"v":1,"call_id":"c1","router_id":"r","hold_ms":3600000}"#,
            #"{"v":1,"call_id":"c1","router_id":"r","worker_id":"w"}"#,
            #"{"v":1,"call_id":"c1","router_id":"r","hold_ms":5,"worker_id":"w","accept_seq":1}"#,
            #"{"v":1,"call_id":"c.1","router_id":"r"}"#,
            #"{"v":2,"call_id":"c1","router_id":"r"}"#,
        ]
        for text in bad {
            #expect(throws: SwitchboardError.self, "\(text)") { _ = try ResumptionNotice.decode(Array(text.utf8)) }
        }
    }

    @Test func mediaPacketRejections() {
        let cases: [([UInt8], SwitchboardError.Code)] = [
            ([], .badMessage),
            ([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], .badMessage),   // header only
            ([2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9], .badMessage), // wrong version
            ([UInt8](repeating: 1, count: MediaPacket.headerSize + MediaPacket.maxPayload + 1), .tooLarge),
        ]
        for (bytes, code) in cases {
            do {
                _ = try MediaPacket.decode(bytes)
                Issue.record("accepted \(bytes.prefix(12))")
            } catch {
                #expect(error.code == code)
            }
        }
    }
}
