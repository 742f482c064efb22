@testable import SwitchboardCore
import Testing

@Suite struct FlatJSONTests {
    @Test func readsAFlatObject() throws {
        let json = try #require(FlatJSON(Array(#" {"a": "x", "n": -12, "d": 0.5e-3, "t": true, "f": false, "z": null} "#.utf8)))
        #expect(json.string("a") == "x")
        #expect(json.integer("n", as: Int.self) == -12)
        #expect(json.integer("d", as: Int.self) == nil)
        #expect(json.double("d") == 0.0005)
        #expect(json.fields["t"] == .bool(true) && json.fields["f"] == .bool(false) && json.fields["z"] == .null)
        #expect(FlatJSON(Array("{}".utf8))?.fields.isEmpty == true)
    }

    @Test(arguments: [
        #"{"a": {"b": 1}}"#, #"{"a": [1]}"#, #"{"a": "x\"y"}"#, #"{"a": 1, "a": 2}"#, #"{"a": 1} x"#, #"{"a": 1,}"#,
        #"{"a": 01}"#, #"{"a": 1.}"#, #"{"a": -}"#, #"{"a": +1}"#, #"{"a": tru}"#, #"{"a" 1}"#, #"{a: 1}"#, #"["a"]"#,
        "", "{", #"{"a": "unterminated}"#, "{\"a\": \"tab\there\"}",
    ])
    func leavesEverythingElseToTheFullDecoder(_ text: String) {
        #expect(FlatJSON(Array(text.utf8)) == nil)
    }

    @Test func aHeartbeatReadFastEqualsTheFullDecodersReading() throws {
        var random = SeededRandom(seed: 11)
        for i in 0..<500 {
            let hb = Heartbeat(workerID: "worker-\(i)", version: "1.\(i % 7).0", region: "eu-\(i % 3)", zone: "z\(i % 5)",
                               state: WorkerState.allCases[i % 3], capacity: Int(random.next() % 100_000),
                               activeCalls: Int(random.next() % 1000), cpu: Double(random.next() % 1_000_001) / 1_000_000 * (i % 10 == 0 ? 1e-6 : 1),
                               memoryUsedBytes: Int64(random.next() >> 2), memoryLimitBytes: Int64(random.next() >> 1),
                               seq: random.next(), incarnation: "inc\(random.next() % 999)", accepted: random.next())
            let bytes = hb.encoded()
            let fast = try #require(Heartbeat(flat: bytes), "\(String(decoding: bytes, as: UTF8.self))")
            let full = try WireCodec.decode(Heartbeat.self, from: bytes, version: 1)
            #expect(fast == full && fast == hb)
        }
    }

    /// Whatever the fast path accepts, the full decoder accepts too, with the same value: mutate a heartbeat's
    /// bytes at random and compare.
    @Test func theFastPathNeverAcceptsWhatTheFullDecoderRefuses() {
        let base = WireMessageTests.heartbeat.encoded()
        var random = SeededRandom(seed: 5)
        let alphabet = Array(#"{}[]":,.-+eE0123456789 tfnul\"ax"#.utf8)
        var fastAccepted = 0
        for _ in 0..<20_000 {
            var bytes = base
            for _ in 0..<(1 + Int(random.next() % 3)) {
                let at = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes[at] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: at)
                default: bytes.insert(alphabet[Int(random.next() % UInt64(alphabet.count))], at: at)
                }
            }
            guard let fast = Heartbeat(flat: bytes) else { continue }
            fastAccepted += 1
            let full = try? WireCodec.decode(Heartbeat.self, from: bytes, version: 1)
            #expect(full == fast, "\(String(decoding: bytes, as: UTF8.self))")
        }
        #expect(fastAccepted > 100)  // the mutations do reach the fast path's acceptance
    }
}
