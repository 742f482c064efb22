/// One media packet on `<prefix>.media.<call>.in` / `.out`: a 10-byte header, then its payload.
///
/// ```
/// byte 0     version (1)
/// byte 1     kind: 0 audio (one Opus packet), 1 DTMF (one key the caller pressed)
/// bytes 2-5  sequence number, big-endian, +1 per audio packet
/// bytes 6-9  timestamp in samples at 48 kHz, big-endian (+960 per 20 ms frame)
/// bytes 10-  audio: Opus payload, 1...1276 bytes; DTMF: one ASCII byte, 0-9 * # A-D
/// ```
/// Binary, not JSON: 50 packets a second each way per call. A DTMF packet takes no sequence number of its own:
/// it carries those of the audio packet it follows, so the receiver's loss count stays right. (A receiver
/// older than DTMF refuses it as a bad Opus packet, counted, and the call goes on.)
public struct MediaPacket: Sendable, Equatable {
    public static let version: UInt8 = 1
    public static let headerSize = 10
    /// The largest legal single-frame Opus packet.
    public static let maxPayload = 1276

    public enum Kind: UInt8, Sendable {
        case audio = 0
        case dtmf = 1
        /// Toward the caller: the agent was interrupted; drop the audio queued for playing (Twilio's `clear`).
        case clear = 2
    }

    public var kind: Kind
    public var sequence: UInt32
    public var timestamp: UInt32
    public var payload: [UInt8]

    public init(sequence: UInt32, timestamp: UInt32, payload: [UInt8], kind: Kind = .audio) {
        self.kind = kind
        self.sequence = sequence
        self.timestamp = timestamp
        self.payload = payload
    }

    /// A key the caller pressed, after the audio packet numbered `sequence`.
    public static func dtmf(_ digit: Character, sequence: UInt32, timestamp: UInt32) -> MediaPacket {
        MediaPacket(sequence: sequence, timestamp: timestamp, payload: Array(String(digit).utf8.prefix(1)), kind: .dtmf)
    }

    /// The agent was interrupted (sent toward the caller, numbered as the next audio packet).
    public static func clear(sequence: UInt32, timestamp: UInt32) -> MediaPacket {
        MediaPacket(sequence: sequence, timestamp: timestamp, payload: [0], kind: .clear)
    }

    /// The key a `dtmf` packet carries (checked by `decode`).
    public var digit: Character? {
        guard kind == .dtmf, payload.count == 1 else { return nil }
        return Character(Unicode.Scalar(payload[0]))
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.headerSize + payload.count)
        bytes.append(Self.version)
        bytes.append(kind.rawValue)
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
        guard let kind = Kind(rawValue: bytes[1]) else {
            throw SwitchboardError(.badMessage, "media packet kind \(bytes[1]) is unknown")
        }
        if kind == .dtmf {
            guard bytes.count == headerSize + 1, MediaStream.dtmfDigits.contains(Character(Unicode.Scalar(bytes[headerSize]))) else {
                throw SwitchboardError(.badMessage, "DTMF packet must carry one of 0-9 * # A-D")
            }
        }
        func u32(_ at: Int) -> UInt32 {
            bytes[at..<at + 4].reduce(0) { ($0 << 8) | UInt32($1) }
        }
        return MediaPacket(sequence: u32(2), timestamp: u32(6), payload: Array(bytes[headerSize...]), kind: kind)
    }
}
