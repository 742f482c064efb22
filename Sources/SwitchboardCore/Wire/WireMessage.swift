/// A control message that crosses NATS: JSON with a version field `v`, size-limited, validated after decoding.
/// `decode(_:)` is the one way in for every message type; it returns a value or a coded error.
public protocol WireMessage: Codable, Sendable, Versioned {
    /// The version this build speaks; a message with another `v` is refused.
    static var wireVersion: Int { get }
    /// Largest encoded size accepted.
    static var maxBytes: Int { get }
    /// Checks what JSON types cannot: lengths, ranges, identifiers safe to put in a subject.
    func validate() throws(SwitchboardError)
    /// The one way in: a valid message or a coded error.
    static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> Self
}

extension WireMessage {
    public static var maxBytes: Int { 16 * 1024 }

    public static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> Self {
        let message = try WireCodec.decode(Self.self, from: bytes, version: wireVersion, maxBytes: maxBytes)
        try message.validate()
        return message
    }

    public func encoded() -> [UInt8] { WireCodec.encode(self) }
}

/// Checks shared by the messages.
public enum WireCheck {
    /// An identifier that is also a NATS subject token: 1-128 of `[A-Za-z0-9_-]`.
    public static func identifier(_ value: String, _ field: String) throws(SwitchboardError) {
        let bytes = value.utf8
        guard !bytes.isEmpty, bytes.count <= 128,
              bytes.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        else {
            throw SwitchboardError(.badMessage, "'\(field)' must be 1-128 letters, digits, '-' or '_'",
                                   context: ["field": field])
        }
    }

    /// Free text with a length limit (names, reasons, versions, regions).
    public static func text(_ value: String, _ field: String, max: Int = 128, allowEmpty: Bool = false) throws(SwitchboardError) {
        guard allowEmpty || !value.isEmpty else {
            throw SwitchboardError(.badMessage, "'\(field)' is empty", context: ["field": field])
        }
        guard value.utf8.count <= max, !value.unicodeScalars.contains(where: { $0.value < 32 }) else {
            throw SwitchboardError(.badMessage, "'\(field)' is over \(max) bytes or has control characters",
                                   context: ["field": field])
        }
    }

    /// Unix milliseconds a message may carry: 1970 to 2100, so a sum with a deadline or a window, or a
    /// difference with the clock, cannot overflow.
    public static let unixMillisRange: ClosedRange<Int64> = 0...4_102_444_800_000

    public static func unixMillis(_ value: Int64, _ field: String) throws(SwitchboardError) {
        try range(value, unixMillisRange, field)
    }

    public static func range<T: Comparable>(_ value: T, _ bounds: ClosedRange<T>, _ field: String) throws(SwitchboardError) {
        guard bounds.contains(value) else {
            throw SwitchboardError(.badMessage, "'\(field)' is \(value), outside \(bounds)", context: ["field": field])
        }
    }

    /// Call metadata: at most 32 entries, keys up to 64 bytes, values up to 1024.
    public static func metadata(_ value: [String: String], _ field: String = "metadata") throws(SwitchboardError) {
        guard value.count <= 32 else {
            throw SwitchboardError(.badMessage, "'\(field)' has \(value.count) entries, over 32", context: ["field": field])
        }
        for (k, v) in value {
            try text(k, "\(field).key", max: 64)
            try text(v, "\(field).\(k)", max: 1024, allowEmpty: true)
        }
    }

    private static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
    }
}
