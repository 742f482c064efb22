import CHiredis

/// A Redis reply, typed.
public enum RedisValue: Sendable, Equatable, CustomStringConvertible {
    case integer(Int64)
    /// A bulk string: binary-safe bytes.
    case bulk([UInt8])
    case array([RedisValue])
    case null
    /// A status reply such as `OK` or `PONG`.
    case status(String)
    /// An error reply (`ERR ...`, `WRONGTYPE ...`), as a value: pipelines return them in place.
    case error(String)

    /// Copies a hiredis reply tree. Does not free it.
    init(_ reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_INTEGER: self = .integer(r.integer)
        case REDIS_REPLY_STRING: self = .bulk(Self.bytes(r))
        case REDIS_REPLY_STATUS: self = .status(String(decoding: Self.bytes(r), as: UTF8.self))
        case REDIS_REPLY_ERROR: self = .error(String(decoding: Self.bytes(r), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element[i] { items.append(RedisValue(element)) } else { items.append(.null) }
            }
            self = .array(items)
        default: self = .null
        }
    }

    private static func bytes(_ r: redisReply) -> [UInt8] {
        guard let str = r.str, r.len > 0 else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: str, count: r.len))
    }

    /// Bulk or status text as a string; nil for other types.
    public var string: String? {
        switch self {
        case .bulk(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk(let b): return Int64(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }

    /// An `HGETALL` reply (field, value, field, value...) as a dictionary; empty for anything else.
    public var hashFields: [String: String] {
        let items = array ?? []
        var result: [String: String] = [:]
        var i = 0
        while i + 1 < items.count {
            if let k = items[i].string, let v = items[i + 1].string { result[k] = v }
            i += 2
        }
        return result
    }

    public var array: [RedisValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    public var description: String {
        switch self {
        case .integer(let i): return "(integer) \(i)"
        case .bulk(let b): return "\"\(String(decoding: b, as: UTF8.self))\""
        case .array(let a): return "[\(a.map(\.description).joined(separator: ", "))]"
        case .null: return "(nil)"
        case .status(let s): return s
        case .error(let e): return "(error) \(e)"
        }
    }
}

/// One command: its arguments as bytes (binary-safe).
public struct RedisCommand: Sendable, Equatable {
    public var arguments: [[UInt8]]

    public init(_ arguments: [String]) { self.arguments = arguments.map { Array($0.utf8) } }
    public init(_ arguments: String...) { self.init(arguments) }
    public init(bytes: [[UInt8]]) { self.arguments = bytes }

    public var byteCount: Int { arguments.reduce(0) { $0 + $1.count } }
    public var name: String { arguments.first.map { String(decoding: $0, as: UTF8.self).uppercased() } ?? "" }
}
