import ArgumentParser
import Foundation
import SwitchboardCore

/// `switchboard simulate`: the balance simulator (docs/simulator.md), one row per strategy. Options also read
/// `SWITCHBOARD_<OPTION>` from the environment, as the other commands do.
struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate a fleet placing calls through the real scheduler; compare strategies on balance, refusals and locality.")

    @Option(help: "Workers in the fleet.")
    var workers: Int = Settings.int("workers", 100)
    @Option(help: "Routers, each with its own view of the fleet.")
    var routers: Int = Settings.int("routers", 8)
    @Option(help: "Seconds between a worker's heartbeats.")
    var heartbeat: Double = Settings.double("heartbeat", 1)
    @Flag(name: .customLong("no-heartbeat-on-accept"), help: "Workers heartbeat only on the interval and when they become full or not full, not on each accepted call (how they did before; to compare).")
    var noHeartbeatOnAccept = false
    @Option(help: "Simulated seconds with statistics, after the warm-up.")
    var duration: Double = Settings.double("duration", 7200)
    @Option(help: "Simulated seconds before the statistics start.")
    var warmup: Double = Settings.double("warmup", 600)
    @Option(help: "Mean share of the fleet's slots in use (above 1: overload).")
    var utilization: Double = Settings.double("utilization", 0.7)
    @Option(help: "Regions with their share of workers and callers, name:weight,...")
    var regions: String = Settings.string("regions", "eu:50,us:50")
    @Flag(help: "Every worker alike (4 cores) instead of a mix of 2, 4 and 8 cores.")
    var homogeneous = false
    @Option(name: .customLong("calls-per-core"), help: "Calls a worker takes per core (capacity).")
    var callsPerCore: Int = Settings.int("calls-per-core", 25)
    @Option(name: .customLong("mean-call"), help: "Mean call duration in seconds (log-normal).")
    var meanCall: Double = Settings.double("mean-call", 180)
    @Option(help: "Seed of every random draw: the same seed gives the same table.")
    var seed: UInt64 = UInt64(clamping: Settings.int("seed", 1))
    @Option(help: "The configured strategy: spread, binpack, random, round_robin or least_loaded.")
    var strategy: String = Settings.string("strategy", "spread")
    @Option(help: "d in power of d choices (spread).")
    var choices: Int = Settings.int("choices", 4)
    @Flag(name: .customLong("no-local-correction"), help: "The configured strategy ignores this router's own reservations.")
    var noLocalCorrection = false
    @Option(help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
        let (simulation, strategies): (SimulationConfiguration, [SimulationStrategy])
        do {
            (simulation, strategies) = try settings()
        } catch {
            throw ExitCodes.fail(error)
        }
        let clock = ContinuousClock()
        let start = clock.now
        let results = await Self.compare(simulation, strategies)
        let elapsed = (clock.now - start).microseconds / 1e6
        switch output {
        case .json:
            print(jsonString(SimulationReport(configuration: SimulationReport.Settings(simulation), results: results, seconds: elapsed)))
        case .text:
            print(Self.table(results))
            print(Self.summary(simulation, seconds: elapsed))
        }
    }

    func settings() throws(SwitchboardError) -> (SimulationConfiguration, [SimulationStrategy]) {
        var simulation = SimulationConfiguration()
        simulation.workers = workers
        simulation.routers = routers
        simulation.heartbeatInterval = try seconds(heartbeat, "heartbeat")
        simulation.heartbeatOnAccept = !noHeartbeatOnAccept
        simulation.duration = try seconds(duration, "duration")
        simulation.warmup = try seconds(warmup, "warmup", allowZero: true)
        simulation.utilization = utilization
        simulation.regions = try SimulationConfiguration.parseRegions(regions)
        guard (1...10_000).contains(callsPerCore) else { throw SwitchboardError(.invalidArgument, "calls-per-core must be 1-10000") }
        simulation.classes = homogeneous ? SimulationConfiguration.homogeneousClasses(callsPerCore: callsPerCore)
            : SimulationConfiguration.mixedClasses(callsPerCore: callsPerCore)
        simulation.meanCallSeconds = meanCall
        simulation.seed = seed
        try simulation.validate()
        guard let kind = Scheduler.Strategy(rawValue: strategy) else {
            let names = Scheduler.Strategy.allCases.map(\.rawValue).joined(separator: ", ")
            throw SwitchboardError(.invalidArgument, "strategy must be one of \(names), got '\(strategy)'")
        }
        let configured = Scheduler.Configuration(strategy: kind, choices: choices, localCorrection: !noLocalCorrection)
        try configured.validate()
        return (simulation, SimulationStrategy.comparison(configured: configured))
    }

    /// The strategies side by side, two at a time (each run is single-threaded and independent).
    static func compare(_ simulation: SimulationConfiguration, _ strategies: [SimulationStrategy]) async -> [SimulationResult] {
        let origin = ContinuousClock.now
        let width = max(1, ProcessInfo.processInfo.activeProcessorCount)
        var results = [SimulationResult?](repeating: nil, count: strategies.count)
        await withTaskGroup(of: (Int, SimulationResult).self) { group in
            var next = 0
            func add() {
                let i = next
                next += 1
                group.addTask { (i, BalanceSimulator(configuration: simulation, strategy: strategies[i]).run(origin: origin)) }
            }
            while next < min(width, strategies.count) { add() }
            for await (i, result) in group {
                results[i] = result
                if next < strategies.count { add() }
            }
        }
        return results.compactMap { $0 }
    }

    static func table(_ results: [SimulationResult]) -> String {
        var rows = [["STRATEGY", "MAX/MEAN", "WORST", "CALLS/WORKER", "P99 PEAK CPU", "PLACED", "REFUSED", "OFFERS REFUSED", "LOCAL"]]
        for r in results {
            rows.append([r.strategy, String(format: "%.3f", r.balance), String(format: "%.3f", r.worstBalance),
                         String(format: "%.1f", r.meanCallsPerWorker), String(format: "%.0f%%", r.p99PeakCPU * 100),
                         "\(r.placed)", "\(r.refusedForCapacity)", "\(r.offersRefused)",
                         String(format: "%.1f%%", r.localityHitRate * 100)])
        }
        return formatTable(rows)
    }

    static func summary(_ s: SimulationConfiguration, seconds: Double) -> String {
        let fleet = s.classes.count == 1 ? "\(s.classes[0].cores)-core workers (\(s.classes[0].capacity) calls)"
            : "workers of " + s.classes.map { "\($0.cores)" }.joined(separator: "/") + " cores ("
                + s.classes.map { "\($0.capacity)" }.joined(separator: "/") + " calls)"
        let regions = s.regions.map { "\($0.name):\(Self.number($0.weight))" }.joined(separator: ",")
        return "\(s.workers) \(fleet), \(s.routers) routers, heartbeat \(s.heartbeatInterval), utilization \(Self.number(s.utilization)), "
            + "regions \(regions), \(s.duration) after \(s.warmup) warm-up, seed \(s.seed); simulated in \(String(format: "%.1f", seconds)) s"
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// `--output json`: the settings and one object per strategy.
struct SimulationReport: Encodable {
    struct Settings: Encodable {
        var workers, routers: Int
        var heartbeatSeconds, warmupSeconds, durationSeconds, utilization, meanCallSeconds: Double
        var regions: [String: Double]
        var classes: [SimulationConfiguration.WorkerClass]
        var seed: UInt64

        init(_ s: SimulationConfiguration) {
            workers = s.workers
            routers = s.routers
            heartbeatSeconds = s.heartbeatInterval.microseconds / 1e6
            warmupSeconds = s.warmup.microseconds / 1e6
            durationSeconds = s.duration.microseconds / 1e6
            utilization = s.utilization
            meanCallSeconds = s.meanCallSeconds
            regions = Dictionary(uniqueKeysWithValues: s.regions.map { ($0.name, $0.weight) })
            classes = s.classes
            seed = s.seed
        }

        enum CodingKeys: String, CodingKey {
            case workers, routers, utilization, regions, classes, seed
            case heartbeatSeconds = "heartbeat_seconds", warmupSeconds = "warmup_seconds", durationSeconds = "duration_seconds"
            case meanCallSeconds = "mean_call_seconds"
        }
    }

    var configuration: Settings
    var results: [SimulationResult]
    var seconds: Double
}
