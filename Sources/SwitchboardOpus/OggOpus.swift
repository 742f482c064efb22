import SwitchboardCore

/// Ogg Opus framing (RFC 3533, RFC 7845) for 20 ms packets: the identification and comment headers, then
/// pages of packets whose granule positions count 48 kHz samples. Pure: bytes out, written by the caller as
/// they come (a file being recorded plays up to its last page).
public struct OggOpusWriter: Sendable {
    public let serial: UInt32
    public let channels: Int
    /// Each channel its own mono stream (`OpusFormat.separateChannels`): channel mapping family 1, not 0.
    public let separateChannels: Bool
    public let inputSampleRate: Int
    /// Samples (at 48 kHz) a player drops at the start: the encoder's lookahead.
    public let preSkip: Int
    private var sequence: UInt32 = 0
    private var pending: [[UInt8]] = []
    /// Packets put in pages so far.
    private var written: Int64 = 0
    public private(set) var finished = false

    /// 48 kHz samples in one 20 ms packet.
    public static let samplesPerPacket: Int64 = 960
    /// Packets per page at most (a page holds 255 lacing values; a 20 ms packet takes one to six).
    static let packetsPerPage = 42

    public init(serial: UInt32, channels: Int, separateChannels: Bool = false, inputSampleRate: Int, preSkip: Int) {
        self.serial = serial
        self.channels = channels
        self.separateChannels = separateChannels && channels > 1
        self.inputSampleRate = inputSampleRate
        self.preSkip = preSkip
    }

    /// The framing of what `encoder` makes, its lookahead as the pre-skip.
    public init(serial: UInt32, for encoder: OpusEncoder) {
        let format = encoder.format
        self.init(serial: serial, channels: format.channels, separateChannels: format.separateChannels,
                  inputSampleRate: format.sampleRate, preSkip: encoder.lookahead * 48_000 / format.sampleRate)
    }

    /// The two header pages, which open the stream.
    public mutating func header(vendor: String = "switchboard", comments: [String] = []) -> [UInt8] {
        var head = Array("OpusHead".utf8)
        head.append(1)  // version
        head.append(UInt8(channels))
        head += Self.le(UInt16(preSkip))
        head += Self.le(UInt32(inputSampleRate))
        head += [0, 0]  // output gain
        if separateChannels {
            // Family 1 (RFC 7845 5.1.1.2): as many streams as channels, none coupled, channel i in stream i.
            head += [1, UInt8(channels), 0] + (0..<channels).map { UInt8($0) }
        } else {
            head.append(0)  // family 0: one mono or stereo stream
        }
        var tags = Array("OpusTags".utf8)
        tags += Self.le(UInt32(vendor.utf8.count)) + Array(vendor.utf8)
        tags += Self.le(UInt32(comments.count))
        for comment in comments { tags += Self.le(UInt32(comment.utf8.count)) + Array(comment.utf8) }
        return page([head], granule: 0, flags: 0x02) + page([tags], granule: 0, flags: 0)
    }

    /// Queues one 20 ms packet.
    public mutating func add(_ packet: [UInt8]) {
        precondition(!finished, "packet after the end of the stream")
        pending.append(packet)
    }

    /// Pages of the packets queued since the last call. One packet is held back unless `last` (which ends the
    /// stream), so the end-of-stream page always carries one.
    public mutating func pages(last: Bool = false) -> [UInt8] {
        guard !finished else { return [] }
        var out: [UInt8] = []
        let keep = last ? 0 : 1
        while pending.count > keep {
            let count = min(Self.packetsPerPage, pending.count - keep)
            let packets = Array(pending.prefix(count))
            pending.removeFirst(count)
            written += Int64(count)
            out += page(packets, granule: written * Self.samplesPerPacket, flags: last && pending.isEmpty ? 0x04 : 0)
        }
        if last {
            finished = true
            if out.isEmpty { out = page([], granule: written * Self.samplesPerPacket, flags: 0x04) }  // a stream with no packet
        }
        return out
    }

    /// Milliseconds of audio in pages so far.
    public var writtenMillis: Int64 { written * 20 }

    private mutating func page(_ packets: [[UInt8]], granule: Int64, flags: UInt8) -> [UInt8] {
        var lacing: [UInt8] = []
        for packet in packets {
            lacing += [UInt8](repeating: 255, count: packet.count / 255)
            lacing.append(UInt8(packet.count % 255))
        }
        var bytes = Array("OggS".utf8) + [0, flags]
        bytes += Self.le(UInt64(bitPattern: granule))
        bytes += Self.le(serial)
        bytes += Self.le(sequence)
        bytes += [0, 0, 0, 0]  // checksum, filled below
        bytes.append(UInt8(lacing.count))
        bytes += lacing
        for packet in packets { bytes += packet }
        let crc = OggCRC.checksum(bytes)
        bytes.replaceSubrange(22..<26, with: Self.le(crc))
        sequence &+= 1
        return bytes
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}

/// The Ogg checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial 0.
public enum OggCRC {
    static let table: [UInt32] = (0..<256).map { index in
        var r = UInt32(index) << 24
        for _ in 0..<8 { r = r & 0x8000_0000 != 0 ? (r << 1) ^ 0x04C1_1DB7 : r << 1 }
        return r
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int(((crc >> 24) ^ UInt32(byte)) & 0xFF)] }
        return crc
    }
}

