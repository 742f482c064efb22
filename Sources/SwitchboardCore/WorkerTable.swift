/// A router's live view of the workers, built from their heartbeats. Pure: time is an input.
///
/// A worker not heard from for `goneAfter` heartbeat intervals is dropped. Each entry also counts this
/// router's offers in flight to the worker, so two calls offered at once do not both count on one free slot.
public struct WorkerTable: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public struct Entry: Sendable, Equatable {
        public var heartbeat: Heartbeat
        public var lastSeen: Instant
        /// Offers this router has made to the worker that its last heartbeat does not yet reflect.
        public var inFlight: Int

        public var id: String { heartbeat.workerID }
        /// Free slots by the worker's report, less this router's offers in flight.
        public var freeSlots: Int { max(0, heartbeat.capacity - heartbeat.activeCalls - inFlight) }
        /// Share of capacity in use, counting offers in flight: 0 (idle) ... 1 (full).
        public var load: Double {
            guard heartbeat.capacity > 0 else { return 1 }
            return min(1, Double(heartbeat.activeCalls + inFlight) / Double(heartbeat.capacity))
        }
    }

    public enum IngestResult: Equatable, Sendable {
        case joined, updated, stale
    }

    public private(set) var entries: [String: Entry] = [:]
    public var heartbeatInterval: Duration
    public var goneAfter: Int

    public init(heartbeatInterval: Duration = .seconds(1), goneAfter: Int = 3) {
        self.heartbeatInterval = heartbeatInterval
        self.goneAfter = goneAfter
    }

    /// Takes a heartbeat. One older than the last seen from the same worker process is ignored.
    @discardableResult
    public mutating func ingest(_ heartbeat: Heartbeat, now: Instant) -> IngestResult {
        guard var entry = entries[heartbeat.workerID] else {
            entries[heartbeat.workerID] = Entry(heartbeat: heartbeat, lastSeen: now, inFlight: 0)
            return .joined
        }
        if entry.heartbeat.incarnation == heartbeat.incarnation && heartbeat.seq <= entry.heartbeat.seq {
            return .stale
        }
        entry.heartbeat = heartbeat
        entry.lastSeen = now
        entry.inFlight = 0  // the worker's report now counts what we offered before it
        entries[heartbeat.workerID] = entry
        return .updated
    }

    /// Drops workers not heard from for `goneAfter` intervals; returns their ids.
    public mutating func expire(now: Instant) -> [String] {
        let limit = heartbeatInterval * goneAfter
        let gone = entries.values.filter { now - $0.lastSeen >= limit }.map(\.id)
        for id in gone { entries.removeValue(forKey: id) }
        return gone.sorted()
    }

    /// Removes a worker at once (it said it is leaving).
    public mutating func remove(_ workerID: String) { entries.removeValue(forKey: workerID) }

    /// Workers heard from within the limit, sorted by id.
    public func live(now: Instant) -> [Entry] {
        let limit = heartbeatInterval * goneAfter
        return entries.values.filter { now - $0.lastSeen < limit }.sorted { $0.id < $1.id }
    }

    /// The least loaded worker that is ready, alive, has a free slot, is in `region` when one is required,
    /// and is not in `excluding` (already tried for this call). Ties go to the lower CPU, then the id.
    public func leastLoaded(region: String?, excluding: Set<String> = [], now: Instant) -> Entry? {
        let limit = heartbeatInterval * goneAfter
        var best: Entry?
        for entry in entries.values {
            guard entry.heartbeat.state == .ready, entry.freeSlots > 0, now - entry.lastSeen < limit,
                  !excluding.contains(entry.id), region == nil || entry.heartbeat.region == region
            else { continue }
            if let b = best {
                if (entry.load, entry.heartbeat.cpu, entry.id) < (b.load, b.heartbeat.cpu, b.id) { best = entry }
            } else {
                best = entry
            }
        }
        return best
    }

    /// Counts an offer in flight to `workerID` until its next heartbeat.
    public mutating func reserve(_ workerID: String) { entries[workerID]?.inFlight += 1 }

    /// Takes back an offer that was refused or timed out.
    public mutating func release(_ workerID: String) {
        if let n = entries[workerID]?.inFlight, n > 0 { entries[workerID]?.inFlight = n - 1 }
    }
}
