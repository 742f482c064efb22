import Foundation
import SwitchboardCore
import SwitchboardOpus
import SwitchboardGateway

/// The gateway's work per 20 ms frame of a Twilio leg, both ways, with the raw Opus cost in the same run:
/// in, a `media` message decoded (JSON, base64), mu-law to PCM, Opus-encoded at 8 kHz and packed; out, a packet
/// unpacked, through the jitter buffer, Opus-decoded at 8 kHz, mu-law-encoded and written as a `media` message.
/// The same steps, in the same order, as `Gateway` runs them (its NATS and WebSocket I/O aside), the timeline's
/// observer included (each frame's loudness, speech and turn tracking, playout counts); and a recording of the
/// leg (both channels, Ogg Opus to a file), as the gateway's recording task writes it.
struct GatewayBenchRun {
    var frames: Int

    func run(into report: inout Report) throws {
        var tone = ToneGenerator(frequency: 440, sampleRate: 8_000)
        let sid = JSONText.quoted("MZ00000000000000000000000000000000")
        let messages = (0..<frames).map { i in
            Array(MediaStream.media(quotedStreamSid: sid, sequence: i, chunk: i, timestampMillis: Int64(i * 20),
                                    payload: MuLaw.encode(tone.next(160))).utf8)
        }
        let clock = ContinuousClock()

        // Caller -> call.
        let encoder = try OpusEncoder(sampleRate: 8_000)
        var observer = LegObserver(member: "gw-bench")
        var events = 0
        var packets: [[UInt8]] = []
        packets.reserveCapacity(frames)
        var inTimes: [Duration] = []
        for (i, message) in messages.enumerated() {
            let start = clock.now
            guard case .media(_, let payload) = try TwilioStream.decode(message) else { throw SwitchboardError(.badMessage, "not media") }
            let pcm = MuLaw.decode(payload)
            events += observer.caller(rms: SignalAnalysis.rms(pcm), atMillis: Int64(i * 20)).count
            let packet = MediaPacket(sequence: UInt32(i), timestamp: UInt32(i * 960), payload: try encoder.encode(pcm))
            packets.append(packet.encoded())
            inTimes.append(clock.now - start)
        }

        // Call -> caller.
        let decoder = try OpusDecoder(sampleRate: 8_000)
        var jitter = JitterBuffer()
        var outTimes: [Duration] = []
        var written = 0
        for (i, bytes) in packets.enumerated() {
            let start = clock.now
            _ = jitter.insert(try MediaPacket.decode(bytes), arrivalMillis: Double(i * 20))
            if case .packet(let packet) = jitter.tick() {
                let samples = try decoder.decode(packet.payload)
                events += observer.agent(rms: SignalAnalysis.rms(samples), atMillis: Int64(i * 20), stats: jitter.stats,
                                         jitterMillis: jitter.jitterMillis).count
                written += TwilioStream.media(quotedStreamSid: sid, payload: MuLaw.encode(samples)).utf8.count
            }
            outTimes.append(clock.now - start)
        }
        precondition(written > 0 && events > 0)

        // The raw codec in the same run: Opus at 8 kHz, encode then decode, nothing else.
        var rawTimes: [Duration] = []
        let rawEncoder = try OpusEncoder(sampleRate: 8_000)
        let rawDecoder = try OpusDecoder(sampleRate: 8_000)
        var rawTone = ToneGenerator(frequency: 440, sampleRate: 8_000)
        let pcm = (0..<frames).map { _ in rawTone.next(160) }
        for frame in pcm {
            let start = clock.now
            _ = try rawDecoder.decode(try rawEncoder.encode(frame))
            rawTimes.append(clock.now - start)
        }

        // A recording of the leg, the same steps as the gateway's: each frame of both channels handed to the
        // aligner (on the audio paths), then every 250 ms (12.5 frames) what is ready encoded as two mono Opus
        // streams at 8 kHz and 32 kbit/s in all, framed as Ogg, its peaks taken, and both written to files.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-bench-recording-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let audioURL = directory.appendingPathComponent("c.opus"), peaksURL = directory.appendingPathComponent("c.peaks")
        _ = FileManager.default.createFile(atPath: audioURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: peaksURL.path, contents: nil)
        let audioFile = try FileHandle(forWritingTo: audioURL), peaksFile = try FileHandle(forWritingTo: peaksURL)
        defer { try? audioFile.close(); try? peaksFile.close() }
        let stereo = try OpusEncoder(format: RecordingOptions.format(sampleRate: 8_000, bitrate: 32_000))
        var ogg = OggOpusWriter(serial: 1, for: stereo)
        try audioFile.write(contentsOf: ogg.header())
        var aligner = StereoAligner(frameSamples: 160, maxFrames: frames + 1)
        var recordTimes: [Duration] = []
        var recordedBytes = 0
        for (i, frame) in pcm.enumerated() {
            let start = clock.now
            aligner.caller(frame, arrivalSlot: i)
            aligner.agent(frame, slot: i)
            if i % 25 == 12 || i % 25 == 24 || i == frames - 1 {
                var peaks: [UInt8] = []
                for stereoFrame in i == frames - 1 ? aligner.finish() : aligner.take() {
                    ogg.add(try stereo.encode(stereoFrame))
                    let (l, r) = StereoAligner.peaks(stereoFrame)
                    peaks += [l, r]
                }
                let pages = ogg.pages(last: i == frames - 1)
                try audioFile.write(contentsOf: pages)
                try peaksFile.write(contentsOf: peaks)
                recordedBytes += pages.count
            }
            recordTimes.append(clock.now - start)
        }

        let i = LatencySummary(inTimes)!, o = LatencySummary(outTimes)!, raw = LatencySummary(rawTimes)!
        let perLeg = i.mean + o.mean
        report.add(Row(name: "Gateway, Twilio leg in: media JSON -> Opus packet", summary: i, throughput: 1e6 / i.mean.microseconds))
        report.add(Row(name: "Gateway, Twilio leg out: packet -> media JSON (jitter buffer)", summary: o, throughput: 1e6 / o.mean.microseconds))
        report.add(Row(name: "Raw Opus 8 kHz encode + decode (the floor)", summary: raw, throughput: 1e6 / raw.mean.microseconds,
                       note: String(format: "gateway both ways = %.2fx this; %.0f legs per core (%.2f%% of a core per leg)",
                                    perLeg.microseconds / raw.mean.microseconds, 20_000 / perLeg.microseconds,
                                    perLeg.microseconds / 20_000 * 100)))
        let record = LatencySummary(recordTimes)!
        report.add(Row(name: "Gateway recording, per 20 ms frame (align, 2x mono Opus 32 kbit/s, Ogg, peaks, files)", summary: record,
                       throughput: 1e6 / record.mean.microseconds,
                       note: String(format: "%.2fx the raw codec; %.3f%% of a core per recorded call; %.1f kB a minute",
                                    record.mean.microseconds / raw.mean.microseconds, record.mean.microseconds / 20_000 * 100,
                                    Double(recordedBytes) / Double(frames) * 3_000 / 1_000)))
    }
}
