import Foundation
import SwitchboardCore

/// Makes hostile inputs from valid ones, deterministically (a seeded source): byte-level mutations, JSON
/// whose values are swapped for boundary values (Int64.min/max, UInt64.max, ±1e308, 1e400, NaN and infinity
/// spelled as JSON cannot, huge strings and arrays, deep nesting, control characters, invalid UTF-8), fields
/// dropped or added, and plain random bytes.
struct Mutator {
    var random: SeededRandom
    let samples: [[UInt8]]
    /// The samples as JSON objects (nil for binary ones).
    private let objects: [[String: Any]?]
    /// Per JSON sample, the sample once per value (at the top or one level down) with that value cut out:
    /// the text before it and after it, so a case is two copies and a boundary value.
    private let holes: [[(before: [UInt8], after: [UInt8])]]

    init(seed: UInt64, samples: [[UInt8]]) {
        random = SeededRandom(seed: seed)
        self.samples = samples
        objects = samples.map { (try? JSONSerialization.jsonObject(with: Data($0))) as? [String: Any] }
        let marker = "__fuzz_marker__"
        holes = objects.map { object in
            guard let object else { return [] }
            var cuts: [(before: [UInt8], after: [UInt8])] = []
            func cut(_ changed: [String: Any]) {
                guard let data = try? JSONSerialization.data(withJSONObject: changed) else { return }
                let text = String(decoding: data, as: UTF8.self)
                guard let range = text.range(of: "\"\(marker)\"") else { return }
                cuts.append((Array(text[..<range.lowerBound].utf8), Array(text[range.upperBound...].utf8)))
            }
            for key in object.keys.sorted() {
                var changed = object
                changed[key] = marker
                cut(changed)
                if let inner = object[key] as? [String: Any] {
                    for innerKey in inner.keys.sorted() {
                        var innerChanged = inner
                        innerChanged[innerKey] = marker
                        changed[key] = innerChanged
                        cut(changed)
                    }
                }
            }
            return cuts
        }
    }

    /// Over every NATS message's limit (16 KiB), under the HTTP body's (64 KiB): field checks must catch it.
    static let hugeString = "\"" + String(repeating: "x", count: 20_000) + "\""
    static let deepArray = String(repeating: "[", count: 1_000) + String(repeating: "]", count: 1_000)
    static let deepObject = String(repeating: "{\"a\":", count: 600) + "1" + String(repeating: "}", count: 600)
    static let bigArray = "[" + Array(repeating: "1", count: 3_000).joined(separator: ",") + "]"

    /// Boundary values as raw JSON text (the large ones are each a few in a hundred of the replacements).
    static let boundaries: [String] = [
        "-9223372036854775808", "9223372036854775807", "9223372036854775808", "18446744073709551615",
        "18446744073709551616", "-1", "0", "1", "4102444800001", "-4102444800000", "1e308", "-1e308", "1e400",
        "-1e400", "0.0000001", "1.5", "NaN", "Infinity", "-Infinity", "null", "true", "false", "\"\"",
        "\"\\u0000\"", "\"a\\nb\"", "\"\\ud800\"", "\"é\"", "\"sb.>\"", "\"*\"", "[]", "{}", "[1,2,3]", "{\"v\":1}",
        hugeString, deepArray, deepObject, bigArray,
    ]

    mutating func next() -> [UInt8] {
        let i = Int.random(in: 0..<samples.count, using: &random)
        switch Int.random(in: 0..<10, using: &random) {
        case 0...3:
            if let hole = holes[i].randomElement(using: &random) {
                return hole.before + Array(Self.boundaries.randomElement(using: &random)!.utf8) + hole.after
            }
            return byteMutation(samples[i])
        case 4...6:
            return byteMutation(samples[i])
        case 7:
            if let object = objects[i] { return jsonWithFieldsChanged(object) }
            return byteMutation(samples[i])
        case 8:
            return (0..<Int.random(in: 0..<64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
        default:
            // Valid UTF-8 structure, invalid bytes inside a string.
            var bytes = samples[i]
            if bytes.count > 4 { bytes.insert(contentsOf: [0xC3, 0x28, 0xFF, 0xFE], at: Int.random(in: 1..<bytes.count - 1, using: &random)) }
            return bytes
        }
    }

    private mutating func byteMutation(_ sample: [UInt8]) -> [UInt8] {
        var bytes = sample
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            guard !bytes.isEmpty else { break }
            let at = Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0: bytes[at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &random)
            case 1: bytes[at] = UInt8.random(in: 0...255, using: &random)
            case 2: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...8, using: &random)))
            case 3: bytes.insert(UInt8.random(in: 0...255, using: &random), at: at)
            default: bytes = Array(bytes.prefix(at))
            }
        }
        return bytes
    }

    /// The object with a field dropped, an unknown field added, or `v` changed.
    private mutating func jsonWithFieldsChanged(_ object: [String: Any]) -> [UInt8] {
        var object = object
        switch Int.random(in: 0..<3, using: &random) {
        case 0: if let key = object.keys.sorted().randomElement(using: &random) { object[key] = nil }
        case 1: object["unknown_\(Int.random(in: 0..<9, using: &random))"] = Int.random(in: Int.min...Int.max, using: &random)
        default: object["v"] = [0, 2, -1, Int.max].randomElement(using: &random)!
        }
        return Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }
}
