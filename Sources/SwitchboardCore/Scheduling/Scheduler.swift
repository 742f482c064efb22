/// Chooses the worker for a call. Pure: the fleet view, the call's needs and the random source are inputs.
///
/// Filter (placeable, eligible version, a free slot counting this router's reservations, the call's region,
/// not already tried), score (free CPU, memory and slots, a steep penalty past the CPU ceiling, a locality
/// bonus), choose (`spread`: the best of `choices` workers sampled at random, "power of d choices"; the
/// other strategies are there to compare against in the simulator, and `binpack` for fleets that scale
/// down).
public struct Scheduler: Sendable {
    public enum Strategy: String, Codable, Sendable, CaseIterable {
        /// Power of d choices: sample d eligible workers, take the best scored. Balanced under stale reports.
        case spread
        /// The fullest eligible worker that still fits, so empty ones can be scaled down (scans the pools).
        case binpack
        /// Baselines for the simulator.
        case random
        case roundRobin = "round_robin"
        case leastLoaded = "least_loaded"
    }

    public struct Weights: Codable, Sendable, Equatable {
        public var cpu: Double
        public var memory: Double
        public var slots: Double
        public var locality: Double
        /// Free GPU, weighed like free CPU, for workers that report one (the others score 0 for it).
        public var gpu: Double

        public init(cpu: Double = 1, memory: Double = 0.5, slots: Double = 1, locality: Double = 1, gpu: Double = 1) {
            self.cpu = cpu
            self.memory = memory
            self.slots = slots
            self.locality = locality
            self.gpu = gpu
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(cpu: try c.decode(Double.self, forKey: .cpu), memory: try c.decode(Double.self, forKey: .memory),
                      slots: try c.decode(Double.self, forKey: .slots), locality: try c.decode(Double.self, forKey: .locality),
                      gpu: try c.decodeIfPresent(Double.self, forKey: .gpu) ?? 1)
        }
    }

    public struct Configuration: Codable, Sendable, Equatable {
        public var strategy: Strategy = .spread
        /// d in "power of d choices". Four: with workers heartbeating on each accepted call, every router's view
        /// is fresh enough that more choices do not herd (docs/benchmarks.md), and a fleet of four workers or fewer
        /// is scanned whole, so a small fleet is never more than one call off even.
        public var choices = 4
        /// Count this router's own reservations in a worker's load until its heartbeat does.
        public var localCorrection = true
        public var weights = Weights()
        /// CPU share past which a worker's score drops steeply.
        public var cpuCeiling = 0.8
        /// Score lost going from the ceiling to 100% CPU.
        public var ceilingPenalty = 10.0
        /// CPU a call is taken to cost on a worker with no calls to judge by (share of the worker's CPU).
        public var assumedCPUPerCall = 0.01

        public init(strategy: Strategy = .spread, choices: Int = 4, localCorrection: Bool = true, weights: Weights = Weights(),
                    cpuCeiling: Double = 0.8) {
            self.strategy = strategy
            self.choices = choices
            self.localCorrection = localCorrection
            self.weights = weights
            self.cpuCeiling = cpuCeiling
        }

        public func validate() throws(SwitchboardError) {
            guard (1...16).contains(choices) else { throw SwitchboardError(.invalidArgument, "choices must be 1-16") }
            guard cpuCeiling > 0 && cpuCeiling <= 1 else { throw SwitchboardError(.invalidArgument, "cpu ceiling must be in (0, 1]") }
            for (name, w) in [("cpu", weights.cpu), ("memory", weights.memory), ("slots", weights.slots), ("locality", weights.locality),
                              ("gpu", weights.gpu)]
            where !(w.isFinite && w >= 0) {
                throw SwitchboardError(.invalidArgument, "weight '\(name)' must be a number >= 0")
            }
        }
    }

