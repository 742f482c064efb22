import COpus
import SwitchboardCore

/// Settings of an Opus stream: 20 ms frames, mono (calls) or stereo (recordings).
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
    public var application: Application
    /// Bits per second of the encoded stream (6 000 ... 510 000).
    public var bitrate: Int
    /// Encoder effort, 0 (fastest) ... 10 (best).
    public var complexity: Int
    /// In-band forward error correction, for lossy networks, with the loss rate to plan for.
    public var inbandFEC: Bool
    public var expectedLossPercent: Int

    public init(sampleRate: Int = 48_000, channels: Int = 1, application: Application = .voip, bitrate: Int = 24_000,
                complexity: Int = 5, inbandFEC: Bool = false, expectedLossPercent: Int = 0) {
        self.sampleRate = sampleRate
        self.channels = channels
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

/// Encodes 20 ms frames of 16-bit PCM (mono, or interleaved stereo) into Opus packets.
///
/// Owns its `OpusEncoder *` and frees it once. Not thread-safe: one encoder belongs to one call's sending
/// side; guard it with a lock if more than one task sends.
public final class OpusEncoder {
    private let handle: OpaquePointer
    public let format: OpusFormat
    private var buffer = [UInt8](repeating: 0, count: OpusFormat.maxPacketBytes)

    public init(format: OpusFormat = OpusFormat()) throws(SwitchboardError) {
        try format.validate()
        var status: Int32 = OPUS_OK
        let application = format.application == .voip ? OPUS_APPLICATION_VOIP : OPUS_APPLICATION_AUDIO
        guard let encoder = opus_encoder_create(Int32(format.sampleRate), Int32(format.channels), application, &status),
              status == OPUS_OK
        else { throw SwitchboardError.opus(status, "cannot create an Opus encoder") }
        handle = encoder
        self.format = format
        try check(sb_opus_set_bitrate(handle, Int32(format.bitrate)), "setting the bitrate")
        try check(sb_opus_set_complexity(handle, Int32(format.complexity)), "setting the complexity")
        try check(sb_opus_set_inband_fec(handle, format.inbandFEC ? 1 : 0), "setting in-band FEC")
        try check(sb_opus_set_packet_loss_perc(handle, Int32(format.expectedLossPercent)), "setting expected loss")
    }

    public convenience init(sampleRate: Int, bitrate: Int = 24_000) throws(SwitchboardError) {
        try self.init(format: OpusFormat(sampleRate: sampleRate, bitrate: bitrate))
    }

    deinit { opus_encoder_destroy(handle) }

    private func check(_ status: Int32, _ what: String) throws(SwitchboardError) {
        if status != OPUS_OK { throw SwitchboardError.opus(status, what) }
    }

    /// The bitrate the encoder reports it uses.
    public var bitrate: Int {
        var value: Int32 = 0
        _ = sb_opus_get_bitrate(handle, &value)
        return Int(value)
    }

    /// Samples the decoder's output runs behind the input, at `format.sampleRate` (an Ogg stream's pre-skip).
    public var lookahead: Int {
        var value: Int32 = 0
        _ = sb_opus_get_lookahead(handle, &value)
        return Int(value)
    }

    /// Encodes exactly one frame (`format.frameSamples` samples per channel, interleaved).
    public func encode(_ pcm: [Int16]) throws(SwitchboardError) -> [UInt8] {
        guard pcm.count == format.frameSamples * format.channels else {
            throw SwitchboardError(.invalidArgument, "an Opus frame is \(format.frameSamples * format.channels) samples, got \(pcm.count)")
        }
        let count = pcm.withUnsafeBufferPointer { samples in
            buffer.withUnsafeMutableBufferPointer { out in
                opus_encode(handle, samples.baseAddress!, Int32(format.frameSamples), out.baseAddress!, Int32(out.count))
            }
        }
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot encode a frame") }
        return Array(buffer[0..<Int(count)])
    }
}

/// Decodes Opus packets into 20 ms frames of 16-bit PCM (mono, or interleaved stereo), and conceals lost packets.
///
/// Owns its `OpusDecoder *` and frees it once. Not thread-safe: one decoder belongs to one call's receiving
/// side.
public final class OpusDecoder {
    private let handle: OpaquePointer
    public let sampleRate: Int
    public let channels: Int
    /// Room for the longest frame Opus can carry (120 ms), so a peer's longer frame still decodes.
    private var buffer: [Int16]

    public init(sampleRate: Int = 48_000, channels: Int = 1) throws(SwitchboardError) {
        guard channels == 1 || channels == 2 else {
            throw SwitchboardError(.invalidArgument, "Opus channels must be 1 or 2, not \(channels)")
        }
        guard OpusFormat.sampleRates.contains(sampleRate) else {
            throw SwitchboardError(.invalidArgument, "Opus sample rate must be one of 8000, 12000, 16000, 24000, 48000, not \(sampleRate)")
        }
        var status: Int32 = OPUS_OK
        guard let decoder = opus_decoder_create(Int32(sampleRate), Int32(channels), &status), status == OPUS_OK else {
            throw SwitchboardError.opus(status, "cannot create an Opus decoder")
        }
        handle = decoder
        self.sampleRate = sampleRate
        self.channels = channels
        buffer = [Int16](repeating: 0, count: sampleRate * 120 / 1000 * channels)
    }

    deinit { opus_decoder_destroy(handle) }

    /// Samples in one 20 ms frame.
    public var frameSamples: Int { sampleRate / 50 }

    /// Decodes one packet. Empty, oversized or corrupt packets throw; nothing crashes.
    public func decode(_ packet: [UInt8]) throws(SwitchboardError) -> [Int16] {
        guard !packet.isEmpty else { throw SwitchboardError(.badMessage, "empty Opus packet") }
        guard packet.count <= OpusFormat.maxPacketBytes else {
            throw SwitchboardError(.tooLarge, "Opus packet of \(packet.count) bytes is over \(OpusFormat.maxPacketBytes)")
        }
        let count = packet.withUnsafeBufferPointer { data in
            buffer.withUnsafeMutableBufferPointer { out in
                opus_decode(handle, data.baseAddress, Int32(data.count), out.baseAddress!, Int32(out.count / channels), 0)
            }
        }
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot decode a packet") }
        return Array(buffer[0..<Int(count) * channels])
    }

    /// One frame standing in for a packet that never came (packet-loss concealment).
    public func decodeMissing() throws(SwitchboardError) -> [Int16] {
        let frame = frameSamples
        let count = buffer.withUnsafeMutableBufferPointer { out in
            opus_decode(handle, nil, 0, out.baseAddress!, Int32(frame), 0)
        }
        guard count > 0 else { throw SwitchboardError.opus(count, "cannot conceal a lost packet") }
        return Array(buffer[0..<Int(count) * channels])
    }
}

/// The libopus this process runs with, e.g. "libopus 1.3.1".
public var opusLibraryVersion: String { String(cString: opus_get_version_string()) }
