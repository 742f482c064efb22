import CBenchBaseline
import Logging
import SwitchboardCore
import SwitchboardNATS

/// NATS request/reply through our client, beside the same loop written in plain C over nats.c.
struct NATSBench {
    var url: String
    var count: Int
    var payloadSize = 64
    var concurrency = 16

    func run(into report: inout Report) async throws {
        var quiet = Logger(label: "bench.nats")
        quiet.logLevel = .warning
        let responder = try await NATSConnection.connect(NATSConfiguration(servers: [url], name: "bench-responder"), logger: quiet)
        let requester = try await NATSConnection.connect(NATSConfiguration(servers: [url], name: "bench-requester"), logger: quiet)
        defer { responder.close(); requester.close() }
        let subject = "bench.\(UInt32.random(in: 0...UInt32.max)).echo"
        let sub = try responder.subscribe(to: subject)
        let echo = Task {
            for await message in sub { try? responder.reply(to: message, payload: message.payload) }
        }
        defer { echo.cancel() }
        try await responder.flush()
        let payload = [UInt8](repeating: 7, count: payloadSize)

        // Warm both paths, then alternate C and Swift rounds so drift on the machine hits both alike.
        _ = try baseline(subject: "\(subject).c", count: 500)
        for _ in 0..<500 { _ = try await requester.request(subject, payload: payload) }
        var cSamples: [Duration] = []
        var swiftSamples: [Duration] = []
        let rounds = 4
        for _ in 0..<rounds {
            cSamples += try baseline(subject: "\(subject).c", count: count / rounds)
            swiftSamples += try await timeEach(count / rounds) { _ = try await requester.request(subject, payload: payload) }
        }
        let c = LatencySummary(cSamples)!
        let s = LatencySummary(swiftSamples)!
        report.add(Row(name: "NATS request/reply, plain C loop (baseline)", summary: c,
                       throughput: 1e6 / c.mean.microseconds))
        report.add(Row(name: "NATS request/reply, Switchboard client", summary: s,
                       throughput: 1e6 / s.mean.microseconds, baseline: "C p50",
                       ratio: s.p50.microseconds / c.p50.microseconds))

        // Throughput with concurrent requesters on one connection.
        let perTask = count
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { _ = try await requester.request(subject, payload: payload) } }
            }
            try await group.waitForAll()
        }
        let elapsed = clock.now - start
        let total = Double(concurrency * perTask)
        report.add(Row(name: "NATS request/reply, \(concurrency) concurrent requesters",
                       throughput: total / (elapsed.microseconds / 1e6), baseline: "sequential C throughput",
                       ratio: (total / (elapsed.microseconds / 1e6)) / (1e6 / c.mean.microseconds)))
    }

    private func baseline(subject: String, count: Int) throws -> [Duration] {
        var out = [Int64](repeating: 0, count: count)
        var error = [CChar](repeating: 0, count: 256)
        let rc = sb_baseline_nats_request(url, subject, Int32(count), Int32(payloadSize), &out, &error, Int32(error.count))
        guard rc == 0 else { throw SwitchboardError(.internalError, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        return nanos(out)
    }
}
