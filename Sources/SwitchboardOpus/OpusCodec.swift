import COpus
import SwitchboardCore

/// Settings of an Opus stream: 20 ms frames, mono (calls) or two channels (recordings).
public struct OpusFormat: Sendable, Equatable {
    /// What the encoder tunes for: speech on a call, or any sound kept (a recording, whose two channels
    /// must stay apart).
    public enum Application: Sendable, Equatable {
        case voip, audio
    }

    /// 8 000, 12 000, 16 000, 24 000 or 48 000.
    public var sampleRate: Int
    /// 1, or 2 (interleaved, left first).
    public var channels: Int
    /// Two channels coded apart, each its own mono stream (Opus multistream; RFC 7845 channel mapping family 1),
    /// so that neither leaks into the other. One stereo stream codes them jointly, and at a recording's bitrates
    /// lets a loud channel into the other while that one is silent (a call recorded on a starved machine held the
    /// caller's tone in the agent's channel only 14 dB under the agent's own). Ignored for mono.
    public var separateChannels: Bool
    public var application: Application
    /// Bits per second of the encoded stream (6 000 ... 510 000).
    public var bitrate: Int
    /// Encoder effort, 0 (fastest) ... 10 (best).
    public var complexity: Int
    /// In-band forward error correction, for lossy networks, with the loss rate to plan for.
    public var inbandFEC: Bool
    public var expectedLossPercent: Int

    public init(sampleRate: Int = 48_000, channels: Int = 1, separateChannels: Bool = false, application: Application = .voip,
                bitrate: Int = 24_000, complexity: Int = 5, inbandFEC: Bool = false, expectedLossPercent: Int = 0) {
        self.sampleRate = sampleRate
        self.channels = channels
        self.separateChannels = separateChannels
        self.application = application
        self.bitrate = bitrate
        self.complexity = complexity
        self.inbandFEC = inbandFEC
        self.expectedLossPercent = expectedLossPercent
    }

    /// Samples in one 20 ms frame, per channel.
    public var frameSamples: Int { sampleRate / 50 }

    /// Largest legal single-frame Opus packet: a one-byte header and the 1275-byte frame maximum.
    public static let maxPacketBytes = 1276

    /// Largest packet of `streams` streams: each stream's packet, all but the last with up to two bytes more
    /// for its length (self-delimited, RFC 6716 appendix B).
    public static func maxPacketBytes(streams: Int) -> Int { streams * (maxPacketBytes + 2) - 2 }

    /// Opus streams in one packet: one per channel when they are coded apart.
    public var streams: Int { separateChannels ? channels : 1 }

    /// The rates Opus encodes from and decodes to (a packet decodes at any of them, whatever it was made from).
    public static let sampleRates: Set = [8_000, 12_000, 16_000, 24_000, 48_000]

    func validate() throws(SwitchboardError) {
        guard OpusFormat.sampleRates.contains(sampleRate) else {
            throw SwitchboardError(.invalidArgument, "Opus sample rate must be one of 8000, 12000, 16000, 24000, 48000, not \(sampleRate)")
        }
        guard channels == 1 || channels == 2 else {
            throw SwitchboardError(.invalidArgument, "Opus channels must be 1 or 2, not \(channels)")
        }
        guard (6_000...510_000).contains(bitrate) else {
            throw SwitchboardError(.invalidArgument, "Opus bitrate must be 6000...510000, not \(bitrate)")
        }
        guard (0...10).contains(complexity) else {
            throw SwitchboardError(.invalidArgument, "Opus complexity must be 0...10, not \(complexity)")
        }
        guard (0...100).contains(expectedLossPercent) else {
            throw SwitchboardError(.invalidArgument, "expected loss must be 0...100 %, not \(expectedLossPercent)")
        }
    }
}

extension SwitchboardError {
    /// A libopus status as our error, with libopus' own text.
    static func opus(_ status: Int32, _ what: String) -> SwitchboardError {
        let text = String(cString: opus_strerror(status))
        return SwitchboardError(.codecError, "\(what): \(text)", context: ["opus_status": "\(status)"])
    }
}

/// A libopus coder: one stream (`OpusEncoder *`, `OpusDecoder *`), or one per channel (`OpusMSEncoder *`,
/// `OpusMSDecoder *`, each channel its own mono stream).
private enum CodecHandle {
    case single(OpaquePointer)
    case separate(OpaquePointer)

