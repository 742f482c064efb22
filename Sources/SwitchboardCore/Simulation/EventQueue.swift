/// A simulator event: what happens, to which worker or router, and when.
struct SimEvent {
    enum Kind: UInt8 {
        case arrival, callEnd, heartbeat, spacedHeartbeat, tick, sample
    }

    /// Nanoseconds since the simulation started.
    var time: Int64
    /// Scheduling order: events at the same time run in the order they were scheduled.
    var order: UInt64
    var kind: Kind
    /// The worker (call end, heartbeat) or router (tick).
    var index: Int32

    func precedes(_ other: SimEvent) -> Bool {
        time != other.time ? time < other.time : order < other.order
    }
}

/// A binary min-heap of events by time, then scheduling order: deterministic.
struct EventQueue {
    private var heap: [SimEvent] = []
    private var scheduled: UInt64 = 0

    var count: Int { heap.count }

    mutating func schedule(_ kind: SimEvent.Kind, at time: Int64, index: Int = 0) {
        scheduled &+= 1
        heap.append(SimEvent(time: time, order: scheduled, kind: kind, index: Int32(index)))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> SimEvent? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let first = heap[0]
        heap[0] = last
        var parent = 0
        let count = heap.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { break }
            var child = left
            if left + 1 < count && heap[left + 1].precedes(heap[left]) { child = left + 1 }
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            parent = child
        }
        return first
    }
}
