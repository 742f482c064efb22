import Foundation

/// A discrete-event simulation of a fleet placing calls through the real `Scheduler` and `WorkerRegistry`
/// (docs/simulator.md). Pure and deterministic: the same configuration and seed give the same result.
///
/// - Workers send every router a heartbeat every interval (each at its own random phase) and at once when
///   they become full or stop being full, and when they accept a call (at most one per `heartbeatSpacing`), as
///   the worker does; heartbeats carry `seq` and `accepted`, so local correction
///   and staleness work as in production.
/// - Calls arrive as a Poisson process sized for the configured utilization, each at a random router, with a
///   caller region drawn by the region split and `locality: .preferred`; durations are log-normal.
/// - A route is the router's loop: choose, reserve, offer; the worker (the authority) accepts if it has a
///   free slot, answering with its accept count, else refuses and the router releases and tries the next,
///   `maxOffers` at most.
/// - The fleet starts in steady state: each worker holds its share of the calls a fleet at this
///   utilization holds, with remaining durations drawn from the stationary distribution; the warm-up lets
///   the scheduler's own placements replace them before statistics start.
///
/// Offers and heartbeats arrive at once (no network delay), and workers do not fail.
public struct BalanceSimulator: Sendable {
    public let configuration: SimulationConfiguration
    public let strategy: SimulationStrategy

    public init(configuration: SimulationConfiguration, strategy: SimulationStrategy) {
        self.configuration = configuration
        self.strategy = strategy
    }

    /// Runs the simulation. `origin` is only where simulated instants start; the result does not depend on it.
    public func run(origin: ContinuousClock.Instant = .now) -> SimulationResult {
        var run = SimulationRun(configuration, strategy, origin: origin)
        return run.run()
    }
}

/// One worker as the simulator holds it: the authority on its calls.
struct SimWorker {
    var heartbeat: Heartbeat
    var workerClass: SimulationConfiguration.WorkerClass
    var region: Int
    var calls = 0
    var peakCalls = 0
    /// When it last sent a heartbeat, and whether one for a change waits for the spacing.
    var lastHeartbeat = Int64.min
    var heartbeatPending = false

    var capacity: Int { workerClass.capacity }
    var isFull: Bool { calls >= capacity }
}

/// The mutable state of one run.
struct SimulationRun {
    let configuration: SimulationConfiguration
    let strategy: SimulationStrategy
    let origin: ContinuousClock.Instant

    var workers: [SimWorker] = []
    var workerIndex: [String: Int] = [:]
    var regionNames: [String]
    var regionCumulative: [Double] = []

    // One registry, scheduler and random source per router, as in production (separate arrays so a decision
    // can read the registry while it mutates the scheduler and the random source).
    var registries: [WorkerRegistry]
    var schedulers: [Scheduler]
    var randoms: [SeededRandom]

    /// Arrivals, routers picked, caller regions, durations: the same for every strategy under one seed.
    var workload: SeededRandom
    var queue = EventQueue()
    var now: Int64 = 0
    let interval: Int64
    let tickInterval: Int64
    let warmupEnd: Int64
    let end: Int64
    var arrivalRate = 0.0

    var stats = SimulationStats()

    init(_ configuration: SimulationConfiguration, _ strategy: SimulationStrategy, origin: ContinuousClock.Instant) {
        self.configuration = configuration
        self.strategy = strategy
        self.origin = origin
        interval = configuration.heartbeatInterval.nanoseconds
        tickInterval = (configuration.tickInterval ?? configuration.heartbeatInterval / 4).nanoseconds
        warmupEnd = configuration.warmup.nanoseconds
        end = warmupEnd + configuration.duration.nanoseconds
        regionNames = configuration.regions.map(\.name)
        var sum = 0.0
        for region in configuration.regions {
            sum += region.weight
            regionCumulative.append(sum)
        }
        let registryConfiguration = WorkerRegistry.Configuration(heartbeatInterval: configuration.heartbeatInterval)
        registries = Array(repeating: WorkerRegistry(configuration: registryConfiguration), count: configuration.routers)
        schedulers = Array(repeating: Scheduler(configuration: strategy.scheduler), count: configuration.routers)
        randoms = (0..<configuration.routers).map { SeededRandom(seed: configuration.seed, stream: 100 + UInt64($0)) }
        workload = SeededRandom(seed: configuration.seed, stream: 1)
    }

