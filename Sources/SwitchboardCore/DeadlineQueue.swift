/// Deadlines of many outstanding operations, earliest first: a binary min-heap of (deadline, id).
///
/// Entries are never removed early: an operation that finishes before its deadline leaves its entry behind,
/// and whoever pops it checks whether the id is still outstanding. That keeps finishing an operation free
/// and lets one timer serve every deadline, armed only for the earliest.
public struct DeadlineQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        public var deadline: UInt64  // nanoseconds on a monotonic clock
        public var id: UInt64
        public init(deadline: UInt64, id: UInt64) {
            self.deadline = deadline
            self.id = id
        }
    }

    private var heap: [Entry] = []

    public init() {}

    public var count: Int { heap.count }
    public var earliest: UInt64? { heap.first?.deadline }

    public mutating func insert(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the ids of every entry due at `now`, earliest first.
    public mutating func popDue(at now: UInt64) -> [UInt64] {
        var due: [UInt64] = []
        while let first = heap.first, first.deadline <= now {
            due.append(first.id)
            removeFirst()
        }
        return due
    }

    private mutating func removeFirst() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count, heap[right].deadline < heap[smallest].deadline { smallest = right }
            guard smallest != parent else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
