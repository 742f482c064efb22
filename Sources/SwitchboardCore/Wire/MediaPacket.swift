/// One audio packet on `<prefix>.media.<call>.in` / `.out`: a 10-byte header, then one Opus packet.
///
/// ```
/// byte 0     version (1)
/// byte 1     flags (0; reserved)
/// bytes 2-5  sequence number, big-endian, +1 per packet
/// bytes 6-9  timestamp in samples at 48 kHz, big-endian (+960 per 20 ms frame)
/// bytes 10-  Opus payload, 1...1276 bytes
/// ```
/// Binary, not JSON: 50 packets a second each way per call.
public struct MediaPacket: Sendable, Equatable {
    public static let version: UInt8 = 1
    public static let headerSize = 10
    /// The largest legal single-frame Opus packet.
    public static let maxPayload = 1276

    public var sequence: UInt32
    public var timestamp: UInt32
    public var payload: [UInt8]

    public init(sequence: UInt32, timestamp: UInt32, payload: [UInt8]) {
        self.sequence = sequence
        self.timestamp = timestamp
        self.payload = payload
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.headerSize + payload.count)
        bytes.append(Self.version)
        bytes.append(0)
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: sequence >> UInt32(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: timestamp >> UInt32(shift))) }
        bytes.append(contentsOf: payload)
        return bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> MediaPacket {
        guard bytes.count <= headerSize + maxPayload else {
            throw SwitchboardError(.tooLarge, "media packet of \(bytes.count) bytes is over \(headerSize + maxPayload)")
        }
        guard bytes.count > headerSize else {
            throw SwitchboardError(.badMessage, "media packet of \(bytes.count) bytes is shorter than its header and one byte")
        }
        guard bytes[0] == version else {
            throw SwitchboardError(.badMessage, "media packet version \(bytes[0]); this build speaks \(version)")
        }
        func u32(_ at: Int) -> UInt32 {
            bytes[at..<at + 4].reduce(0) { ($0 << 8) | UInt32($1) }
        }
        return MediaPacket(sequence: u32(2), timestamp: u32(6), payload: Array(bytes[headerSize...]))
    }
}
