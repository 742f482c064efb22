import Foundation
import SwitchboardCore
import SwitchboardOpus
import Synchronization

/// Where and how this gateway records calls (`--recordings-dir`; nil: it does not).
public struct RecordingOptions: Sendable, Equatable {
    public var directory: String
    /// Both channels together, at least 32 kbit/s (16 each).
    public var bitrate: Int = 32_000
    /// The longest recording; the call goes on past it, unrecorded (counted, and on its timeline).
    public var maxDuration: Duration = .seconds(6 * 3600)
    /// Recordings older than this are deleted.
    public var retention: Duration = .seconds(30 * 24 * 3600)

    public init(directory: String) {
        self.directory = directory
    }

    public static let minBitrate = 32_000

    /// A recording's codec: the caller and what the caller heard, each its own mono Opus stream so that neither
    /// is heard in the other's channel (one stereo stream leaks a loud channel into a silent one), tuned to
    /// keep any sound. Complexity 3: two mono encoders at 5 cost 0.55% of a core per recorded call, at 3 0.39%
    /// (the goal is 0.5%), the recording test's tones and levels the same (docs/benchmarks.md, "Recordings").
    public static func format(sampleRate: Int, bitrate: Int) -> OpusFormat {
        OpusFormat(sampleRate: sampleRate, channels: 2, separateChannels: true, application: .audio,
                   bitrate: max(bitrate, minBitrate), complexity: 3)
    }
}

/// One call's recording: what the caller said (left) and heard (right), as the leg's audio paths hand them
/// over (cheap, under the recording's input lock), encoded and written by `flush` (under the output lock) on the
/// gateway's recording thread, so neither the call's setup nor the playout clock waits on the encoder or the disk.
final class Recording: Sendable {
    let info: Mutex<RecordingInfo>
    let started: ContinuousClock.Instant
    private let input: Mutex<StereoAligner>

    private struct Files {
        var audio: FileHandle
        var peaks: FileHandle
    }
    private struct Output {
        var encoder: OpusEncoder
        var ogg: OggOpusWriter
        /// Opened by the first flush.
        var files: Files?
        var failed: String?
    }
    private let output: Mutex<Output?>
    private let root: URL
    private let paths: (audio: String, peaks: String, info: String)

    /// Makes the encoder; touches no file (the first `flush` opens them).
    init(callID: String, tenant: String, gateway: String, sampleRate: Int, startedAt started: ContinuousClock.Instant,
         startedAtMillis: Int64, options: RecordingOptions) throws {
        paths = try RecordingInfo.paths(tenant: tenant, callID: callID)
        root = URL(fileURLWithPath: options.directory)
        let format = RecordingOptions.format(sampleRate: sampleRate, bitrate: options.bitrate)
        let encoder = try OpusEncoder(format: format)
        let ogg = OggOpusWriter(serial: UInt32.random(in: 1...UInt32.max), for: encoder)
        let maxFrames = Int(options.maxDuration.components.seconds * 50)
        input = Mutex(StereoAligner(frameSamples: sampleRate / 50, maxFrames: max(1, maxFrames)))
        output = Mutex(Output(encoder: encoder, ogg: ogg))
        info = Mutex(RecordingInfo(callID: callID, tenant: tenant, gateway: gateway, startedAtMillis: startedAtMillis,
                                   sampleRate: sampleRate, bitrate: format.bitrate))
        self.started = started
    }

    private func slot(_ instant: ContinuousClock.Instant) -> Int { Int((instant - started).milliseconds / RecordingInfo.frameMillis) }

    /// A frame of the caller's audio, arrived at `at`.
    func caller(_ frame: [Int16], at: ContinuousClock.Instant) {
        input.withLock { $0.caller(frame, arrivalSlot: slot(at)) }
    }

    /// What the caller heard at the playout tick `at` (nil: nothing played).
    func agent(_ frame: [Int16]?, at: ContinuousClock.Instant) {
        input.withLock { $0.agent(frame, slot: slot(at)) }
    }

    struct Flushed {
        var bytes = 0
        /// The recording reached its longest and stopped (reported once).
        var capped = false
        var failure: String?
    }

