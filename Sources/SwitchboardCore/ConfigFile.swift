import Foundation

/// A config file (`--config FILE`): one JSON object whose keys are long option names and whose values are
/// strings, numbers or booleans (`{"nats-url": "nats://10.0.0.5:4222", "capacity": 50}`). Read like network
/// input: size-limited, every key and value checked, a clear error for anything else.
public enum ConfigFile {
    public static let maxBytes = 1 << 20

    private enum Value: Decodable {
        case bool(Bool), integer(Int64), number(Double), text(String)

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let i = try? c.decode(Int64.self) { self = .integer(i) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else { self = .text(try c.decode(String.self)) }
        }
    }

    public static func parse(_ data: Data) throws(SwitchboardError) -> [String: String] {
        guard data.count <= maxBytes else { throw SwitchboardError(.tooLarge, "it is \(data.count) bytes, over \(maxBytes)") }
        let object: [String: Value]
        do {
            object = try JSONDecoder().decode([String: Value].self, from: data)
        } catch {
            throw SwitchboardError(.badMessage, "it is not a JSON object of option names and strings, numbers or true/false")
        }
        var values: [String: String] = [:]
        for (key, value) in object {
            guard (1...64).contains(key.utf8.count),
                  key.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }) else {
                throw SwitchboardError(.badMessage, "key '\(key.prefix(64))' is not an option name (lowercase letters, digits, '-')")
            }
            switch value {
            case .bool(let b): values[key] = b ? "true" : "false"
            case .integer(let i): values[key] = String(i)
            case .number(let d):
                guard d.isFinite else { throw SwitchboardError(.badMessage, "the value of '\(key)' is not a finite number") }
                values[key] = String(d)
            case .text(let s):
                guard s.utf8.count <= 4096, !s.unicodeScalars.contains(where: { $0.value < 32 }) else {
                    throw SwitchboardError(.badMessage, "the value of '\(key)' is over 4096 bytes or has control characters")
                }
                values[key] = s
            }
        }
        return values
    }
}
