/// A worker's account of the records it still has to put right. Pure.
///
/// - An end whose write failed (Redis did not answer) is kept with its real reason and written again at
///   each refresh, until Redis takes it: a call's record never stays `active` after the call is over.
/// - A call that the worker's set in Redis lists but the worker does not hold (it ended while Redis was
///   away, or a bug let go of it) is a stray. It is repaired (its record ended `not_running` if it still
///   names this worker, else only left out of the set) once it has been seen stray at two refreshes in a
///   row: a call whose start or end is in flight at one refresh is never taken for a stray.
public struct RecordRepair: Sendable, Equatable {
    public struct PendingEnd: Sendable, Equatable {
        public var callID: String
        public var tenant: String
        public var epoch: Int64
        public var reason: EndReason
        public init(callID: String, tenant: String, epoch: Int64, reason: EndReason) {
            self.callID = callID
            self.tenant = tenant
            self.epoch = epoch
            self.reason = reason
        }
    }

    /// Ends kept at most: beyond, the oldest are dropped (their records expire with their TTL).
    public let maxPending: Int
    public private(set) var pendingEnds: [String: PendingEnd] = [:]
    private var order: [String] = []
    private var seenStray: Set<String> = []

    public init(maxPending: Int = 10_000) {
        self.maxPending = maxPending
    }

    /// Keeps an end to write again; returns the end dropped to make room, if any.
    @discardableResult
    public mutating func endFailed(_ end: PendingEnd) -> PendingEnd? {
        if pendingEnds.updateValue(end, forKey: end.callID) == nil { order.append(end.callID) }
        guard pendingEnds.count > maxPending, let oldest = order.first else { return nil }
        order.removeFirst()
        return pendingEnds.removeValue(forKey: oldest)
    }

    /// The end is in Redis now (or moot: another worker holds the call).
    public mutating func endWritten(_ callID: String) {
        guard pendingEnds.removeValue(forKey: callID) != nil else { return }
        order.removeAll { $0 == callID }
    }

    /// Takes what the worker's set lists and what the worker holds (read after the set); returns the strays to
    /// repair now: listed but not held at this refresh and the one before, and not pending an end (those
    /// are written with their own reason).
    public mutating func listed(_ listed: Set<String>, holding: Set<String>) -> [String] {
        let strays = listed.subtracting(holding).subtracting(pendingEnds.keys)
        defer { seenStray = strays }
        return strays.intersection(seenStray).sorted()
    }
}
