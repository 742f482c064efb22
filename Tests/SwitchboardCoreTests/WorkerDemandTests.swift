import SwitchboardCore
import Testing

@Suite struct WorkerDemandTests {
    typealias W = WorkerDemand.Worker
    let key = WorkerDemand.Key(version: "2", region: "eu")

    @Test func anEligibleVersionNeedsTheWorkersThatBringUseToTheTarget() {
        // 4 workers of 10 slots hold 35 calls: at 70% a worker holds 7, so 5 workers.
        let workers = [W(version: "2", region: "eu", calls: 10, capacity: 10), W(version: "2", region: "eu", calls: 10, capacity: 10),
                       W(version: "2", region: "eu", calls: 10, capacity: 10), W(version: "2", region: "eu", calls: 5, capacity: 10)]
        let need = WorkerDemand.needs(workers, policy: .none, target: 0.7)[key]
        #expect(need == .init(inUse: 35, capacity: 40, workers: 4, desired: 5))
        // At a 100% target, 4 are enough; at 50%, 7.
        #expect(WorkerDemand.needs(workers, policy: .none, target: 1)[key]?.desired == 4)
        #expect(WorkerDemand.needs(workers, policy: .none, target: 0.5)[key]?.desired == 7)
        // No calls: no need (the autoscaler's minimum is the floor).
        #expect(WorkerDemand.needs([W(version: "2", region: "eu", calls: 0, capacity: 10)], policy: .none, target: 0.7)[key]?.desired == 0)
    }

    @Test func anOutdatedVersionNeedsOnlyItsWorkersStillHoldingCalls() {
        let policy = DeployPolicy(revision: 3, active: "2")
        let workers = [W(version: "1", region: "eu", calls: 4, capacity: 10), W(version: "1", region: "eu", calls: 0, capacity: 10),
                       W(version: "1", region: "eu", calls: 1, capacity: 10), W(version: "2", region: "eu", calls: 7, capacity: 10)]
        let needs = WorkerDemand.needs(workers, policy: policy, target: 0.7)
        #expect(needs[.init(version: "1", region: "eu")] == .init(inUse: 5, capacity: 30, workers: 3, desired: 2))
        #expect(needs[key]?.desired == 1)
    }

    @Test func versionsAndRegionsAreCountedApartAndACanaryIsEligible() {
        let policy = DeployPolicy(revision: 3, active: "1", canary: .init(version: "2", percent: 10))
        let workers = [W(version: "1", region: "eu", calls: 8, capacity: 10), W(version: "1", region: "eu", calls: 6, capacity: 10),
                       W(version: "1", region: "us", calls: 3, capacity: 10),
                       W(version: "2", region: "eu", calls: 8, capacity: 10)]
        let needs = WorkerDemand.needs(workers, policy: policy, target: 0.7)
        #expect(needs.count == 3)
        #expect(needs[.init(version: "1", region: "eu")]?.desired == 2)
        #expect(needs[.init(version: "1", region: "us")]?.desired == 1)
        #expect(needs[key]?.desired == 2)
    }
}
