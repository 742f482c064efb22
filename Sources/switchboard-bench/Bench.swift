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
        abstract: "Benchmark the NATS, Redis and Opus wrappers against raw baselines measured in the same run, and the scheduler.")

    @Option(help: "NATS server to use; default: start one on a free loopback port.")
    var natsURL: String?
    @Option(help: "Redis server to use; default: start one on a free loopback port.")
    var redisURL: String?
    @Option(help: "Sequential round trips per measurement.")
    var count = 20_000
    @Option(help: "Which parts to run (nats, redis, sentinel, opus, route, scheduler, ingest, tenants, drain, deploy, agents, gateway, timeline).")
    var only: [String] = ["nats", "redis", "sentinel", "opus", "route", "scheduler", "ingest", "tenants", "drain", "deploy", "agents", "gateway", "timeline"]
    @Option(name: .customLong("sim-seconds"), help: "Simulated seconds per strategy and setting in the scheduler part (after a 600 s warm-up).")
    var simSeconds = 3600
    @Flag(help: "Also print the results as a Markdown table.")
    var markdown = false

    func run() async throws {
        var report = Report(title: "switchboard-bench")
        print("switchboard-bench: \(count) round trips per measurement, \(ProcessInfo.processInfo.activeProcessorCount) cores")
        var servers: [LocalServer] = []
        defer { for server in servers { server.kill() } }

        var nats = natsURL
        if nats == nil && (only.contains("nats") || only.contains("route") || only.contains("ingest") || only.contains("drain") || only.contains("deploy") || only.contains("agents")) {
            let server = try await LocalServer(.nats, label: "sbbench")
            servers.append(server)
            nats = server.url
        }
        var redis = redisURL
        if redis == nil && (only.contains("redis") || only.contains("route") || only.contains("ingest") || only.contains("tenants") || only.contains("drain") || only.contains("deploy") || only.contains("agents") || only.contains("timeline")) {
            let server = try await LocalServer(.redis, label: "sbbench")
            servers.append(server)
            redis = server.url
        }
        if only.contains("nats"), let nats {
            try await NATSBench(url: nats, count: count).run(into: &report)
        }
        if only.contains("redis"), let redis {
            try await RedisBench(url: redis, count: count).run(into: &report)
        }
        if only.contains("sentinel") {
            try await SentinelBench(count: count).run(into: &report)
        }
        if only.contains("route") { try WireBench().run(into: &report) }
        if only.contains("route"), let nats, let redis {
            try await RouteBench(natsURL: nats, redisURL: redis, count: count).run(into: &report)
        }
        if only.contains("opus") {
            try OpusBenchRun(frames: 5_000).run(into: &report)
        }
        if only.contains("gateway") { try GatewayBenchRun(frames: 5_000).run(into: &report) }
        if only.contains("timeline"), let redis { try await TimelineBench(url: redis).run(into: &report) }
        if only.contains("scheduler") {
            await SchedulerBench(decisions: count, simulatedSeconds: simSeconds).run(into: &report)
        }
        if only.contains("tenants"), let redis {
            try await TenantBench(url: redis, count: count).run(into: &report)
        }
        if only.contains("ingest"), let nats, let redis {
            try await IngestBench(natsURL: nats, redisURL: redis).run(into: &report)
        }
        if only.contains("drain"), let nats, let redis {
            try await DrainBench(natsURL: nats, redisURL: redis).run(into: &report)
        }
        if only.contains("deploy"), let nats, let redis {
            try await DeployBench(natsURL: nats, redisURL: redis).run(into: &report)
        }
        if only.contains("agents"), let nats, let redis {
            try await AgentBench(natsURL: nats, redisURL: redis).run(into: &report)
        }
        if markdown { print("\n" + report.markdown()) }
    }
}