    /// Channel `i` is stream `i`, none coupled.
    static func identityMapping(_ channels: Int) -> [UInt8] { (0..<channels).map { UInt8($0) } }
}

/// Encodes 20 ms frames of 16-bit PCM (mono, or two interleaved channels) into Opus packets.
///
/// Owns its libopus encoder and frees it once. Not thread-safe: one encoder belongs to one call's sending
/// side; guard it with a lock if more than one task sends.
public final class OpusEncoder {
    private let handle: CodecHandle
    public let format: OpusFormat
    private var buffer: [UInt8]

    public init(format: OpusFormat = OpusFormat()) throws(SwitchboardError) {
        try format.validate()
        var status: Int32 = OPUS_OK
        let application = format.application == .voip ? OPUS_APPLICATION_VOIP : OPUS_APPLICATION_AUDIO
        let (rate, channels) = (Int32(format.sampleRate), Int32(format.channels))
        if format.streams > 1 {
            let mapping = CodecHandle.identityMapping(format.channels)
            guard let encoder = opus_multistream_encoder_create(rate, channels, channels, 0, mapping, application, &status),
                  status == OPUS_OK
            else { throw SwitchboardError.opus(status, "cannot create an Opus multistream encoder") }
            handle = .separate(encoder)
        } else {
            guard let encoder = opus_encoder_create(rate, channels, application, &status), status == OPUS_OK
            else { throw SwitchboardError.opus(status, "cannot create an Opus encoder") }
            handle = .single(encoder)
        }
        self.format = format
        buffer = [UInt8](repeating: 0, count: OpusFormat.maxPacketBytes(streams: format.streams))
        try set(sb_opus_set_bitrate, sb_opus_ms_set_bitrate, format.bitrate, "setting the bitrate")
        try set(sb_opus_set_complexity, sb_opus_ms_set_complexity, format.complexity, "setting the complexity")
        try set(sb_opus_set_inband_fec, sb_opus_ms_set_inband_fec, format.inbandFEC ? 1 : 0, "setting in-band FEC")
        try set(sb_opus_set_packet_loss_perc, sb_opus_ms_set_packet_loss_perc, format.expectedLossPercent, "setting expected loss")
    }

    public convenience init(sampleRate: Int, bitrate: Int = 24_000) throws(SwitchboardError) {
        try self.init(format: OpusFormat(sampleRate: sampleRate, bitrate: bitrate))
    }

    deinit {
        switch handle {
        case .single(let encoder): opus_encoder_destroy(encoder)
        case .separate(let encoder): opus_multistream_encoder_destroy(encoder)
        }
    }

    /// The bitrate the encoder reports it uses (all streams together).
    public var bitrate: Int { query(sb_opus_get_bitrate, sb_opus_ms_get_bitrate) }

    /// Samples the decoder's output runs behind the input, at `format.sampleRate` (an Ogg stream's pre-skip).
    public var lookahead: Int { query(sb_opus_get_lookahead, sb_opus_ms_get_lookahead) }

    /// Encodes exactly one frame (`format.frameSamples` samples per channel, interleaved).
    public func encode(_ pcm: [Int16]) throws(SwitchboardError) -> [UInt8] {
        guard pcm.count == format.frameSamples * format.channels else {
            throw SwitchboardError(.invalidArgument, "an Opus frame is \(format.frameSamples * format.channels) samples, got \(pcm.count)")
        }
        let frame = Int32(format.frameSamples)
        let count = pcm.withUnsafeBufferPointer { samples in
            buffer.withUnsafeMutableBufferPointer { out in
                switch handle {
                case .single(let encoder): opus_encode(encoder, samples.baseAddress!, frame, out.baseAddress!, Int32(out.count))
                case .separate(let encoder): opus_multistream_encode(encoder, samples.baseAddress!, frame, out.baseAddress!, Int32(out.count))
                }
            }
        }
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot encode a frame") }
        return Array(buffer[0..<Int(count)])
    }

    private typealias Setter = (OpaquePointer?, Int32) -> Int32
    private typealias Getter = (OpaquePointer?, UnsafeMutablePointer<Int32>?) -> Int32

    private func set(_ single: Setter, _ separate: Setter, _ value: Int, _ what: String) throws(SwitchboardError) {
        let status = switch handle {
        case .single(let encoder): single(encoder, Int32(value))
        case .separate(let encoder): separate(encoder, Int32(value))
        }
        if status != OPUS_OK { throw SwitchboardError.opus(status, what) }
    }