    mutating func run() -> SimulationResult {
        buildFleet()
        var phases = SeededRandom(seed: configuration.seed, stream: 2)
        for w in workers.indices {
            sendHeartbeat(w)  // joined before the start
            queue.schedule(.heartbeat, at: Int64(Draw.unit(&phases) * Double(interval)), index: w)
        }
        for r in registries.indices {
            queue.schedule(.tick, at: Int64(Draw.unit(&phases) * Double(tickInterval)), index: r)
        }
        queue.schedule(.arrival, at: nextArrivalGap())
        queue.schedule(.sample, at: warmupEnd)

        while let event = queue.pop(), event.time <= end {
            now = event.time
            stats.events += 1
            let i = Int(event.index)
            switch event.kind {
            case .arrival:
                queue.schedule(.arrival, at: now + nextArrivalGap())
                let router = Int(workload.next() % UInt64(registries.count))
                let region = Draw.weighted(regionCumulative, &workload)
                let seconds = Draw.logNormal(mean: configuration.meanCallSeconds, sigma: configuration.callSigma, &workload)
                route(router: router, region: region, duration: max(1, Int64(seconds * 1e9)))
            case .callEnd:
                let wasFull = workers[i].isFull
                workers[i].calls -= 1
                if wasFull { heartbeatSoon(i) }  // a slot opened on a full worker: tell the routers now
            case .heartbeat:
                sendHeartbeat(i)
                queue.schedule(.heartbeat, at: now + interval, index: i)
            case .spacedHeartbeat:
                workers[i].heartbeatPending = false
                sendHeartbeat(i)
            case .tick:
                stats.livenessEvents += registries[i].tick(now: instant(now)).count
                queue.schedule(.tick, at: now + tickInterval, index: i)
            case .sample:
                if now == warmupEnd {
                    for w in workers.indices { workers[w].peakCalls = workers[w].calls }
                }
                sample()
                queue.schedule(.sample, at: now + 1_000_000_000)
            }
        }
        return stats.result(strategy: strategy.name, workers: workers)
    }

    // MARK: The fleet

    /// Workers by region (classes in turn within each), each holding its share of the stationary calls.
    mutating func buildFleet() {
        let perRegion = configuration.workersPerRegion()
        for (region, count) in perRegion.enumerated() {
            for k in 0..<count {
                let workerClass = configuration.classes[k % configuration.classes.count]
                let id = "w\(String(workers.count + 1).leftPadded(to: 5))"
                let heartbeat = Heartbeat(workerID: id, version: "sim", region: regionNames[region], zone: "\(regionNames[region])-a",
                                          state: .ready, capacity: workerClass.capacity, activeCalls: 0, cpu: 0,
                                          memoryUsedBytes: 0, memoryLimitBytes: workerClass.memoryLimitBytes, seq: 0,
                                          incarnation: "sim", accepted: 0)
                workerIndex[id] = workers.count
                workers.append(SimWorker(heartbeat: heartbeat, workerClass: workerClass, region: region))
            }
        }
        let totalCapacity = workers.reduce(0) { $0 + $1.capacity }
        arrivalRate = configuration.arrivalRate(totalCapacity: totalCapacity)

        // Calls in progress at a random moment of steady state: total durations length-biased (log-normal with
        // mu + sigma^2), each part way through (a uniform share of it left).
        var prefill = SeededRandom(seed: configuration.seed, stream: 3)
        let sigma = configuration.callSigma
        let biasedMean = configuration.meanCallSeconds * exp(sigma * sigma)
        for w in workers.indices {
            let calls = min(workers[w].capacity, Int((configuration.utilization * Double(workers[w].capacity)).rounded()))
            for _ in 0..<calls {
                let left = Draw.unit(&prefill) * Draw.logNormal(mean: biasedMean, sigma: sigma, &prefill)
                queue.schedule(.callEnd, at: max(1, Int64(left * 1e9)), index: w)
            }
            workers[w].calls = calls
            workers[w].heartbeat.accepted = UInt64(calls)
        }
    }

    mutating func nextArrivalGap() -> Int64 {
        max(1, Int64(Draw.exponential(rate: arrivalRate, &workload) * 1e9))
    }

    func instant(_ time: Int64) -> ContinuousClock.Instant { origin + .nanoseconds(time) }

