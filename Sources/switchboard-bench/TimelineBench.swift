import Foundation
import Logging
import SwitchboardCore
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis

/// What a call's timeline costs per minute of call: the gateway's observer on every frame both ways, the events
/// it and the other members note, and their writes to Redis, for 100 one-minute calls of steady turn-taking
/// (the caller speaks 2 s, 0.7 s of quiet, the agent answers for 3 s, 0.5 s of quiet), with the writers flushing
/// every 250 ms of call time as they do. Beside it, a raw Redis round trip in the same run.
struct TimelineBench {
    var url: String
    var calls = 100

    func run(into report: inout Report) async throws {
        var quiet = Logger(label: "bench.timeline")
        quiet.logLevel = .critical
        let redis = try RedisClient(configuration: try RedisConfiguration(url: url), logger: quiet)
        defer { redis.close() }
        let keys = try RedisKeys(prefix: "tlbench\(UInt16.random(in: 0...UInt16.max))")
        let writer = TimelineWriter(store: TimelineStore(redis: redis, keys: keys), metrics: MetricsRegistry(), logger: quiet)
        var tone = ToneGenerator(frequency: 300, sampleRate: 8_000)
        let loud = tone.next(160), silent = [Int16](repeating: 0, count: 160)
        // One 5.7 s turn, in 20 ms frames: (caller loud?, agent loud?).
        let turn = (0..<285).map { i in (i < 100, (135..<285).contains(i) && i < 135 + 150) }
        let clock = ContinuousClock()

        // A raw round trip first, for the ratio.
        for _ in 0..<200 { _ = try await redis.send(["SET", "\(keys.prefix):x", "v"]) }
        let raw = LatencySummary(try await timeEach(2_000) { _ = try await redis.send(["SET", "\(keys.prefix):x", "v"]) })!

        let scriptsBefore = try await evalCalls(redis)
        var observers = (0..<calls).map { _ in LegObserver(member: "gw-1") }
        var stats = JitterBuffer.Stats()
        var observing = Duration.zero, noting = Duration.zero, flushing = Duration.zero
        var events = 0
        let start: Int64 = 1_765_000_000_000
        for call in 0..<calls {
            writer.record("c\(call)", TimelineEvent(atMillis: start, source: .router, member: "router-1", type: "placed",
                                                    attributes: ["worker": "w1", "offers": "1", "route_ms": "2", "candidates": "w1:2.41,w2:2.38"]))
            writer.record("c\(call)", TimelineEvent(atMillis: start, source: .worker, member: "w1", type: "started"))
        }
        // 3,000 frames a call, in 250 ms steps (12.5 frames: 12 and 13 in turn), all calls side by side.
        var frame = 0
        while frame < 3_000 {
            let step = (frame / 12) % 2 == 0 ? 12 : 13
            for call in 0..<calls {
                let began = clock.now
                var noted: [TimelineEvent] = []
                for f in frame..<min(frame + step, 3_000) {
                    let (callerLoud, agentLoud) = turn[(f + call * 7) % turn.count]
                    let at = start + Int64(f * 20)
                    noted += observers[call].caller(rms: SignalAnalysis.rms(callerLoud ? loud : silent), atMillis: at)
                    stats.played += 1
                    noted += observers[call].agent(rms: SignalAnalysis.rms(agentLoud ? loud : silent), atMillis: at, stats: stats, jitterMillis: 1.5)
                }
                let observed = clock.now
                for event in noted { writer.record("c\(call)", event) }
                events += noted.count
                observing += observed - began
                noting += clock.now - observed
            }
            let began = clock.now
            await writer.flush()
            flushing += clock.now - began
            frame += step
        }
        for call in 0..<calls {
            writer.record("c\(call)", TimelineEvent(atMillis: start + 60_000, source: .worker, member: "w1", type: "ended", attributes: ["reason": "caller"]))
        }
        await writer.flush()
        let scripts = try await evalCalls(redis) - scriptsBefore
        let minutes = Double(calls)
        let perMinute = { (d: Duration) in d.microseconds / minutes }
        let perScript = flushing.microseconds / Double(max(1, scripts))
        report.add(Row(name: "Timeline: gateway events per call-minute", throughput: nil,
                       note: String(format: "%.1f events (speech, turns, playout every 5 s) + 3 from router and worker", Double(events) / minutes)))
        report.add(Row(name: "Timeline: gateway observer CPU per call-minute", throughput: nil,
                       note: String(format: "%.0f µs (%.4f%% of a core per call), both ways, 3,000 frames each", perMinute(observing),
                                    perMinute(observing) / 60e6 * 100)))
        report.add(Row(name: "Timeline: writes per call-minute", throughput: nil,
                       note: String(format: "%.1f Redis script runs; queueing %.0f µs + writing %.0f µs of CPU and waiting", Double(scripts) / minutes,
                                    perMinute(noting), perMinute(flushing))))
        report.add(Row(name: "Timeline: one script run (a call's 250 ms)", throughput: 1e6 / perScript, baseline: "raw Redis SET mean",
                       ratio: perScript / raw.mean.microseconds, note: String(format: "%.1f µs each, writes one after another", perScript)))
        report.add(Row(name: "Redis SET round trip (the floor)", summary: raw, throughput: 1e6 / raw.mean.microseconds))
        _ = try await redis.send(["DEL", "\(keys.prefix):x"])
        for call in 0..<calls { _ = try await redis.send(["DEL", keys.timeline("c\(call)")]) }
    }

    /// Script runs Redis has served (EVALSHA and EVAL).
    private func evalCalls(_ redis: RedisClient) async throws -> Int {
        let info = try await redis.send(["INFO", "commandstats"]).string ?? ""
        var total = 0
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_evalsha:") || line.hasPrefix("cmdstat_eval:") {
            if let calls = line.split(separator: ",").first?.split(separator: "=").last.flatMap({ Int($0) }) { total += calls }
        }
        return total
    }
}
