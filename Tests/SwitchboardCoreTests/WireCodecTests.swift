import SwitchboardCore
import Testing

@Suite struct WireCodecTests {
    struct Ping: Codable, Equatable, Versioned {
        var v = 1
        var id: String
        var count: Int
    }

    @Test func roundTrip() throws {
        let ping = Ping(id: "w-1", count: 3)
        let bytes = WireCodec.encode(ping)
        #expect(try WireCodec.decode(Ping.self, from: bytes, version: 1) == ping)
    }

    @Test func rejectsEveryKindOfBadInputWithACode() {
        let cases: [(String, [UInt8], SwitchboardError.Code)] = [
            ("empty", [], .badMessage),
            ("garbage", [0xff, 0x00, 0x13, 0x37, 0xde, 0xad], .badMessage),
            ("not an object", Array("[1,2,3]".utf8), .badMessage),
            ("no version", Array(#"{"id":"w","count":1}"#.utf8), .badMessage),
            ("other version", Array(#"{"v":2,"id":"w","count":1}"#.utf8), .badMessage),
            ("missing field", Array(#"{"v":1,"id":"w"}"#.utf8), .badMessage),
            ("wrong type", Array(#"{"v":1,"id":"w","count":"many"}"#.utf8), .badMessage),
            ("truncated", Array(#"{"v":1,"id":"w","cou"#.utf8), .badMessage),
            ("huge", Array(repeating: UInt8(ascii: " "), count: WireCodec.defaultMaxBytes + 1), .tooLarge),
        ]
        for (name, bytes, code) in cases {
            do {
                _ = try WireCodec.decode(Ping.self, from: bytes, version: 1)
                Issue.record("\(name) was accepted")
            } catch {
                #expect(error.code == code, "\(name): \(error)")
            }
        }
    }

    @Test func errorNamesTheField() {
        do {
            _ = try WireCodec.decode(Ping.self, from: Array(#"{"v":1,"id":"w"}"#.utf8), version: 1)
            Issue.record("a message without 'count' was accepted")
        } catch {
            #expect(error.message.contains("count"))
        }
    }

    @Test func randomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(throws: SwitchboardError.self) { _ = try WireCodec.decode(Ping.self, from: bytes, version: 1) }
        }
    }
}

@Suite struct SwitchboardErrorTests {
    @Test func descriptionCarriesCodeMessageAndContext() {
        let error = SwitchboardError(.timeout, "no reply", context: ["subject": "sb.route", "a": "1"])
        #expect(error.description == "timeout: no reply (a=1 subject=sb.route)")
        #expect(SwitchboardError.Code.noResponders.rawValue == "no_responders")
    }
}
