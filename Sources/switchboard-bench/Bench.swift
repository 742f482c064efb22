import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardLocal

/// Prints latency percentiles and throughput of our NATS, Redis and Opus wrappers, each beside a baseline
/// measured in the same run on the same machine (a plain C loop, redis-benchmark), since absolute times drift.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Benchmark the NATS, Redis and Opus wrappers against raw baselines measured in the same run.")

    @Option(help: "NATS server to use; default: start one on a free loopback port.")
    var natsURL: String?
    @Option(help: "Redis server to use; default: start one on a free loopback port.")
    var redisURL: String?
    @Option(help: "Sequential round trips per measurement.")
    var count = 20_000
    @Option(help: "Which parts to run (nats, redis, opus).")
    var only: [String] = ["nats", "redis", "opus"]
    @Flag(help: "Also print the results as a Markdown table.")
    var markdown = false

    func run() async throws {
        var report = Report(title: "switchboard-bench")
        print("switchboard-bench: \(count) round trips per measurement, \(ProcessInfo.processInfo.activeProcessorCount) cores")
        var servers: [LocalServer] = []
        defer { for server in servers { server.kill() } }

        if only.contains("nats") {
            let url: String
            if let natsURL { url = natsURL } else {
                let server = try await LocalServer(.nats, label: "sbbench")
                servers.append(server)
                url = server.url
            }
            try await NATSBench(url: url, count: count).run(into: &report)
        }
        if only.contains("redis") {
            let server: LocalServer? = redisURL == nil ? try await LocalServer(.redis, label: "sbbench") : nil
            if let server { servers.append(server) }
            try await RedisBench(url: redisURL ?? server!.url, count: count).run(into: &report)
        }
        if only.contains("opus") {
            try OpusBenchRun(frames: 5_000).run(into: &report)
        }
        if markdown { print("\n" + report.markdown()) }
    }
}

