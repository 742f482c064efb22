import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardOpus
import Synchronization

/// Counters of the demo calls, shared by the callers and the table.
final class DemoStats: Sendable {
    struct State {
        var placed = 0
        var failed: [String: Int] = [:]
        var ended = 0
        var packetsSent = 0
        var packetsEchoed = 0
        var echoToneOK = 0
        /// Calls the demo's stop cut short, not judged by their echo.
        var cutShort = 0
        var latencies: [Duration] = []
    }

    private let state = Mutex(State())

    func placed(_ latency: Duration) {
        state.withLock {
            $0.placed += 1
            $0.latencies.append(latency)
            if $0.latencies.count > 2000 { $0.latencies.removeFirst(1000) }
        }
    }

    func failed(_ code: String) { state.withLock { $0.failed[code, default: 0] += 1 } }

    /// `toneOK` nil: the call was cut short by the demo's stop, its echo not judged.
    func ended(sent: Int, echoed: Int, toneOK: Bool?) {
        state.withLock {
            $0.ended += 1
            $0.packetsSent += sent
            $0.packetsEchoed += echoed
            switch toneOK {
            case true?: $0.echoToneOK += 1
            case nil: $0.cutShort += 1
            case false?: break
            }
        }
    }

    var snapshot: State { state.withLock { $0 } }

    func summary() -> String {
        let s = snapshot
        let failures = s.failed.isEmpty ? "none" : s.failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let cut = s.cutShort > 0 ? " (\(s.cutShort) cut short by the stop)" : ""
        return "demo calls: \(s.placed) placed, \(s.ended) ended, \(s.echoToneOK) of the \(s.ended - s.cutShort) played through "
            + "echoed the 440 Hz tone back\(cut); packets \(s.packetsSent) sent, \(s.packetsEchoed) echoed; failures: \(failures)"
    }
}

/// Callers placing one call after another: half through NATS, half through HTTP; each streams a 440 Hz
/// tone as Opus for a few seconds, checks that the echo decodes to the same tone, and hangs up.
struct DemoCallers {
    let cluster: DevCluster
    let stats: DemoStats
    let callSeconds: Double

    func run(callers: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<max(1, callers) {
                group.addTask {
                    while !Task.isCancelled {
                        await oneCall(caller: i)
                    }
                }
            }
        }
    }

    private func oneCall(caller: Int) async {
        let nats = cluster.connection
        let router = cluster.routerURLs[caller % cluster.routerURLs.count]
        let request = RouteRequest(tenant: "demo", region: nil, metadata: ["caller": "demo-\(caller)"])
        let start = ContinuousClock.now
        let placement: Placement
        do {
            if caller % 2 == 0 {
                let reply = try RouteReply.decode(try await nats.request(Subjects.default.route, payload: request.encoded(),
                                                                         headers: ["Authorization": "Bearer \(cluster.demoKey)"],
                                                                         timeout: .seconds(3)).payload)
                guard let call = reply.call else {
                    stats.failed(reply.error?.code ?? "error")
                    try? await Task.sleep(for: .milliseconds(500))
                    return
                }
                placement = call
            } else {
                let data = try await APIClient(base: router, key: cluster.demoKey).post("/v1/calls", json: request)
                placement = try JSONDecoder().decode(Placement.self, from: data)
            }
        } catch {
            // A request cut short because the operator stopped the demo is not a failure of the cluster.
            if Task.isCancelled { return }
            stats.failed((error as? SwitchboardError)?.code.rawValue ?? "error")
            try? await Task.sleep(for: .milliseconds(500))
            return
        }
        stats.placed(ContinuousClock.now - start)

        var sent = 0
        let echoed = Mutex<[[UInt8]]>([])
        do {
            // The call's own credential, when the bus is closed: this call's audio and nothing else.
            let media = try await nats.connection(for: placement, name: "dev-call")
            defer { if media !== nats { media.close() } }
            let out = try media.subscribe(to: placement.media.out)
            let leg = try CallLeg(media, placement: placement, subjects: .default)  // follows the call if it moves
            let receiver = Task { for await m in out { echoed.withLock { $0.append(m.payload) } } }
            let encoder = try OpusEncoder()
            var tone = ToneGenerator(frequency: 440)
            let clock = ContinuousClock()
            var next = clock.now
            let frames = Int(callSeconds * 50)
            while sent < frames && !Task.isCancelled {
                let packet = MediaPacket(sequence: UInt32(sent), timestamp: UInt32(sent * 960), payload: try encoder.encode(tone.next(960)))
                try leg.send(packet.encoded())
                sent += 1
                next += .milliseconds(20)
                try? await Task.sleep(until: next, clock: clock)
            }
            try? await Task.sleep(for: .milliseconds(100))  // the last echoes
            receiver.cancel()
            out.unsubscribe()
        } catch {
            stats.failed((error as? SwitchboardError)?.code.rawValue ?? "media_error")
        }
        let cutShort = Task.isCancelled  // stopped while it played, or before its last echoes came
        await hangUp(placement.callID, router: router)
        let packets = echoed.withLock { $0 }
        stats.ended(sent: sent, echoed: packets.count, toneOK: cutShort ? nil : Self.isTone(packets, frequency: 440))
    }

    /// Ends the call as a caller should: asked again while the answer is an error (a router just back on the bus
    /// answers 503 until it can reach the call's worker; NATS down, the request fails), for up to 10 s. A call
    /// left up would hold its slot until the worker's media timeout, a minute with the demo's fleet full.
    private func hangUp(_ callID: String, router: String) async {
        for _ in 0..<20 {
            if (try? await APIClient(base: router, key: cluster.demoKey).delete("/v1/calls/\(callID)")) != nil || Task.isCancelled { return }
            try? await Task.sleep(for: .milliseconds(500))
        }
        stats.failed("end_failed")
    }

    /// Decodes the echoed packets and checks the sound is the tone that was sent.
    static func isTone(_ packets: [[UInt8]], frequency: Double) -> Bool {
        guard packets.count > 10, let decoder = try? OpusDecoder() else { return false }
        var samples: [Int16] = []
        for bytes in packets.dropFirst(5) {
            if let packet = try? MediaPacket.decode(bytes), let pcm = try? decoder.decode(packet.payload) { samples += pcm }
        }
        guard samples.count >= 4800 else { return false }
        let measured = SignalAnalysis.dominantFrequency(Array(samples.prefix(24_000)), sampleRate: 48_000, from: 300, to: 600, step: 1)
        return abs(measured - frequency) <= 4
    }
}

