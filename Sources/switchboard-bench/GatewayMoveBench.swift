import Foundation
import Hummingbird
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardWorker
import Synchronization

/// Live migration as a phone caller hears it: Twilio media streams into a gateway in this process, tone calls
/// behind it moved one by one between two workers, each caller's ear (the mu-law frames that come back) timing
/// the longest silence around each move. The same ear, in windows of the same length with no move, is the
/// control: what the gateway's playout alone gives.
struct GatewayMoveBench {
    var calls = 10
    var moves = 100

    /// Each caller's frames that carry sound, by arrival.
    final class Ears: Sendable {
        let loud: Mutex<[[ContinuousClock.Instant]]>
        init(_ count: Int) { loud = Mutex(Array(repeating: [], count: count)) }

        func heard(_ caller: Int, _ at: ContinuousClock.Instant, _ samples: [Int16]) {
            guard SignalAnalysis.rms(samples) > 300 else { return }
            loud.withLock { $0[caller].append(at) }
        }

        /// The longest time between two frames with sound in `from...to` (the whole window if there were none).
        func longestGap(_ caller: Int, from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> Duration {
            let window = loud.withLock { $0[caller].filter { $0 >= from && $0 <= to } }
            guard let first = window.first, let last = window.last else { return to - from }
            return ([first - from, to - last] + zip(window, window.dropFirst()).map { $1 - $0 }).max()!
        }
    }

    func run(_ fleet: BenchFleet, into report: inout Report) async throws {
        _ = try await fleet.addWorker("gwmove-a", capacity: 100, handler: ToneHandler())
        try await fleet.waitForWorkers(["gwmove-a"])
        let config = GatewayConfiguration(id: "bench-gw", subjects: fleet.subjects, keys: fleet.keys,
                                          tokenSecret: (0..<32).map { _ in UInt8.random(in: 0...255) })
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [fleet.natsURL], name: "bench-gw"), logger: fleet.logger)
        defer { nats.close() }
        let gateway = Gateway(configuration: config, nats: nats, logger: fleet.logger)
        let (ports, port) = AsyncStream.makeStream(of: Int.self)
        let http = GatewayHTTP.application(for: gateway, host: "127.0.0.1", port: 0) { port.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: http), .init(service: gateway)], logger: fleet.logger))
        let serving = Task { try await group.run() }
        defer { serving.cancel() }
        var iterator = ports.makeAsyncIterator()
        guard let gatewayPort = await iterator.next() else { throw SwitchboardError(.unavailable, "the gateway did not start") }

        // The callers, one at a time, so each caller's call id is known.
        let ears = Ears(calls)
        var callIDs: [String] = []
        var callers: [Task<Void, any Error>] = []
        for i in 0..<calls {
            let path = "/twilio/stream/" + gateway.mintStreamToken(.twilio, tenant: "bench", ttl: .seconds(60)).token
            callers.append(Task {
                try await AgentProbe.twilioCall(AgentAddress(host: "127.0.0.1", port: gatewayPort, path: path), seconds: 600) {
                    ears.heard(i, $0, $1)
                }
            })
            let deadline = ContinuousClock.now + .seconds(10)
            while gateway.liveCalls.count == i {
                guard ContinuousClock.now < deadline else { throw SwitchboardError(.timeout, "caller \(i) not placed") }
                try await Task.sleep(for: .milliseconds(10))
            }
            guard let callID = Set(gateway.liveCalls).subtracting(callIDs).first else { throw SwitchboardError(.internalError, "caller \(i) has no call") }
            callIDs.append(callID)
        }
        defer { for caller in callers { caller.cancel() } }
        _ = try await fleet.addWorker("gwmove-b", capacity: 100, handler: ToneHandler())
        try await fleet.waitForWorkers(["gwmove-a", "gwmove-b"])
        try await Task.sleep(for: .seconds(2))

        // Windows as long as a move's, before any move: the control.
        let window = Duration.milliseconds(500)
        let quiet = ContinuousClock.now
        let control = (0..<calls).flatMap { caller in
            (1...3).map { k in ears.longestGap(caller, from: quiet - window * k, to: quiet - window * (k - 1)) }
        }
        var spans: [(caller: Int, from: ContinuousClock.Instant, to: ContinuousClock.Instant)] = []
        while spans.count < moves {
            for (caller, callID) in callIDs.enumerated() where spans.count < moves {
                let start = ContinuousClock.now
                _ = try await fleet.router.migrate(callID, requestedBy: "bench")
                // The caller hears the move later, by the jitter buffer's hold: the window runs on past it.
                spans.append((caller, start - .milliseconds(100), start + window - .milliseconds(100)))
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try await Task.sleep(for: window)
        let gaps = spans.map { ears.longestGap($0.caller, from: $0.from, to: max($0.to, $0.from + window)) }
        let gap = LatencySummary(gaps)!, steady = LatencySummary(control)!
        report.add(Row(name: "migration through a gateway: longest silence a Twilio caller hears", summary: gap,
                       note: String(format: "%d moves of %d live tone calls; with no move, in windows as long: p50 %.1f ms, p99 %.1f ms; goal p99 <= 40 ms",
                                    moves, calls, steady.p50.microseconds / 1000, steady.p99.microseconds / 1000)))
        for caller in callers { caller.cancel() }
        await fleet.removeAll()
    }
}
