import SwitchboardCore
import Testing

@Suite("DeadlineQueue")
struct DeadlineQueueTests {
    @Test func popsDueEntriesEarliestFirstAndKeepsTheRest() {
        var queue = DeadlineQueue()
        var generator = SystemRandomNumberGenerator()
        let deadlines = (0..<500).map { _ in UInt64.random(in: 0..<10_000, using: &generator) }
        for (id, deadline) in deadlines.enumerated() { queue.insert(.init(deadline: deadline, id: UInt64(id))) }
        #expect(queue.count == 500)
        #expect(queue.earliest == deadlines.min())

        let due = queue.popDue(at: 4_999)
        let expected = deadlines.enumerated().filter { $0.element <= 4_999 }
        #expect(Set(due) == Set(expected.map { UInt64($0.offset) }))
        #expect(due.map { deadlines[Int($0)] } == due.map { deadlines[Int($0)] }.sorted())
        #expect(queue.count == 500 - expected.count)
        #expect((queue.earliest ?? 0) > 4_999)

        #expect(queue.popDue(at: 4_999).isEmpty)
        #expect(queue.popDue(at: .max).count == 500 - expected.count)
        #expect(queue.earliest == nil)
    }
}
