import SwitchboardCore
import Testing

@Suite struct WorkerSlotsTests {
    @Test func acceptsUpToCapacityThenRefusesFull() {
        var slots = WorkerSlots(capacity: 2)
        #expect(slots.offer("a") == .accept)
        #expect(slots.offer("a") == .refuse(.duplicate))
        #expect(slots.offer("b") == .accept)
        #expect(slots.offer("c") == .refuse(.full))
        let ended = slots.end("a")
        let endedAgain = slots.end("a")
        #expect(ended)
        #expect(!endedAgain)
        #expect(slots.offer("c") == .accept)
        #expect(slots.activeCalls == 2)
    }

    @Test func drainingAndStoppingRefuseButKeepCalls() {
        var slots = WorkerSlots(capacity: 5)
        #expect(slots.offer("a") == .accept)
        let changed = slots.setState(.draining)
        let changedAgain = slots.setState(.draining)
        #expect(changed)
        #expect(!changedAgain)
        #expect(slots.offer("b") == .refuse(.draining))
        #expect(slots.calls == ["a"])
        slots.setState(.stopping)
        #expect(slots.offer("b") == .refuse(.stopping))
    }

    @Test func zeroCapacityTakesNothing() {
        var slots = WorkerSlots(capacity: 0)
        #expect(slots.offer("a") == .refuse(.full))
    }
}

@Suite struct WorkerSlotsOutdatedTests {
    @Test func anOutdatedWorkerRefusesNewCallsUnderItsRevisionAndTakesMovesAndNewerPolicies() {
        var slots = WorkerSlots(capacity: 5)
        let changed = slots.setOutdated(7)
        #expect(changed)
        #expect(slots.reportedState == .outdated && slots.state == .ready)
        #expect(slots.offer("a") == .refuse(.outdated), "a router that knows no policy")
        #expect(slots.offer("a", deployRevision: 6) == .refuse(.outdated), "an older policy")
        #expect(slots.offer("a", deployRevision: 7) == .refuse(.outdated))
        #expect(slots.offer("a", resume: true, deployRevision: 7) == .accept, "a call moving to its own version")
        #expect(slots.offer("b", deployRevision: 8) == .accept, "the router knows a newer policy (a rollback)")
        slots.setState(.draining)
        #expect(slots.reportedState == .draining)
        #expect(slots.offer("c", resume: true) == .refuse(.draining))
        slots.setState(.ready)
        let current = slots.setOutdated(nil)
        let again = slots.setOutdated(nil)
        #expect(current && !again)
        #expect(slots.reportedState == .ready && slots.offer("c") == .accept)
    }
}