    /// Opens the files (`<dir>/<tenant>/<call>.opus|.peaks|.json`) and writes the Ogg headers and the info.
    private func open(_ out: inout Output) throws -> (Files, bytes: Int) {
        try FileManager.default.createDirectory(at: root.appendingPathComponent(info.withLock(\.tenant)), withIntermediateDirectories: true)
        func create(_ path: String) throws -> FileHandle {
            let url = root.appendingPathComponent(path)
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw SwitchboardError(.internalError, "cannot create \(url.path)")
            }
            return try FileHandle(forWritingTo: url)
        }
        let files = Files(audio: try create(paths.audio), peaks: try create(paths.peaks))
        let (callID, tenant) = info.withLock { ($0.callID, $0.tenant) }
        let header = out.ogg.header(comments: ["SWITCHBOARD_CALL_ID=\(callID)", "SWITCHBOARD_TENANT=\(tenant)"])
        try files.audio.write(contentsOf: header)
        try writeInfo()
        return (files, header.count)
    }

    /// Encodes and writes what is ready (opening the files the first time); `final` writes the rest and closes
    /// them. Blocking file I/O: run it on the recording thread.
    func flush(final: Bool = false) -> Flushed {
        var flushed = Flushed()
        // The output's lock first and for the whole flush, so two flushes (the task's, the leg's last) write
        // their frames in the order they took them.
        let writing = output.withLock { output -> Bool in
            guard var out = output, out.failed == nil else { return false }
            defer { output = final || flushed.capped ? nil : out }
            let (frames, capped) = input.withLock { aligner -> ([[Int16]], Bool) in
                let wasCapped = aligner.capped
                let frames = final ? aligner.finish() : aligner.take()
                return (frames, aligner.capped && !wasCapped)
            }
            flushed.capped = capped
            do {
                let files: Files
                if let opened = out.files {
                    files = opened
                } else {
                    (files, flushed.bytes) = try open(&out)
                    out.files = files
                }
                var peaks: [UInt8] = []
                peaks.reserveCapacity(frames.count * 2)
                for frame in frames {
                    out.ogg.add(try out.encoder.encode(frame))
                    let (left, right) = StereoAligner.peaks(frame)
                    peaks += [left, right]
                }
                let pages = out.ogg.pages(last: final || capped)
                try files.audio.write(contentsOf: pages)
                try files.peaks.write(contentsOf: peaks)
                flushed.bytes += pages.count
                if final || capped {
                    try files.audio.close()
                    try files.peaks.close()
                }
            } catch {
                out.failed = "\(error)"
                flushed.failure = out.failed
                try? out.files?.audio.close()  // closing after a failed write: the failure is already reported
                try? out.files?.peaks.close()
            }
            let writtenMillis = out.ogg.writtenMillis
            info.withLock { info in
                info.durationMillis = writtenMillis
                info.bytes += Int64(flushed.bytes)
                info.capped = info.capped || capped
                info.complete = final || capped
            }
            return out.failed == nil
        }
        if writing && (final || flushed.capped) {
            do {
                try writeInfo()
            } catch {
                flushed.failure = flushed.failure ?? "\(error)"
            }
        }
        return flushed
    }

    private func writeInfo() throws {
        try Data(WireCodec.encode(info.withLock { $0 })).write(to: root.appendingPathComponent(paths.info), options: .atomic)
    }
}

extension RecordingOptions {
    /// Deletes recordings whose files were last written before `retention` ago, at `nowMillis` (Unix ms);
    /// returns how many calls'.
    public func sweep(nowMillis: Int64) -> Int {
        let root = URL(fileURLWithPath: directory)
        let fm = FileManager.default
        let cutoff = Date(timeIntervalSince1970: Double(nowMillis - retention.milliseconds) / 1000)
        var removed = 0
        for tenant in (try? fm.contentsOfDirectory(atPath: root.path)) ?? [] {
            let folder = root.appendingPathComponent(tenant)
            for name in (try? fm.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasSuffix(".json") {
                let url = folder.appendingPathComponent(name)
                guard let modified = (try? fm.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date, modified < cutoff else { continue }
                let call = String(name.dropLast(".json".count))
                for suffix in [".opus", ".peaks", ".json"] { try? fm.removeItem(at: folder.appendingPathComponent(call + suffix)) }
                removed += 1
            }
        }
        return removed
    }
}
