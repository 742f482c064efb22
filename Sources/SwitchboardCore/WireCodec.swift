import Foundation

/// A message that carries its wire version in a field `v`.
public protocol Versioned {
    var v: Int { get }
}

/// The one way control messages cross the wire: JSON with a version field `v`, size-limited, decoded by a
/// single function that turns every failure into a coded error (never a crash, never a partial value).
public enum WireCodec {
    /// Default cap for one control message. Media packets have their own, smaller limit.
    public static let defaultMaxBytes = 64 * 1024

    private struct VersionProbe: Decodable { var v: Int? }

    /// Decodes `bytes` as a `T` of wire version `version`.
    /// - Throws: `.tooLarge` over `maxBytes`; `.badMessage` for invalid JSON, a missing or other version, or a
    ///   field of the wrong type (the message names the field).
    public static func decode<T: Decodable & Versioned>(_ type: T.Type, from bytes: [UInt8], version: Int,
                                                        maxBytes: Int = defaultMaxBytes) throws(SwitchboardError) -> T {
        guard bytes.count <= maxBytes else {
            throw SwitchboardError(.tooLarge, "\(T.self) of \(bytes.count) bytes is over the limit of \(maxBytes)")
        }
        guard !bytes.isEmpty else { throw SwitchboardError(.badMessage, "empty \(T.self)") }
        let data = Data(bytes)
        let decoder = JSONDecoder()
        // One pass on the happy path; only a failure pays for a second look to say what is wrong.
        let value: T
        do {
            value = try decoder.decode(T.self, from: data)
        } catch {
            let probe = try? decoder.decode(VersionProbe.self, from: data)
            if let v = probe?.v, v != version { throw versionError(T.self, v, version) }
            if probe == nil { throw SwitchboardError(.badMessage, "\(T.self) is not a JSON object") }
            if probe?.v == nil { throw SwitchboardError(.badMessage, "\(T.self) has no version field 'v'") }
            throw describe(error, T.self)
        }
        guard value.v == version else { throw versionError(T.self, value.v, version) }
        return value
    }

    private static func versionError<T>(_: T.Type, _ v: Int, _ version: Int) -> SwitchboardError {
        SwitchboardError(.badMessage, "\(T.self) has version \(v); this build speaks version \(version)",
                         context: ["expected_version": "\(version)"])
    }

    private static func describe<T>(_ error: any Error, _: T.Type) -> SwitchboardError {
        switch error {
        case DecodingError.keyNotFound(let key, _):
            return SwitchboardError(.badMessage, "\(T.self) lacks field '\(key.stringValue)'")
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return SwitchboardError(.badMessage, "\(T.self) has a bad value at '\(path(context.codingPath))'")
        case DecodingError.dataCorrupted(let context):
            return SwitchboardError(.badMessage, "\(T.self) is malformed at '\(path(context.codingPath))': \(context.debugDescription)")
        default:
            return SwitchboardError(.badMessage, "\(T.self) does not decode: \(error)")
        }
    }

    /// Encodes `value` as JSON; keys sorted so equal values give equal bytes.
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Our wire types hold only strings, numbers, booleans and containers of them: encoding cannot fail.
        return (try? [UInt8](encoder.encode(value))) ?? []
    }

    private static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
}
