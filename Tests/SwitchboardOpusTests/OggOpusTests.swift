import Foundation
import SwitchboardCore
import SwitchboardOpus
import Testing

@Suite struct OggOpusTests {
    /// Two seconds of two channels, a tone in each (the right one sounding in the frames `rightSounds` says),
    /// framed as Ogg Opus page by page.
    func stereoFile(left: Double, right: Double, sampleRate: Int, bitrate: Int, separate: Bool = true,
                    rightSounds: (Int) -> Bool = { _ in true }) throws -> (bytes: [UInt8], frames: Int) {
        let encoder = try OpusEncoder(format: OpusFormat(sampleRate: sampleRate, channels: 2, separateChannels: separate,
                                                         application: .audio, bitrate: bitrate))
        var ogg = OggOpusWriter(serial: 7, for: encoder)
        var bytes = ogg.header(comments: ["SWITCHBOARD_CALL_ID=c1"])
        var l = ToneGenerator(frequency: left, sampleRate: sampleRate), r = ToneGenerator(frequency: right, sampleRate: sampleRate)
        let frames = 100
        for i in 0..<frames {
            let a = l.next(sampleRate / 50)
            let b = rightSounds(i) ? r.next(sampleRate / 50) : [Int16](repeating: 0, count: sampleRate / 50)
            var stereo = [Int16](repeating: 0, count: a.count * 2)
            for j in 0..<a.count { (stereo[2 * j], stereo[2 * j + 1]) = (a[j], b[j]) }
            ogg.add(try encoder.encode(stereo))
            if i % 13 == 0 { bytes += ogg.pages() }  // as a recording flushes: pages as it goes
        }
        bytes += ogg.pages(last: true)
        return (bytes, frames)
    }

    @Test(arguments: [(8_000, true), (16_000, true), (8_000, false), (16_000, false)])
    func aTwoChannelFileReadsBackWithEachTonesOnItsOwnChannel(sampleRate: Int, separate: Bool) throws {
        let (bytes, frames) = try stereoFile(left: 440, right: 1_000, sampleRate: sampleRate, bitrate: 32_000, separate: separate)
        let file = try OggOpusFile(bytes)
        #expect(file.channels == 2 && file.separateChannels == separate && file.inputSampleRate == sampleRate && file.preSkip > 0)
        #expect(file.packets.count == frames && file.granule == Int64(frames) * 960 && file.endsWithEndOfStream)
        let decoder = try OpusDecoder(sampleRate: sampleRate, channels: 2, separateChannels: separate)
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

    /// A recording's two speakers coded apart: the caller's loud voice is not heard in the other channel while
    /// the agent is silent. (One stereo stream at the same bitrate let it through: in a loaded run of the
    /// recording's cluster test, the caller's tone in the agent's channel only 14 dB under the agent's own.)
    @Test func channelsCodedApartDoNotLeakIntoEachOthersSilence() throws {
        // The right channel sounds 5 frames in 10 (the agent's talk with gaps), the left throughout.
        let (bytes, _) = try stereoFile(left: 1_000, right: 660, sampleRate: 8_000, bitrate: 32_000) { $0 % 10 < 5 }
        let file = try OggOpusFile(bytes)
        let head = Array(bytes[28..<(28 + 23)])  // the first page's one packet, after its 27-byte header and one lacing value
        #expect(Array(head.suffix(5)) == [1, 2, 0, 0, 1], "family 1: two streams, none coupled, channel i in stream i")
        let frames = try file.channelFrames(sampleRate: 8_000)
        // Frames well inside the right's silences (two frames after it stops: the codec's tail).
        let silent = Array(frames[1].indices.filter { $0 > 10 && $0 % 10 >= 7 })
        let right = silent.flatMap { frames[1][$0] }, left = silent.flatMap { frames[0][$0] }
        let leaked = SignalAnalysis.power(right, at: 1_000, sampleRate: 8_000), spoken = SignalAnalysis.power(left, at: 1_000, sampleRate: 8_000)
        #expect(spoken > 0 && leaked * 1_000_000 < spoken, "the left's tone in the right's silence: \(leaked) of \(spoken)")
    }

    @Test func aMappingOtherThanOursIsRefused() throws {
        let (bytes, _) = try stereoFile(left: 300, right: 600, sampleRate: 8_000, bitrate: 32_000)
        // The head's mapping table, channel 1 in stream 0, as another muxer might write: not what we read back.
        var other = Array(bytes.prefix(28 + 23))
        other[28 + 22] = 0
        var page = other
        page.replaceSubrange(22..<26, with: [0, 0, 0, 0])
        other.replaceSubrange(22..<26, with: withUnsafeBytes(of: OggCRC.checksum(page).littleEndian) { Array($0) })
        let error = #expect(throws: SwitchboardError.self) { try OggOpusFile(other + bytes.dropFirst(28 + 23)) }
        #expect(error?.message.contains("mapping") == true, "\(String(describing: error))")
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
