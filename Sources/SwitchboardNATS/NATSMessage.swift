import CNATS
import SwitchboardCore

/// NATS message headers: names with one or more values, in the order they were added.
public struct NATSHeaders: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { (name: $0.0, value: $0.1) }
    }

    public var isEmpty: Bool { fields.isEmpty }

    /// The first value for `name` (case-sensitive, as NATS headers are).
    public subscript(name: String) -> String? {
        get { fields.first { $0.name == name }?.value }
        set {
            fields.removeAll { $0.name == name }
            if let newValue { fields.append((name: name, value: newValue)) }
        }
    }

    public func values(for name: String) -> [String] { fields.filter { $0.name == name }.map(\.value) }

    public mutating func add(_ name: String, _ value: String) { fields.append((name: name, value: value)) }

    public static func == (lhs: NATSHeaders, rhs: NATSHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// A message received from NATS, copied out of nats.c (whose `natsMsg` is destroyed at once).
public struct NATSMessage: Sendable {
    public var subject: String
    public var replyTo: String?
    public var headers: NATSHeaders
    public var payload: [UInt8]

    public init(subject: String, replyTo: String? = nil, headers: NATSHeaders = NATSHeaders(), payload: [UInt8]) {
        self.subject = subject
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
    }

    /// Copies subject, reply, headers and payload out of a nats.c message. Does not destroy it.
    init(copying msg: OpaquePointer) {
        subject = String(cString: natsMsg_GetSubject(msg))
        replyTo = natsMsg_GetReply(msg).map { String(cString: $0) }
        let count = Int(natsMsg_GetDataLength(msg))
        if count > 0, let data = natsMsg_GetData(msg) {
            payload = [UInt8](UnsafeRawBufferPointer(start: data, count: count))
        } else {
            payload = []
        }
        headers = NATSHeaders()
        var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var keyCount: Int32 = 0
        guard natsMsgHeader_Keys(msg, &keys, &keyCount) == NATS_OK, let keys else { return }
        defer { free(keys) }
        for k in 0..<Int(keyCount) {
            guard let key = keys[k] else { continue }
            let name = String(cString: key)
            var values: UnsafeMutablePointer<UnsafePointer<CChar>?>?
            var valueCount: Int32 = 0
            guard natsMsgHeader_Values(msg, key, &values, &valueCount) == NATS_OK, let values else { continue }
            for v in 0..<Int(valueCount) { if let value = values[v] { headers.add(name, String(cString: value)) } }
            free(values)
        }
    }

    /// The payload as UTF-8 text (lossy), for logs and tests.
    public var text: String { String(decoding: payload, as: UTF8.self) }
}