    /// The worker's heartbeat, to every router.
    mutating func sendHeartbeat(_ w: Int) {
        let calls = workers[w].calls
        let workerClass = workers[w].workerClass
        workers[w].heartbeat.seq += 1
        workers[w].lastHeartbeat = now
        workers[w].heartbeat.activeCalls = calls
        workers[w].heartbeat.cpu = workerClass.cpu(calls: calls)
        workers[w].heartbeat.memoryUsedBytes = workerClass.memoryUsed(calls: calls)
        let heartbeat = workers[w].heartbeat
        let at = instant(now)
        for r in registries.indices { registries[r].ingest(heartbeat, now: at) }
        stats.heartbeats += 1
    }

    /// A change in the worker's calls, told to every router at once, or at the end of the spacing.
    mutating func heartbeatSoon(_ w: Int) {
        let spacing = configuration.heartbeatSpacing.nanoseconds
        let due = workers[w].lastHeartbeat == .min ? now : workers[w].lastHeartbeat + spacing
        if due <= now {
            sendHeartbeat(w)
        } else if !workers[w].heartbeatPending {
            workers[w].heartbeatPending = true
            queue.schedule(.spacedHeartbeat, at: due, index: w)
        }
    }

    // MARK: Routing

    /// The router's route loop (`Router.place`): choose, reserve, offer; on a refusal release and try the next.
    mutating func route(router r: Int, region: Int, duration: Int64) {
        let counted = now >= warmupEnd
        let at = instant(now)
        var needs = Scheduler.Needs(region: regionNames[region], locality: .preferred)
        while needs.tried.count < configuration.maxOffers {
            let decision = schedulers[r].choose(needs, in: registries[r], using: &randoms[r])
            guard let chosen = decision.chosen, let token = registries[r].reserve(chosen.workerID, now: at),
                  let w = workerIndex[chosen.workerID] else { break }
            needs.tried.insert(chosen.workerID)
            guard !workers[w].isFull else {
                registries[r].release(chosen.workerID, token: token)
                if counted { stats.offersRefused += 1 }
                continue
            }
            workers[w].calls += 1
            workers[w].heartbeat.accepted += 1
            registries[r].accepted(chosen.workerID, token: token, acceptSeq: workers[w].heartbeat.accepted)
            queue.schedule(.callEnd, at: now + duration, index: w)
            if counted {
                stats.placed += 1
                if workers[w].region == region { stats.local += 1 }
                workers[w].peakCalls = max(workers[w].peakCalls, workers[w].calls)
            }
            if workers[w].isFull || configuration.heartbeatOnAccept { heartbeatSoon(w) }  // full now, or each accept: say so
            return
        }
        if counted { stats.refused += 1 }
    }

    // MARK: Statistics

    /// Balance now: the fullest worker's fill over the mean fill.
    mutating func sample() {
        var maxFill = 0.0, sumFill = 0.0, calls = 0
        for worker in workers {
            let fill = Double(worker.calls) / Double(worker.capacity)
            maxFill = max(maxFill, fill)
            sumFill += fill
            calls += worker.calls
        }
        let meanFill = sumFill / Double(workers.count)
        stats.samples += 1
        stats.callsSum += Double(calls) / Double(workers.count)
        if meanFill > 0 {
            let ratio = maxFill / meanFill
            stats.balanceSum += ratio
            stats.worstBalance = max(stats.worstBalance, ratio)
        }
    }
}

/// Counters of one run, after the warm-up.
struct SimulationStats {
    var placed = 0, refused = 0, offersRefused = 0, local = 0
    var samples = 0, events = 0, heartbeats = 0, livenessEvents = 0
    var balanceSum = 0.0, worstBalance = 0.0, callsSum = 0.0

    func result(strategy: String, workers: [SimWorker]) -> SimulationResult {
        let peaks = workers.map { $0.workerClass.cpu(calls: $0.peakCalls) }.sorted()
        let p99 = peaks.isEmpty ? 0 : peaks[max(0, min(peaks.count - 1, Int((0.99 * Double(peaks.count)).rounded(.up)) - 1))]
        return SimulationResult(
            strategy: strategy, balance: samples > 0 ? balanceSum / Double(samples) : 0, worstBalance: worstBalance,
            meanCallsPerWorker: samples > 0 ? callsSum / Double(samples) : 0, p99PeakCPU: p99, placed: placed,
            refusedForCapacity: refused, offersRefused: offersRefused,
            localityHitRate: placed > 0 ? Double(local) / Double(placed) : 0, samples: samples, events: events,
            heartbeats: heartbeats, livenessEvents: livenessEvents)
    }
}

fileprivate extension Duration {
    /// Whole nanoseconds (simulated time is kept as nanoseconds since the start).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

fileprivate extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