/// Reads an Ogg Opus file back: its header and packets, every page's checksum checked. For tests and checks
/// of what was written; a malformed file is an error, never a crash.
public struct OggOpusFile: Sendable {
    public var channels: Int
    /// Each channel its own mono stream (channel mapping family 1, none coupled, in order).
    public var separateChannels: Bool
    public var preSkip: Int
    public var inputSampleRate: Int
    public var packets: [[UInt8]]
    /// The last page's granule position (48 kHz samples, pre-skip included).
    public var granule: Int64
    public var endsWithEndOfStream: Bool

    public init(_ bytes: [UInt8]) throws(SwitchboardError) {
        func bad(_ message: String) -> SwitchboardError { SwitchboardError(.badMessage, "Ogg Opus: \(message)") }
        var offset = 0
        var all: [[UInt8]] = []
        var partial: [UInt8] = []
        granule = 0
        endsWithEndOfStream = false
        while offset < bytes.count {
            guard bytes.count - offset >= 27, Array(bytes[offset..<offset + 4]) == Array("OggS".utf8) else { throw bad("no page at byte \(offset)") }
            let segments = Int(bytes[offset + 26])
            guard bytes.count - offset >= 27 + segments else { throw bad("page header cut short at byte \(offset)") }
            let lacing = bytes[(offset + 27)..<(offset + 27 + segments)]
            let size = 27 + segments + lacing.reduce(0) { $0 + Int($1) }
            guard bytes.count - offset >= size else { throw bad("page cut short at byte \(offset)") }
            var page = Array(bytes[offset..<offset + size])
            let stored = page[22..<26].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            page.replaceSubrange(22..<26, with: [0, 0, 0, 0])
            guard OggCRC.checksum(page) == stored else { throw bad("bad checksum in the page at byte \(offset)") }
            granule = page[6..<14].enumerated().reduce(Int64(0)) { $0 | Int64($1.element) << (8 * Int64($1.offset)) }
            endsWithEndOfStream = page[5] & 0x04 != 0
            var data = 27 + segments
            for value in lacing {
                partial += page[data..<data + Int(value)]
                data += Int(value)
                if value < 255 {
                    all.append(partial)
                    partial = []
                }
            }
            offset += size
        }
        guard all.count >= 2, all[0].count >= 19, Array(all[0].prefix(8)) == Array("OpusHead".utf8),
              Array(all[1].prefix(8)) == Array("OpusTags".utf8)
        else { throw bad("no OpusHead and OpusTags") }
        let head = all[0]
        channels = Int(head[9])
        switch head[18] {
        case 0:
            guard channels == 1 || channels == 2 else { throw bad("\(channels) channels in mapping family 0") }
            separateChannels = false
        case 1:
            // Read back as written: one stream per channel, none coupled, channel i in stream i.
            let table = [UInt8(channels), 0] + (0..<channels).map { UInt8($0) }
            guard channels == 2, Array(head.dropFirst(19)) == table else { throw bad("a channel mapping other than two mono streams") }
            separateChannels = true
        default:
            throw bad("channel mapping family \(head[18])")
        }
        preSkip = Int(head[10]) | Int(head[11]) << 8
        inputSampleRate = (12..<16).reduce(0) { $0 | Int(head[$1]) << (8 * ($1 - 12)) }
        packets = Array(all.dropFirst(2))
    }
}

extension OggOpusFile {
    /// Every packet decoded at `sampleRate`, as each channel's 20 ms frames: `[channel][frame]`.
    public func channelFrames(sampleRate: Int) throws(SwitchboardError) -> [[[Int16]]] {
        let decoder = try OpusDecoder(sampleRate: sampleRate, channels: channels, separateChannels: separateChannels)
        var out = [[[Int16]]](repeating: [], count: channels)
        for packet in packets {
            let pcm = try decoder.decode(packet)
            for c in 0..<channels { out[c].append(stride(from: c, to: pcm.count, by: channels).map { pcm[$0] }) }
        }
        return out
    }
}

/// How one channel of a recording sounds, frame by frame: how much of it is loud, and its longest silence
/// between its first and last loud frames (a gap in the talk: a stall, a move, a failover).
public struct ChannelSummary: Sendable, Equatable {
    public var frames: Int
    public var loudFrames: Int
    public var longestGapMillis: Int
    /// Where that gap starts, from the recording's start.
    public var longestGapAtMillis: Int

    /// `threshold`: RMS above which a frame is loud (500 of 32,767, about -36 dBFS, as the timeline's speech).
    public init(_ frames: [[Int16]], threshold: Double = 500) {
        self.frames = frames.count
        let loud = frames.map { SignalAnalysis.rms($0) >= threshold }
        loudFrames = loud.filter { $0 }.count
        longestGapMillis = 0
        longestGapAtMillis = 0
        guard let first = loud.firstIndex(of: true), let last = loud.lastIndex(of: true) else { return }
        var run = 0
        for i in first...last {
            if loud[i] {
                if run * 20 > longestGapMillis { (longestGapMillis, longestGapAtMillis) = (run * 20, (i - run) * 20) }
                run = 0
            } else {
                run += 1
            }
        }
    }
}
