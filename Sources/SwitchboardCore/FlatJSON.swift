/// A fast reader for the one JSON shape a hot path sees most: a flat object of strings, numbers, booleans and
/// nulls, as our encoder writes it (no escapes in strings). It answers nil for anything else (nested values,
/// escapes, malformed input), and the caller then falls back to `JSONDecoder`, which decides and names the
/// error. So the fast path never accepts what the full decoder would refuse.
///
/// Routers decode 10,000 heartbeats a second at 10,000 workers; `JSONDecoder` takes ~8 µs for one, this ~1 µs.
public struct FlatJSON {
    public enum Value: Equatable {
        case string(String)
        /// The number's text, as written.
        case number(String)
        case bool(Bool)
        case null
    }

    /// A value as `visit` hands it over: strings and numbers as their bytes, valid only during the call.
    public enum RawValue {
        /// A string's bytes, without quotes; it holds no escapes or control characters.
        case string(UnsafeBufferPointer<UInt8>)
        /// A number's text, checked against JSON's grammar.
        case number(UnsafeBufferPointer<UInt8>)
        case bool(Bool)
        case null

        public var string: String? {
            guard case .string(let bytes) = self else { return nil }
            return bytes.allSatisfy({ $0 < 0x80 }) ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self)
        }

        /// An integer written as one (no fraction or exponent), in range.
        public func integer<T: FixedWidthInteger>(as: T.Type = T.self) -> T? {
            guard case .number(let bytes) = self, var rest = Optional(bytes[...]), !rest.isEmpty else { return nil }
            let negative = rest.first == UInt8(ascii: "-")
            if negative { rest = rest.dropFirst() }
            var value: T = 0
            for byte in rest {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }  // a fraction or exponent
                let digit = T(byte - UInt8(ascii: "0"))
                let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
                let (next, o2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
                guard !o1, !o2 else { return nil }
                value = next
            }
            return value
        }

        public var double: Double? {
            guard case .number(let bytes) = self else { return nil }
            return Double(String(decoding: bytes, as: UTF8.self))
        }

        var value: Value? {
            switch self {
            case .string: return string.map(Value.string)
            case .number(let bytes): return .number(String(decoding: bytes, as: UTF8.self))
            case .bool(let b): return .bool(b)
            case .null: return .null
            }
        }
    }

    public private(set) var fields: [String: Value] = [:]

    /// Every field of a flat object, or nil for anything else. (For tests and tools; hot paths use `visit`.)
    public init?(_ bytes: [UInt8]) {
        var fields: [String: Value] = [:]
        var failed = false
        guard Self.visit(bytes, { key, raw in
            guard let value = raw.value, fields.updateValue(value, forKey: String(decoding: key, as: UTF8.self)) == nil else {
                failed = true
                return
            }
        }), !failed else { return nil }
        self.fields = fields
    }

    public func string(_ key: String) -> String? {
        if case .string(let s) = fields[key] { return s }
        return nil
    }

    public func integer<T: FixedWidthInteger>(_ key: String, as: T.Type = T.self) -> T? {
        guard case .number(let text) = fields[key] else { return nil }
        return Array(text.utf8).withUnsafeBufferPointer { RawValue.number($0).integer(as: T.self) }
    }

    public func double(_ key: String) -> Double? {
        guard case .number(let text) = fields[key] else { return nil }
        return Double(text)
    }

    /// Calls `body` with each key (its bytes) and value of a flat object, in order; false when `bytes` are not
    /// a flat object this reader takes (the caller falls back). The buffers are valid only during the call.
    /// Repeated keys are the caller's to refuse.
    public static func visit(_ bytes: [UInt8], _ body: (UnsafeBufferPointer<UInt8>, RawValue) -> Void) -> Bool {
        bytes.withUnsafeBufferPointer { parse($0, body) }
    }

    private static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\"), colon = UInt8(ascii: ":")
    private static let comma = UInt8(ascii: ","), open = UInt8(ascii: "{"), close = UInt8(ascii: "}")

    private static func parse(_ b: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>, RawValue) -> Void) -> Bool {
        var i = 0
        func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }
        /// The bytes of a string without escapes, the position after its closing quote moved past.
        func stringBytes() -> UnsafeBufferPointer<UInt8>? {
            guard i < b.count, b[i] == quote else { return nil }
            let start = i + 1
            var j = start
            while j < b.count, b[j] != quote {
                if b[j] == backslash || b[j] < 0x20 { return nil }  // escapes and control characters: the full decoder's job
                j += 1
            }
            guard j < b.count else { return nil }
            i = j + 1
            return UnsafeBufferPointer(rebasing: b[start..<j])
        }
        skipSpace()
        guard i < b.count, b[i] == open else { return false }
        i += 1
        skipSpace()
        if i < b.count, b[i] == close {
            i += 1
        } else {
            while true {
                skipSpace()
                guard let key = stringBytes() else { return false }
                skipSpace()
                guard i < b.count, b[i] == colon else { return false }
                i += 1
                skipSpace()
                guard i < b.count else { return false }
                let value: RawValue
                switch b[i] {
                case quote:
                    guard let bytes = stringBytes() else { return false }
                    value = .string(bytes)
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    let start = i
                    while i < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) || b[i] == UInt8(ascii: "-")
                        || b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                        i += 1
                    }
                    let number = UnsafeBufferPointer(rebasing: b[start..<i])
                    guard isJSONNumber(number) else { return false }
                    value = .number(number)
                case UInt8(ascii: "t"): guard literal("true", &i, b) else { return false }; value = .bool(true)
                case UInt8(ascii: "f"): guard literal("false", &i, b) else { return false }; value = .bool(false)
                case UInt8(ascii: "n"): guard literal("null", &i, b) else { return false }; value = .null
                default: return false  // objects, arrays: not flat
                }
                body(key, value)
                skipSpace()
                guard i < b.count else { return false }
                if b[i] == comma { i += 1; continue }
                guard b[i] == close else { return false }
                i += 1
                break
            }
        }
        skipSpace()
        return i == b.count
    }

    private static func literal(_ word: StaticString, _ i: inout Int, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        for k in 0..<n where b[i + k] != word.utf8Start[k] { return false }
        i += n
        return true
    }

    /// JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    private static func isJSONNumber(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        var u = text[...]
        func digits() -> Int {
            var n = 0
            while let c = u.first, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { u.removeFirst(); n += 1 }
            return n
        }
        if u.first == UInt8(ascii: "-") { u.removeFirst() }
        if u.first == UInt8(ascii: "0") { u.removeFirst() } else if digits() == 0 { return false }
        if u.first == UInt8(ascii: ".") {
            u.removeFirst()
            if digits() == 0 { return false }
        }
        if u.first == UInt8(ascii: "e") || u.first == UInt8(ascii: "E") {
            u.removeFirst()
            if u.first == UInt8(ascii: "+") || u.first == UInt8(ascii: "-") { u.removeFirst() }
            if digits() == 0 { return false }
        }
        return u.isEmpty
    }
}