    private func query(_ single: Getter, _ separate: Getter) -> Int {
        var value: Int32 = 0
        switch handle {
        case .single(let encoder): _ = single(encoder, &value)
        case .separate(let encoder): _ = separate(encoder, &value)
        }
        return Int(value)
    }
}

/// Decodes Opus packets into 20 ms frames of 16-bit PCM (mono, or two interleaved channels), and conceals lost
/// packets.
///
/// Owns its libopus decoder and frees it once. Not thread-safe: one decoder belongs to one call's receiving
/// side.
public final class OpusDecoder {
    private let handle: CodecHandle
    public let sampleRate: Int
    public let channels: Int
    /// The largest packet it takes.
    private let maxPacketBytes: Int
    /// Room for the longest frame Opus can carry (120 ms), so a peer's longer frame still decodes.
    private var buffer: [Int16]

    /// `separateChannels`: packets carry each channel as its own mono stream (see `OpusFormat`).
    public init(sampleRate: Int = 48_000, channels: Int = 1, separateChannels: Bool = false) throws(SwitchboardError) {
        guard channels == 1 || channels == 2 else {
            throw SwitchboardError(.invalidArgument, "Opus channels must be 1 or 2, not \(channels)")
        }
        guard OpusFormat.sampleRates.contains(sampleRate) else {
            throw SwitchboardError(.invalidArgument, "Opus sample rate must be one of 8000, 12000, 16000, 24000, 48000, not \(sampleRate)")
        }
        var status: Int32 = OPUS_OK
        let streams = separateChannels ? channels : 1
        if streams > 1 {
            let mapping = CodecHandle.identityMapping(channels)
            guard let decoder = opus_multistream_decoder_create(Int32(sampleRate), Int32(channels), Int32(channels), 0, mapping, &status),
                  status == OPUS_OK
            else { throw SwitchboardError.opus(status, "cannot create an Opus multistream decoder") }
            handle = .separate(decoder)
        } else {
            guard let decoder = opus_decoder_create(Int32(sampleRate), Int32(channels), &status), status == OPUS_OK else {
                throw SwitchboardError.opus(status, "cannot create an Opus decoder")
            }
            handle = .single(decoder)
        }
        self.sampleRate = sampleRate
        self.channels = channels
        maxPacketBytes = OpusFormat.maxPacketBytes(streams: streams)
        buffer = [Int16](repeating: 0, count: sampleRate * 120 / 1000 * channels)
    }

    deinit {
        switch handle {
        case .single(let decoder): opus_decoder_destroy(decoder)
        case .separate(let decoder): opus_multistream_decoder_destroy(decoder)
        }
    }

    /// Decodes `packet` (nil: conceals a lost one) into `buffer`, at most `frames` samples per channel.
    private func decode(_ packet: UnsafeBufferPointer<UInt8>?, frames: Int32? = nil) -> Int32 {
        buffer.withUnsafeMutableBufferPointer { out in
            let (data, length) = (packet?.baseAddress, Int32(packet?.count ?? 0))
            let frames = frames ?? Int32(out.count / channels)
            return switch handle {
            case .single(let decoder): opus_decode(decoder, data, length, out.baseAddress!, frames, 0)
            case .separate(let decoder): opus_multistream_decode(decoder, data, length, out.baseAddress!, frames, 0)
            }
        }
    }

    /// Samples in one 20 ms frame.
    public var frameSamples: Int { sampleRate / 50 }

    /// Decodes one packet. Empty, oversized or corrupt packets throw; nothing crashes.
    public func decode(_ packet: [UInt8]) throws(SwitchboardError) -> [Int16] {
        guard !packet.isEmpty else { throw SwitchboardError(.badMessage, "empty Opus packet") }
        guard packet.count <= maxPacketBytes else {
            throw SwitchboardError(.tooLarge, "Opus packet of \(packet.count) bytes is over \(maxPacketBytes)")
        }
        let count = packet.withUnsafeBufferPointer { decode($0) }
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot decode a packet") }
        return Array(buffer[0..<Int(count) * channels])
    }

    /// One frame standing in for a packet that never came (packet-loss concealment).
    public func decodeMissing() throws(SwitchboardError) -> [Int16] {
        let count = decode(nil, frames: Int32(frameSamples))
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot conceal a lost packet") }
        return Array(buffer[0..<Int(count) * channels])
    }
}

/// The libopus this process runs with, e.g. "libopus 1.3.1".
public var opusLibraryVersion: String { String(cString: opus_get_version_string()) }