/// Prints the cluster's state: workers, calls, placements per second, placement latency. On a terminal it is
/// redrawn in place every second; into a file or a pipe, a block is written every 5 s.
struct LiveTable {
    let cluster: DevCluster
    let stats: DemoStats

    func run() async {
        let terminal = isatty(STDOUT_FILENO) == 1
        var drawn = 0  // lines of the table on the screen, redrawn over
        var lastPlaced = 0
        var lastTime = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(terminal ? 1 : 5))
            if Task.isCancelled { return }
            let s = stats.snapshot
            let now = ContinuousClock.now
            let rate = Double(s.placed - lastPlaced) / ((now - lastTime).microseconds / 1e6)
            lastPlaced = s.placed
            lastTime = now
            var lines: [String] = []
            if let data = try? await APIClient(base: cluster.routerURLs[0], key: cluster.adminKey).get("/v1/workers"),
               let view = try? JSONDecoder().decode(WorkersView.self, from: data) {
                var rows = [["WORKER", "ZONE", "STATE", "CALLS", "CPU"]]
                for w in view.workers {
                    rows.append([w.id, w.zone, w.state, "\(w.activeCalls)/\(w.capacity)", String(format: "%.0f%%", w.cpu * 100)])
                }
                lines.append(formatTable(rows))
            }
            let latency = LatencySummary(Array(s.latencies.suffix(500)))
            let p50 = latency.map { String(format: "%.1f ms", $0.p50.microseconds / 1000) } ?? "-"
            let p99 = latency.map { String(format: "%.1f ms", $0.p99.microseconds / 1000) } ?? "-"
            let failures = s.failed.values.reduce(0, +)
            lines.append(String(format: "calls placed %d (%.1f/s), ended %d, echo ok %d | placement p50 %@ p99 %@ | packets sent %d echoed %d | failures %d",
                                s.placed, rate, s.ended, s.echoToneOK, p50, p99, s.packetsSent, s.packetsEchoed, failures))
            let table = lines.joined(separator: "\n")
            if terminal {
                // Back to the table's first line, clear from there down, draw it again.
                say((drawn > 0 ? "\u{1B}[\(drawn)F\u{1B}[J" : "\n") + table)
                drawn = table.split(separator: "\n", omittingEmptySubsequences: false).count
            } else {
                say("\n" + table)
            }
        }
    }
}
