import SwitchboardCore
import SwitchboardOpus

/// Opus encode and decode time per 20 ms frame at 48 kHz mono, 24 kbps, complexity 5 (the worker's settings).
struct OpusBenchRun {
    var frames: Int

    func run(into report: inout Report) throws {
        let encoder = try OpusEncoder(format: OpusFormat())
        let decoder = try OpusDecoder()
        var tone = ToneGenerator()
        let pcm = (0..<frames).map { _ in tone.next(960) }
        let clock = ContinuousClock()
        var packets: [[UInt8]] = []
        packets.reserveCapacity(frames)
        var encodeTimes: [Duration] = []
        var decodeTimes: [Duration] = []
        for frame in pcm {
            let start = clock.now
            packets.append(try encoder.encode(frame))
            encodeTimes.append(clock.now - start)
        }
        for packet in packets {
            let start = clock.now
            _ = try decoder.decode(packet)
            decodeTimes.append(clock.now - start)
        }
        let e = LatencySummary(encodeTimes)!
        let d = LatencySummary(decodeTimes)!
        report.add(Row(name: "Opus encode, 20 ms frame (48 kHz mono)", summary: e, throughput: 1e6 / e.mean.microseconds,
                       note: String(format: "%.2f%% of a core per call direction", e.mean.microseconds / 20_000 * 100)))
        report.add(Row(name: "Opus decode, 20 ms frame", summary: d, throughput: 1e6 / d.mean.microseconds))
    }
}