    /// What a call asks of its worker.
    public struct Needs: Sendable, Equatable {
        /// Versions that may take the call (the router's deploy policy decided); nil: any version whose
        /// worker says it is ready. With versions named, a worker that says `outdated` may take the call too:
        /// the router's policy may be newer than the worker's heartbeat (a rollback a moment ago).
        public var versions: Set<String>?
        /// Versions tried in order when none of `versions` has room (a canary's call falls back to the
        /// active version; a moving call from its own version to the active one).
        public var fallback: [Set<String>]
        public var region: String?
        public var zone: String?
        public var locality: Locality
        /// Workers already offered this call.
        public var tried: Set<String>
        /// Regions the call may be placed in at all, whatever `region` and `locality` say (a tenant restricted
        /// to some regions); nil: any.
        public var allowedRegions: Set<String>?

        public init(versions: Set<String>? = nil, fallback: [Set<String>] = [], region: String? = nil, zone: String? = nil,
                    locality: Locality = .required, tried: Set<String> = []) {
            self.versions = versions
            self.fallback = fallback
            self.region = region
            self.zone = zone
            self.locality = locality
            self.tried = tried
        }

        /// These needs, placed only in `regions` (nil or empty: anywhere).
        public func onlyIn(_ regions: [String]) -> Needs {
            var needs = self
            if !regions.isEmpty { needs.allowedRegions = Set(regions) }
            return needs
        }
    }

    /// A worker's score and its parts, each part already weighted.
    public struct Score: Codable, Sendable, Hashable {
        public var cpu: Double
        public var memory: Double
        public var slots: Double
        public var locality: Double
        /// Free GPU (0 for a worker that reports none).
        public var gpu: Double
        /// Subtracted past the CPU ceiling (and past it on the GPU).
        public var penalty: Double
        public var total: Double { cpu + memory + slots + locality + gpu - penalty }

