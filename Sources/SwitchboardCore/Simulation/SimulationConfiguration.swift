import Foundation

/// The fleet, the load and the routers of a balance simulation, and how long it runs (docs/simulator.md).
public struct SimulationConfiguration: Sendable, Equatable {
    /// A kind of worker machine: how many calls it takes and what they cost it.
    public struct WorkerClass: Sendable, Equatable, Codable {
        public var cores: Int
        public var capacity: Int
        /// CPU share the worker uses with no calls.
        public var baseCPU: Double
        /// CPU share one call costs.
        public var cpuPerCall: Double
        public var memoryLimitBytes: Int64

        enum CodingKeys: String, CodingKey {
            case cores, capacity
            case baseCPU = "base_cpu", cpuPerCall = "cpu_per_call", memoryLimitBytes = "memory_limit_bytes"
        }

        /// `callsPerCore` calls per core, sized so a full worker sits at `fullCPU`.
        public init(cores: Int, callsPerCore: Int = 25, baseCPU: Double = 0.05, fullCPU: Double = 0.8) {
            self.cores = cores
            self.capacity = cores * callsPerCore
            self.baseCPU = baseCPU
            self.cpuPerCall = capacity > 0 ? (fullCPU - baseCPU) / Double(capacity) : 0
            self.memoryLimitBytes = Int64(cores) << 30
        }

        public func cpu(calls: Int) -> Double { min(1, baseCPU + cpuPerCall * Double(calls)) }

        /// A tenth of the limit at rest, six tenths when full.
        public func memoryUsed(calls: Int) -> Int64 {
            let fill = capacity > 0 ? Double(calls) / Double(capacity) : 0
            return Int64(Double(memoryLimitBytes) * (0.1 + 0.5 * fill))
        }
    }

    /// A region and its share of the workers and of the callers.
    public struct RegionShare: Sendable, Equatable, Codable {
        public var name: String
        public var weight: Double

        public init(_ name: String, _ weight: Double) {
            self.name = name
            self.weight = weight
        }
    }

    public var workers = 100
    public var routers = 8
    public var heartbeatInterval: Duration = .seconds(1)
    /// Workers also send a heartbeat when they accept a call, as the worker does; false: only every interval and
    /// when they become full or stop being full (how workers did before, for comparison).
    public var heartbeatOnAccept = true
    /// Heartbeats sent on a change (an accept, full, not full) go out at most one per this spacing.
    public var heartbeatSpacing: Duration = .milliseconds(50)
    /// Simulated before the statistics start (the fleet starts in steady state; see `BalanceSimulator`).
    public var warmup: Duration = .seconds(600)
    /// Simulated after the warm-up, with statistics.
    public var duration: Duration = .seconds(7200)
    /// Mean share of the fleet's slots in use: sets the arrival rate.
    public var utilization = 0.7
    public var regions = [RegionShare("eu", 50), RegionShare("us", 50)]
    /// Worker classes, assigned in turn within each region.
    public var classes = SimulationConfiguration.mixedClasses()
    /// Call durations are log-normal with this mean and sigma (of the log).
    public var meanCallSeconds = 180.0
    public var callSigma = 1.0
    /// Workers offered one call at most, as the router's `maxOffers`.
    public var maxOffers = 3
    /// How often each router runs `WorkerRegistry.tick` (nil: a quarter of the heartbeat interval, as the
    /// router does).
    public var tickInterval: Duration?
    public var seed: UInt64 = 1

    public init() {}

    /// 2, 4 and 8 cores, capacity proportional to cores.
    public static func mixedClasses(callsPerCore: Int = 25) -> [WorkerClass] {
        [2, 4, 8].map { WorkerClass(cores: $0, callsPerCore: callsPerCore) }
    }

    /// One class for every worker.
    public static func homogeneousClasses(cores: Int = 4, callsPerCore: Int = 25) -> [WorkerClass] {
        [WorkerClass(cores: cores, callsPerCore: callsPerCore)]
    }

    /// `eu:50,us:50`: names with their weights (any positive numbers; shares are weight over the total).
    public static func parseRegions(_ text: String) throws(SwitchboardError) -> [RegionShare] {
        var shares: [RegionShare] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: ":", omittingEmptySubsequences: false)
            let name = pair.first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
            guard pair.count == 2, !name.isEmpty, let weight = Double(pair[1].trimmingCharacters(in: .whitespaces)),
                  weight.isFinite, weight > 0 else {
                throw SwitchboardError(.invalidArgument, "regions must look like eu:50,us:50 (name:weight > 0), got '\(text)'")
            }
            guard !shares.contains(where: { $0.name == name }) else {
                throw SwitchboardError(.invalidArgument, "region '\(name)' is given twice")
            }
            shares.append(RegionShare(name, weight))
        }
        return shares
    }

    public func validate() throws(SwitchboardError) {
        guard (1...100_000).contains(workers) else { throw SwitchboardError(.invalidArgument, "workers must be 1-100000") }
        guard (1...1_000).contains(routers) else { throw SwitchboardError(.invalidArgument, "routers must be 1-1000") }
        guard heartbeatInterval > .zero else { throw SwitchboardError(.invalidArgument, "heartbeat must be > 0 seconds") }
        guard warmup >= .zero else { throw SwitchboardError(.invalidArgument, "warmup must be >= 0 seconds") }
        guard duration > .zero else { throw SwitchboardError(.invalidArgument, "duration must be > 0 seconds") }
        guard utilization.isFinite, utilization > 0, utilization <= 10 else {
            throw SwitchboardError(.invalidArgument, "utilization must be in (0, 10]")
        }
        guard !regions.isEmpty, regions.count <= workers else {
            throw SwitchboardError(.invalidArgument, "need 1 to \(workers) regions (one worker each at least)")
        }
        guard !classes.isEmpty, classes.allSatisfy({ $0.capacity > 0 && $0.cpuPerCall >= 0 && $0.baseCPU >= 0 }) else {
            throw SwitchboardError(.invalidArgument, "every worker class needs a capacity > 0")
        }
        guard meanCallSeconds.isFinite, meanCallSeconds > 0, callSigma.isFinite, callSigma >= 0, callSigma <= 4 else {
            throw SwitchboardError(.invalidArgument, "call duration needs a mean > 0 and a sigma in [0, 4]")
        }
        guard (1...16).contains(maxOffers) else { throw SwitchboardError(.invalidArgument, "max offers must be 1-16") }
        if let tickInterval, tickInterval <= .zero { throw SwitchboardError(.invalidArgument, "tick interval must be > 0") }
    }

    /// Workers per region, by weight (largest remainder, at least one each).
    func workersPerRegion() -> [Int] {
        let total = regions.reduce(0) { $0 + $1.weight }
        let exact = regions.map { Double(workers) * $0.weight / total }
        var counts = exact.map { max(1, Int($0)) }
        var order = Array(regions.indices)
        order.sort { (exact[$0] - Double(Int(exact[$0])), $1) > (exact[$1] - Double(Int(exact[$1])), $0) }
        var i = 0
        while counts.reduce(0, +) < workers {
            counts[order[i % order.count]] += 1
            i += 1
        }
        while counts.reduce(0, +) > workers, let j = counts.indices.max(by: { counts[$0] < counts[$1] }) { counts[j] -= 1 }
        return counts
    }

    /// Calls per second that keep `utilization` of the fleet's slots busy on average (Little's law).
    func arrivalRate(totalCapacity: Int) -> Double {
        utilization * Double(totalCapacity) / meanCallSeconds
    }
}
