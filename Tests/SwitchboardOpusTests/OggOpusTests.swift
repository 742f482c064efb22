import Foundation
import SwitchboardCore
import SwitchboardOpus
import Testing

@Suite struct OggOpusTests {
    /// Two seconds of stereo, a tone per channel, framed as Ogg Opus and read back page by page.
    func stereoFile(left: Double, right: Double, sampleRate: Int, bitrate: Int) throws -> (bytes: [UInt8], frames: Int) {
        let encoder = try OpusEncoder(format: OpusFormat(sampleRate: sampleRate, channels: 2, application: .audio, bitrate: bitrate))
        var ogg = OggOpusWriter(serial: 7, channels: 2, inputSampleRate: sampleRate, preSkip: encoder.lookahead * 48_000 / sampleRate)
        var bytes = ogg.header(comments: ["SWITCHBOARD_CALL_ID=c1"])
        var l = ToneGenerator(frequency: left, sampleRate: sampleRate), r = ToneGenerator(frequency: right, sampleRate: sampleRate)
        let frames = 100
        for i in 0..<frames {
            let a = l.next(sampleRate / 50), b = r.next(sampleRate / 50)
            var stereo = [Int16](repeating: 0, count: a.count * 2)
            for j in 0..<a.count { (stereo[2 * j], stereo[2 * j + 1]) = (a[j], b[j]) }
            ogg.add(try encoder.encode(stereo))
            if i % 13 == 0 { bytes += ogg.pages() }  // as a recording flushes: pages as it goes
        }
        bytes += ogg.pages(last: true)
        return (bytes, frames)
    }

    @Test(arguments: [8_000, 16_000])
    func aStereoFileReadsBackWithEachTonesOnItsOwnChannel(sampleRate: Int) throws {
        let (bytes, frames) = try stereoFile(left: 440, right: 1_000, sampleRate: sampleRate, bitrate: 32_000)
        let file = try OggOpusFile(bytes)
        #expect(file.channels == 2 && file.inputSampleRate == sampleRate && file.preSkip > 0)
        #expect(file.packets.count == frames && file.granule == Int64(frames) * 960 && file.endsWithEndOfStream)
        let decoder = try OpusDecoder(sampleRate: sampleRate, channels: 2)
        var left: [Int16] = [], right: [Int16] = []
        for (i, packet) in file.packets.enumerated() {
            let pcm = try decoder.decode(packet)
            guard i >= 10 else { continue }
            for j in stride(from: 0, to: pcm.count, by: 2) {
                left.append(pcm[j])
                right.append(pcm[j + 1])
            }
        }
        // Each channel carries its own tone, the other's a thousand times weaker at least (-30 dB).
        let leftOwn = SignalAnalysis.power(left, at: 440, sampleRate: sampleRate), leftOther = SignalAnalysis.power(left, at: 1_000, sampleRate: sampleRate)
        let rightOwn = SignalAnalysis.power(right, at: 1_000, sampleRate: sampleRate), rightOther = SignalAnalysis.power(right, at: 440, sampleRate: sampleRate)
        #expect(leftOwn > 1_000 * leftOther, "left: \(leftOwn) vs \(leftOther)")
        #expect(rightOwn > 1_000 * rightOther, "right: \(rightOwn) vs \(rightOther)")
    }

    @Test func aCorruptOrCutFileIsAnErrorNotACrash() throws {
        let (bytes, _) = try stereoFile(left: 300, right: 600, sampleRate: 8_000, bitrate: 32_000)
        var flipped = bytes
        flipped[bytes.count / 2] ^= 0x40
        #expect(throws: SwitchboardError.self) { try OggOpusFile(flipped) }  // a checksum no longer matches
        #expect(throws: SwitchboardError.self) { try OggOpusFile(Array(bytes.prefix(bytes.count - 3))) }
        #expect(throws: SwitchboardError.self) { try OggOpusFile(Array("not an ogg file at all, no".utf8)) }
        #expect(throws: SwitchboardError.self) { try OggOpusFile([]) }
    }

    @Test func aStreamWithNoPacketStillEnds() throws {
        var ogg = OggOpusWriter(serial: 1, channels: 2, inputSampleRate: 8_000, preSkip: 312)
        let bytes = ogg.header() + ogg.pages() + ogg.pages(last: true)
        let file = try OggOpusFile(bytes)
        #expect(file.packets.isEmpty && file.endsWithEndOfStream && file.granule == 0)
        #expect(ogg.pages(last: true).isEmpty, "nothing after the end")
    }

    @Test func aChannelSummarySaysHowMuchIsLoudAndItsLongestGapInsideTheTalk() {
        let loud = [Int16](repeating: 3_000, count: 160), quiet = [Int16](repeating: 0, count: 160)
        // Quiet lead-in (not a gap), talk, a 5-frame gap, talk, a 2-frame gap, talk, quiet tail (not a gap).
        let frames = Array(repeating: quiet, count: 4) + [loud, loud] + Array(repeating: quiet, count: 5) + [loud]
            + [quiet, quiet] + [loud] + Array(repeating: quiet, count: 9)
        let s = ChannelSummary(frames)
        #expect(s.frames == 24 && s.loudFrames == 4 && s.longestGapMillis == 100 && s.longestGapAtMillis == 120)
        #expect(ChannelSummary([quiet, quiet]).longestGapMillis == 0)
    }

    /// The checksum of RFC 3533 (CRC-32/MPEG-2 without the final inversion), on a known value.
    @Test func theChecksumIsOggs() {
        #expect(OggCRC.checksum(Array("123456789".utf8)) == 0x89A1_897F)
    }
}