        enum CodingKeys: String, CodingKey { case cpu, memory, slots, locality, gpu, penalty, total }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(cpu, forKey: .cpu)
            try c.encode(memory, forKey: .memory)
            try c.encode(slots, forKey: .slots)
            try c.encode(locality, forKey: .locality)
            try c.encode(gpu, forKey: .gpu)
            try c.encode(penalty, forKey: .penalty)
            try c.encode(total, forKey: .total)
        }
        public init(cpu: Double, memory: Double, slots: Double, locality: Double, gpu: Double = 0, penalty: Double) {
            self.cpu = cpu
            self.memory = memory
            self.slots = slots
            self.locality = locality
            self.gpu = gpu
            self.penalty = penalty
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(cpu: try c.decode(Double.self, forKey: .cpu), memory: try c.decode(Double.self, forKey: .memory),
                      slots: try c.decode(Double.self, forKey: .slots), locality: try c.decode(Double.self, forKey: .locality),
                      gpu: try c.decodeIfPresent(Double.self, forKey: .gpu) ?? 0, penalty: try c.decode(Double.self, forKey: .penalty))
        }
    }

    /// A worker's load as this router projects it: its report plus this router's reservations.
    public struct Load: Codable, Sendable, Hashable {
        public var cpu: Double
        public var memory: Double
        /// Calls over capacity, 0...1.
        public var fill: Double
        public var freeSlots: Int
        /// The GPU's busier of compute and memory, 0...1; nil for a worker that reports no GPU.
        public var gpu: Double? = nil

        enum CodingKeys: String, CodingKey {
            case cpu, memory, fill, gpu
            case freeSlots = "free_slots"
        }
    }

    public struct Candidate: Codable, Sendable, Hashable {
        public var workerID: String
        public var version: String
        public var region: String
        public var zone: String
        public var load: Load
        public var score: Score

        enum CodingKeys: String, CodingKey {
            case version, region, zone, load, score
            case workerID = "worker_id"
        }
    }

    /// Why a worker was not a candidate for a call.
    public enum Filter: String, Codable, Sendable, CaseIterable, Comparable {
        case notReady = "not_ready", suspect, version, region, zone, full, tried
        public static func < (a: Filter, b: Filter) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// The reasoning behind one decision (Nomad's placement metrics, for calls).
    public struct Explanation: Codable, Sendable, Hashable {
        public var strategy: Strategy
        public var workers: Int
        public var eligible: Int
        /// Workers filtered out, by the first rule each failed.
        public var filtered: [String: Int]
        /// The workers scored (the sample for `spread`, the best few for the scanning strategies), best first.
        public var candidates: [Candidate]
        public var chosen: String?
    }

    public struct Decision: Sendable {
        public var chosen: Candidate?
        /// Which versions the choice came from: 0 for `needs.versions`, i for `needs.fallback[i - 1]`.
        public var fallback = 0
        /// The workers scored, best first.
        public var candidates: [Candidate]
        /// Filled in when asked for.
        public var explanation: Explanation?
    }

    public var configuration: Configuration
    private var roundRobinCursor = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    // MARK: Deciding

    /// Chooses a worker for a call, or none when no worker may take it: among `needs.versions` first, then
    /// each of `needs.fallback` in turn.
    public mutating func choose(_ needs: Needs, in registry: WorkerRegistry, using random: inout some RandomNumberGenerator,
                                explain: Bool = false) -> Decision {
        var decision = chooseAmong(needs, in: registry, using: &random, explain: explain)
        for (i, versions) in needs.fallback.enumerated() where decision.chosen == nil {
            var next = needs
            next.versions = versions
            decision = chooseAmong(next, in: registry, using: &random, explain: explain)
            decision.fallback = i + 1
        }
        return decision
    }

    private mutating func chooseAmong(_ needs: Needs, in registry: WorkerRegistry, using random: inout some RandomNumberGenerator,
                                      explain: Bool) -> Decision {
        let pools = registry.pools(versions: needs.versions, region: needs.locality == .required ? needs.region : nil)
        if needs.locality == .preferred, let region = needs.region {
            // Workers in the caller's region first; elsewhere only when none there can take the call.
            let local = registry.pools(versions: needs.versions, region: region)
            var decision = choose(needs, from: local, in: registry, using: &random)
            if decision.chosen == nil { decision = choose(needs, from: pools, in: registry, using: &random) }
            if explain { decision.explanation = explanation(needs, registry, decision) }
            return decision
        }
        var decision = choose(needs, from: pools, in: registry, using: &random)
        if explain { decision.explanation = explanation(needs, registry, decision) }
        return decision
    }

    private mutating func choose(_ needs: Needs, from pools: [IndexedIDs], in registry: WorkerRegistry,
                                 using random: inout some RandomNumberGenerator) -> Decision {
        let total = pools.reduce(0) { $0 + $1.count }
        guard total > 0 else { return Decision(chosen: nil, candidates: []) }
        switch configuration.strategy {
        case .spread:
            let sample = sampleEligible(configuration.choices, needs, pools, total, registry, &random)
            return best(of: sample, needs, &random)
        case .random:
            return best(of: sampleEligible(1, needs, pools, total, registry, &random), needs, &random)
        case .roundRobin:
            for step in 0..<total {
                let position = (roundRobinCursor + step) % total
                if let entry = eligibleEntry(at: position, needs, pools, registry) {
                    roundRobinCursor = position + 1
                    return best(of: [entry], needs, &random)
                }
            }
            return Decision(chosen: nil, candidates: [])
        case .leastLoaded, .binpack:
            var all: [WorkerRegistry.Entry] = []
            for pool in pools {
                for id in pool.ids {
                    if let entry = registry.entries[id], isEligible(entry, needs) { all.append(entry) }
                }
            }
            return best(of: all, needs, &random)
        }
    }

    /// Up to `count` distinct eligible workers, uniformly at random: random probes first (cheap when most of
    /// the fleet is eligible), then a scan of the pools when probing finds too few.
    private func sampleEligible(_ count: Int, _ needs: Needs, _ pools: [IndexedIDs], _ total: Int, _ registry: WorkerRegistry,
                                _ random: inout some RandomNumberGenerator) -> [WorkerRegistry.Entry] {
        var found: [WorkerRegistry.Entry] = []
        var probes = 0
        while found.count < count && probes < 4 * count + 8 {
            probes += 1
            let position = Int.random(in: 0..<total, using: &random)
            guard let entry = eligibleEntry(at: position, needs, pools, registry),
                  !found.contains(where: { $0.id == entry.id }) else { continue }
            found.append(entry)
        }
        if found.count == count || found.count == total { return found }
        var all: [WorkerRegistry.Entry] = []
        for pool in pools {
            for id in pool.ids {
                if let entry = registry.entries[id], isEligible(entry, needs) { all.append(entry) }
            }
        }
        if all.count <= count { return all }
        var picked: [WorkerRegistry.Entry] = []
        for _ in 0..<count {
            picked.append(all.remove(at: Int.random(in: 0..<all.count, using: &random)))
        }
        return picked
    }

    private func eligibleEntry(at position: Int, _ needs: Needs, _ pools: [IndexedIDs],
                               _ registry: WorkerRegistry) -> WorkerRegistry.Entry? {
        var position = position
        for pool in pools {
            if position < pool.count {
                guard let entry = registry.entries[pool[position]], isEligible(entry, needs) else { return nil }
                return entry
            }
            position -= pool.count
        }
        return nil
    }

    /// The best scored of `entries`, ties broken at random; and the best few, for explaining. One pass, so a
    /// scan of a large fleet (binpack) stays linear.
    private func best(of entries: [WorkerRegistry.Entry], _ needs: Needs,
                      _ random: inout some RandomNumberGenerator) -> Decision {
        var chosen = -1, chosenTotal = -Double.infinity, ties = 0
        var top: [(index: Int, total: Double)] = []  // the 8 best, best first
        for (i, entry) in entries.enumerated() {
            let total = score(entry, needs).total
            if chosen < 0 || total > chosenTotal {
                (chosen, chosenTotal, ties) = (i, total, 1)
            } else if total == chosenTotal {
                ties += 1
                if Int.random(in: 0..<ties, using: &random) == 0 { chosen = i }  // each tie equally likely
            }
            if top.count < 8 || total > top[top.count - 1].total {
                top.insert((i, total), at: top.firstIndex { total > $0.total } ?? top.count)
                if top.count > 8 { top.removeLast() }
            }
        }
        guard chosen >= 0 else { return Decision(chosen: nil, candidates: []) }
        let others = top.map(\.index).filter { $0 != chosen }.prefix(7)
        return Decision(chosen: candidate(entries[chosen], needs), candidates: ([chosen] + others).map { candidate(entries[$0], needs) })
    }

    // MARK: Rules

    /// The first rule `entry` fails for `needs`, or nil when it may take the call.
    public func filter(_ entry: WorkerRegistry.Entry, _ needs: Needs) -> Filter? {
        switch entry.heartbeat.state {
        case .ready: break
        case .outdated where needs.versions != nil: break
        case .outdated, .draining, .stopping: return .notReady
        }
        if entry.liveness != .alive { return .suspect }
        if let versions = needs.versions, !versions.contains(entry.heartbeat.version) { return .version }
        if let allowed = needs.allowedRegions, !allowed.contains(entry.heartbeat.region) { return .region }
        if needs.locality == .required {
            if let region = needs.region, entry.heartbeat.region != region { return .region }
            if let zone = needs.zone, entry.heartbeat.zone != zone { return .zone }
        }
        if freeSlots(entry) <= 0 { return .full }
        if needs.tried.contains(entry.id) { return .tried }
        return nil
    }

    private func isEligible(_ entry: WorkerRegistry.Entry, _ needs: Needs) -> Bool { filter(entry, needs) == nil }

    private func freeSlots(_ entry: WorkerRegistry.Entry) -> Int {
        configuration.localCorrection ? entry.freeSlots : entry.heartbeat.freeSlots
    }

    /// The worker's load as this router projects it.
    public func load(_ entry: WorkerRegistry.Entry) -> Load {
        let hb = entry.heartbeat
        let reserved = configuration.localCorrection ? entry.reserved : 0
        // A call's CPU, judged by the worker's calls so far; never more than a full worker's share per call
        // (a worker's capacity is what it can hold at full CPU), so CPU spent on other things is not
        // counted again for every call offered.
        let perCall = hb.activeCalls > 0 && hb.capacity > 0
            ? min(hb.cpu / Double(hb.activeCalls), 1 / Double(hb.capacity)) : configuration.assumedCPUPerCall
        let memory = hb.memoryLimitBytes > 0 ? Double(hb.memoryUsedBytes) / Double(hb.memoryLimitBytes) : 0
        let calls = hb.activeCalls + reserved
        // A GPU is projected as CPU is: by what each call holds so far, for the calls this router has on the way.
        let gpu = hb.gpu.map { gpu -> Double in
            let perCallGPU = hb.activeCalls > 0 && hb.capacity > 0
                ? min(gpu.busy / Double(hb.activeCalls), 1 / Double(hb.capacity)) : configuration.assumedCPUPerCall
            return min(1, gpu.busy + Double(reserved) * perCallGPU)
        }
        return Load(cpu: min(1, hb.cpu + Double(reserved) * perCall), memory: min(1, memory),
                    fill: hb.capacity > 0 ? min(1, Double(calls) / Double(hb.capacity)) : 1,
                    freeSlots: max(0, hb.capacity - calls), gpu: gpu)
    }

    /// Scores `entry` for a call: higher is better.
    public func score(_ entry: WorkerRegistry.Entry, _ needs: Needs) -> Score {
        score(entry.heartbeat, load(entry), needs)
    }

    private func score(_ hb: Heartbeat, _ load: Load, _ needs: Needs) -> Score {
        let w = configuration.weights
        var locality = 0.0
        if let region = needs.region, hb.region == region {
            locality = needs.zone == nil || needs.zone == hb.zone ? 1 : 0.5
        }
        func overCeiling(_ share: Double) -> Double {
            share > configuration.cpuCeiling
                ? configuration.ceilingPenalty * (share - configuration.cpuCeiling) / max(0.01, 1 - configuration.cpuCeiling) : 0
        }
        // spread favours free room; binpack favours the fullest worker that fits.
        let used = configuration.strategy == .binpack
        return Score(cpu: w.cpu * (used ? load.cpu : 1 - load.cpu),
                     memory: w.memory * (used ? load.memory : 1 - load.memory),
                     slots: w.slots * (used ? load.fill : 1 - load.fill),
                     locality: w.locality * locality,
                     gpu: load.gpu.map { w.gpu * (used ? $0 : 1 - $0) } ?? 0,
                     penalty: overCeiling(load.cpu) + (load.gpu.map(overCeiling) ?? 0))
    }

    private func candidate(_ entry: WorkerRegistry.Entry, _ needs: Needs) -> Candidate {
        let hb = entry.heartbeat
        let load = load(entry)
        return Candidate(workerID: hb.workerID, version: hb.version, region: hb.region, zone: hb.zone, load: load,
                         score: score(hb, load, needs))
    }

    // MARK: Explaining

    private func explanation(_ needs: Needs, _ registry: WorkerRegistry, _ decision: Decision) -> Explanation {
        var filtered: [String: Int] = [:]
        var eligible = 0
        for entry in registry.entries.values {
            if let rule = filter(entry, needs) { filtered[rule.rawValue, default: 0] += 1 } else { eligible += 1 }
        }
        return Explanation(strategy: configuration.strategy, workers: registry.entries.count, eligible: eligible,
                           filtered: filtered, candidates: decision.candidates, chosen: decision.chosen?.workerID)
    }
}
