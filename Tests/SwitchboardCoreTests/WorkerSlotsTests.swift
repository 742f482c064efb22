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
