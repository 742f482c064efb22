import SwitchboardCore
import SwitchboardOpus
import Testing

@Suite struct OpusCodecTests {
    /// Encodes one second of a tone and decodes it, returning input and output (after codec warm-up).
    func roundTrip(frequency: Double, sampleRate: Int) throws -> (sent: [Int16], got: [Int16]) {
        let encoder = try OpusEncoder(format: OpusFormat(sampleRate: sampleRate, bitrate: 32_000))
        let decoder = try OpusDecoder(sampleRate: sampleRate)
        var tone = ToneGenerator(frequency: frequency, sampleRate: sampleRate)
        var sent: [Int16] = [], got: [Int16] = []
        for i in 0..<50 {
            let frame = tone.next(encoder.format.frameSamples)
            let packet = try encoder.encode(frame)
            #expect(!packet.isEmpty && packet.count <= OpusFormat.maxPacketBytes)
            let decoded = try decoder.decode(packet)
            #expect(decoded.count == encoder.format.frameSamples)
            if i >= 5 {  // skip the codec's first frames
                sent += frame
                got += decoded
            }
        }
        return (sent, got)
    }

    @Test(arguments: [48_000, 16_000])
    func toneSurvivesTheRoundTripAsTheSameSound(sampleRate: Int) throws {
        let (sent, got) = try roundTrip(frequency: 440, sampleRate: sampleRate)
        let frequency = SignalAnalysis.dominantFrequency(got, sampleRate: sampleRate, from: 100, to: 2000)
        #expect(abs(frequency - 440) <= 3, "dominant frequency \(frequency) Hz")
        let ratio = SignalAnalysis.rms(got) / SignalAnalysis.rms(sent)
        #expect(ratio > 0.7 && ratio < 1.3, "energy ratio \(ratio)")
    }

    @Test func analysisTellsTonesApart() throws {
        let (_, got) = try roundTrip(frequency: 1000, sampleRate: 48_000)
        let frequency = SignalAnalysis.dominantFrequency(got, sampleRate: 48_000, from: 100, to: 2000)
        #expect(abs(frequency - 1000) <= 3)
        #expect(abs(frequency - 440) > 100)
        #expect(SignalAnalysis.rms([Int16](repeating: 0, count: 960)) == 0)
    }

    @Test func bitrateAndComplexityTakeEffect() throws {
        func averagePacket(bitrate: Int, complexity: Int) throws -> Double {
            let encoder = try OpusEncoder(format: OpusFormat(bitrate: bitrate, complexity: complexity))
            #expect(encoder.bitrate == bitrate)
            var tone = ToneGenerator(frequency: 440)
            var noise = SystemRandomNumberGenerator()
            var total = 0
            for _ in 0..<50 {
                // A tone with noise, so the encoder has something to spend bits on.
                let frame = tone.next(960).map { $0 &+ Int16.random(in: -2000...2000, using: &noise) }
                total += try encoder.encode(frame).count
            }
            return Double(total) / 50
        }
        let low = try averagePacket(bitrate: 12_000, complexity: 0)
        let high = try averagePacket(bitrate: 64_000, complexity: 10)
        #expect(high > low * 2, "low \(low) B, high \(high) B")
    }

    @Test func packetLossConcealmentFillsTheGapAndDecodingGoesOn() throws {
        let encoder = try OpusEncoder()
        let decoder = try OpusDecoder()
        var tone = ToneGenerator()
        var packets: [[UInt8]] = []
        for _ in 0..<20 { packets.append(try encoder.encode(tone.next(960))) }
        for p in packets[0..<10] { _ = try decoder.decode(p) }
        let concealed = try decoder.decodeMissing()
        #expect(concealed.count == 960)
        #expect(SignalAnalysis.rms(concealed) > 100, "concealment continues the sound rather than silence")
        let after = try decoder.decode(packets[11])
        #expect(after.count == 960)
    }

    /// Mono, and two channels coded apart (a recording read back, whose packets carry two streams).
    @Test(arguments: [false, true])
    func badPacketsGiveCodedErrorsNotCrashes(separateChannels: Bool) throws {
        let decoder = try OpusDecoder(channels: separateChannels ? 2 : 1, separateChannels: separateChannels)
        #expect(throws: SwitchboardError.self) { _ = try decoder.decode([]) }
        do {
            _ = try decoder.decode([UInt8](repeating: 0xff, count: 5000))
            Issue.record("oversized packet decoded")
        } catch {
            #expect(error.code == .tooLarge)
        }
        var rng = SystemRandomNumberGenerator()
        var libopusErrors = 0
        for _ in 0..<2000 {
            let packet = (0..<Int.random(in: 1...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            do {
                _ = try decoder.decode(packet)  // some random bytes are valid Opus; the point is no crash
            } catch {
                #expect(error.code == .codecError)
                #expect(error.context["opus_status"] != nil)
                libopusErrors += 1
            }
        }
        #expect(libopusErrors > 0, "some garbage must be refused by libopus")
        // A known-invalid packet: code 3 (arbitrary frame count) with a zero frame count.
        do {
            _ = try decoder.decode([0x03, 0x00])
            Issue.record("invalid packet decoded")
        } catch {
            #expect(error.message.contains("corrupted") || error.message.contains("invalid"), "\(error.message)")
        }
    }

    @Test func badSettingsAndFramesAreRefused() throws {
        #expect(throws: SwitchboardError.self) { _ = try OpusEncoder(format: OpusFormat(sampleRate: 44_100)) }
        #expect(throws: SwitchboardError.self) { _ = try OpusDecoder(sampleRate: 22_050) }
        // Every rate Opus has is taken: a gateway encodes a phone call's 8 kHz as it comes.
        for rate in [8_000, 12_000, 16_000, 24_000, 48_000] {
            let encoder = try OpusEncoder(sampleRate: rate)
            var tone = ToneGenerator(frequency: 440, sampleRate: rate)
            let decoded = try OpusDecoder(sampleRate: 48_000).decode(try encoder.encode(tone.next(rate / 50)))
            #expect(decoded.count == 960, "a packet made at \(rate) Hz decodes at 48 kHz")
        }
        #expect(throws: SwitchboardError.self) { _ = try OpusEncoder(format: OpusFormat(bitrate: 1)) }
        #expect(throws: SwitchboardError.self) { _ = try OpusEncoder(format: OpusFormat(complexity: 11)) }
        let encoder = try OpusEncoder()
        do {
            _ = try encoder.encode([Int16](repeating: 0, count: 100))
            Issue.record("short frame encoded")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }

    @Test func toneGeneratorKeepsPhaseAcrossFrames() {
        var whole = ToneGenerator(frequency: 440)
        var pieces = ToneGenerator(frequency: 440)
        let a = whole.next(1920)
        let b = pieces.next(960) + pieces.next(960)
        #expect(a == b)
        #expect(pieces.samplesProduced == 1920)
    }
}
