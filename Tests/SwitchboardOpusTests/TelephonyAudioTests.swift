import SwitchboardCore
import SwitchboardOpus
import Testing

@Suite struct TelephonyAudioTests {
    @Test func muLawMatchesG711() {
        // Reference points of G.711 mu-law (ITU-T G.711 table 2a; as Twilio and Python's audioop code it).
        #expect(MuLaw.encode(Int16(0)) == 0xFF)
        #expect(MuLaw.encode(Int16(-1)) == 0x7F)
        #expect(MuLaw.encode(Int16.max) == 0x80)
        #expect(MuLaw.encode(Int16.min) == 0x00)
        #expect(MuLaw.decodeTable[0xFF] == 0 && MuLaw.decodeTable[0x80] == 32_124 && MuLaw.decodeTable[0x00] == -32_124)
        // Every byte survives decode then encode (0x7F is -0, which encodes as +0's byte).
        for byte in 0...255 where byte != 0x7F {
            #expect(MuLaw.encode(MuLaw.decodeTable[byte]) == UInt8(byte), "byte \(byte)")
        }
        // Points checked against another G.711 implementation (CPython's audioop).
        for (sample, byte, back) in [(450, 221, 460), (870, 208, 876), (899, 207, 924), (1000, 206, 988), (-5, 126, -8)] {
            #expect(MuLaw.encode(Int16(sample)) == UInt8(byte) && MuLaw.decodeTable[byte] == Int16(back), "sample \(sample)")
        }
        // Quantisation error stays within the segment's step.
        for sample in stride(from: -32_000, through: 32_000, by: 37) {
            let back = Int(MuLaw.decodeTable[Int(MuLaw.encode(Int16(sample)))])
            #expect(abs(back - sample) <= max(16, abs(sample) / 6), "sample \(sample) came back as \(back)")
        }
    }

    @Test func aToneSurvives48kTo8kAndBackThroughMuLaw() throws {
        let down = try Resampler(from: 48_000, to: 8_000)
        let up = try Resampler(from: 8_000, to: 48_000)
        var tone = ToneGenerator(frequency: 440, sampleRate: 48_000)
        var narrow: [Int16] = [], back: [Int16] = []
        for _ in 0..<50 {
            let eight = down.process(tone.next(960))
            narrow += eight
            back += up.process(MuLaw.decode(MuLaw.encode(eight)))
        }
        // 20 ms in, 20 ms out, frame after frame: no sample lost or made up.
        #expect(narrow.count == 50 * 160)
        #expect(back.count == 50 * 960)
        #expect(abs(SignalAnalysis.dominantFrequency(Array(narrow.suffix(4_000)), sampleRate: 8_000) - 440) <= 5)
        #expect(abs(SignalAnalysis.dominantFrequency(Array(back.suffix(24_000)), sampleRate: 48_000) - 440) <= 5)
        #expect(SignalAnalysis.rms(Array(back.suffix(24_000))) > 4_000)
    }

    @Test func frequenciesAboveTheNarrowBandAreFilteredNotFolded() throws {
        // 5 kHz is above 8 kHz's Nyquist limit: a real resampler removes it (a naive decimator would fold it to 3 kHz).
        let down = try Resampler(from: 48_000, to: 8_000)
        var tone = ToneGenerator(frequency: 5_000, sampleRate: 48_000, amplitude: 10_000)
        var narrow: [Int16] = []
        for _ in 0..<50 { narrow += down.process(tone.next(960)) }
        #expect(SignalAnalysis.rms(Array(narrow.suffix(4_000))) < 500)
    }

    @Test func badRatesAreRefused() {
        #expect(throws: SwitchboardError.self) { try Resampler(from: 0, to: 8_000) }
        #expect(throws: SwitchboardError.self) { try Resampler(from: 48_000, to: 8_000, quality: 11) }
    }
}
