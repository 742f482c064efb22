import Testing
@testable import SwitchboardCore

/// The balance simulator driving the real scheduler: 100 equal workers of 200 calls at 70% (140 calls each
/// on average, so one call is 0.7% of the mean), 8 routers, 1 s heartbeats, a fixed seed. Runs are short
/// (a debug build simulates ~150 s per second); the figures for hours of simulated time are in
/// docs/benchmarks.md. Serialized: each run holds a cooperative thread for a while, and the rest of the test
/// run needs the other.
@Suite(.serialized) struct SimulatorTests {
    static func fleet(seed: UInt64 = 7, utilization: Double = 0.7, regions: [SimulationConfiguration.RegionShare]? = nil,
                      warmup: Int = 300, measured: Int = 900, heartbeatOnAccept: Bool = true) -> SimulationConfiguration {
        var c = SimulationConfiguration()
        c.heartbeatOnAccept = heartbeatOnAccept
        c.workers = 100
        c.routers = 8
        c.heartbeatInterval = .seconds(1)
        c.classes = SimulationConfiguration.homogeneousClasses(cores: 8, callsPerCore: 25)
        c.utilization = utilization
        if let regions { c.regions = regions }
        c.warmup = .seconds(warmup)
        c.duration = .seconds(measured)
        c.seed = seed
        return c
    }

    static let spread = SimulationStrategy(Scheduler.Configuration())
    static let leastLoaded = SimulationStrategy(Scheduler.Configuration(strategy: .leastLoaded, localCorrection: true))

    static func run(_ c: SimulationConfiguration, _ s: SimulationStrategy) -> SimulationResult {
        BalanceSimulator(configuration: c, strategy: s).run()
    }

    /// Every caller and worker in one region, so the figure is the scheduler's alone (with two regions and
    /// preferred locality each region's own arrivals also swing its mean; see the locality test).
    static let oneRegion = run(fleet(regions: [.init("eu", 1)]), spread)

    /// The default (four choices, local correction, workers heartbeating on each accept) keeps 8 routers'
    /// fleet within 2% of even; with heartbeats only every second (how workers did before) the same fleet is
    /// further off, since every router keeps picking from the same second-old view.
    @Test func spreadWithHeartbeatsOnAcceptKeepsTheFleetWithinTwoPercent() {
        let result = Self.oneRegion
        #expect(result.meanCallsPerWorker > 130 && result.meanCallsPerWorker < 150)
        #expect(result.balance <= 1.02, "max/mean \(result.balance)")
        #expect(result.refusedForCapacity == 0)
        #expect(result.livenessEvents == 0)
        let periodic = Self.run(Self.fleet(regions: [.init("eu", 1)], heartbeatOnAccept: false), Self.spread)
        #expect(periodic.balance >= result.balance + 0.005, "periodic heartbeats \(periodic.balance), on accept \(result.balance)")
    }

    /// Greedy least-loaded herds: every router sends its calls to the same worker until the next heartbeat.
    @Test func greedyLeastLoadedHerdsOntoTheSameWorkers() {
        let greedy = Self.run(Self.fleet(regions: [.init("eu", 1)], warmup: 60, measured: 240, heartbeatOnAccept: false), Self.leastLoaded)
        #expect(greedy.balance >= 1.06, "least loaded max/mean \(greedy.balance)")
        #expect(greedy.balance >= Self.oneRegion.balance + 0.04, "least loaded \(greedy.balance), spread \(Self.oneRegion.balance)")
    }

    @Test func sameSeedSameResultOtherSeedAnother() {
        let c = Self.fleet(warmup: 60, measured: 120)
        let first = Self.run(c, Self.spread)
        #expect(Self.run(c, Self.spread) == first)
        var other = c
        other.seed = 8
        #expect(Self.run(other, Self.spread) != first)
    }

    @Test func preferredLocalityStaysInTheCallersRegionWhenItHasRoom() {
        let result = Self.run(Self.fleet(warmup: 120, measured: 300), Self.spread)
        #expect(result.placed > 10_000)
        #expect(result.localityHitRate >= 0.999, "locality \(result.localityHitRate)")
        #expect(result.balance <= 1.045, "max/mean across both regions \(result.balance)")
    }

    @Test func overloadIsRefusedForCapacity() {
        let result = Self.run(Self.fleet(utilization: 1.3, warmup: 60, measured: 180), Self.spread)
        #expect(result.refusedForCapacity > 1_000, "refused \(result.refusedForCapacity)")
        #expect(result.placed > 5_000)
        #expect(result.p99PeakCPU >= 0.79)
    }

    @Test func regionSplitIsParsedAndChecked() throws {
        #expect(try SimulationConfiguration.parseRegions("eu:50,us:50") == [.init("eu", 50), .init("us", 50)])
        #expect(throws: SwitchboardError.self) { try SimulationConfiguration.parseRegions("eu:50,us") }
        #expect(throws: SwitchboardError.self) { try SimulationConfiguration.parseRegions("eu:0") }
        #expect(throws: SwitchboardError.self) { try SimulationConfiguration.parseRegions("eu:1,eu:2") }
        var c = SimulationConfiguration()
        c.workers = 10
        c.regions = [.init("eu", 3), .init("us", 1), .init("ap", 1)]
        #expect(c.workersPerRegion() == [6, 2, 2])
    }
}
