import Foundation

/// A scheduler configuration under a name, for the simulator's comparison table.
public struct SimulationStrategy: Sendable, Equatable {
    public var name: String
    public var scheduler: Scheduler.Configuration

    public init(_ name: String, _ scheduler: Scheduler.Configuration) {
        self.name = name
        self.scheduler = scheduler
    }

    /// A name for `scheduler`: its strategy, d for spread, and whether it counts its own reservations.
    public init(_ scheduler: Scheduler.Configuration) {
        var name = scheduler.strategy.rawValue.replacingOccurrences(of: "_", with: " ")
        if scheduler.strategy == .spread { name += " d=\(scheduler.choices)" }
        name += scheduler.localCorrection ? " + lc" : ", no lc"
        self.init(name, scheduler)
    }

    /// The baselines (random, round robin, greedy least-loaded with local correction as the old router did,
    /// power of two without and with local correction) and `configured`, marked as such; a configured
    /// strategy equal to a baseline is that row.
    public static func comparison(configured: Scheduler.Configuration = Scheduler.Configuration()) -> [SimulationStrategy] {
        var rows = [
            Scheduler.Configuration(strategy: .random),
            Scheduler.Configuration(strategy: .roundRobin),
            Scheduler.Configuration(strategy: .leastLoaded, localCorrection: true),
            Scheduler.Configuration(strategy: .spread, choices: 2, localCorrection: false),
            Scheduler.Configuration(strategy: .spread, choices: 2, localCorrection: true),
            Scheduler.Configuration(strategy: .spread, choices: 4, localCorrection: true),
        ].map { SimulationStrategy($0) }
        if let i = rows.firstIndex(where: { $0.scheduler == configured }) {
            rows[i].name += " (configured)"
        } else {
            var row = SimulationStrategy(configured)
            row.name += " (configured)"
            rows.append(row)
        }
        return rows
    }
}

/// What one simulated strategy did after the warm-up.
public struct SimulationResult: Sendable, Equatable, Codable {
    public var strategy: String
    /// Mean over one-second samples of the fullest worker's fill (calls over capacity) over the mean fill;
    /// 1 is perfect. For a fleet of equal workers: max over mean live calls.
    public var balance: Double
    /// The worst sample of the same ratio.
    public var worstBalance: Double
    public var meanCallsPerWorker: Double
    /// 99th percentile across workers of each worker's peak CPU share.
    public var p99PeakCPU: Double
    public var placed: Int
    /// Calls no worker took: none had a free slot, or every offer (`maxOffers`) was refused.
    public var refusedForCapacity: Int
    /// Offers a worker refused (full by its own count while a router's view said otherwise).
    public var offersRefused: Int
    /// Calls placed in the caller's region over calls placed.
    public var localityHitRate: Double
    public var samples: Int
    /// Events simulated, heartbeats sent (each to every router), workers found suspect or dead (none expected).
    public var events: Int
    public var heartbeats: Int
    public var livenessEvents: Int

    enum CodingKeys: String, CodingKey {
        case strategy, balance, placed, samples, events, heartbeats
        case worstBalance = "worst_balance", meanCallsPerWorker = "mean_calls_per_worker", p99PeakCPU = "p99_peak_cpu"
        case refusedForCapacity = "refused_for_capacity", offersRefused = "offers_refused"
        case localityHitRate = "locality_hit_rate", livenessEvents = "liveness_events"
    }
}

extension BalanceSimulator {
    /// Each strategy on the same workload (same seed), one after another.
    public static func compare(_ configuration: SimulationConfiguration, strategies: [SimulationStrategy],
                               origin: ContinuousClock.Instant = .now) -> [SimulationResult] {
        strategies.map { BalanceSimulator(configuration: configuration, strategy: $0).run(origin: origin) }
    }
}
