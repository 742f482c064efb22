/// One worker as a router sees it, with its score inputs: `GET /v1/workers` and `switchboard status`.
public struct WorkerView: Codable, Sendable, Equatable {
    public var id: String
    public var version: String
    public var region: String
    public var zone: String
    public var state: String
    /// `alive`, `suspect` (silent for 2 intervals, being pinged) or `unreachable` (silent with much of the
    /// fleet: kept, not failed over).
    public var liveness: String
    public var capacity: Int
    public var activeCalls: Int
    /// Calls this router placed that the worker's last heartbeat does not show yet.
    public var reserved: Int
    public var freeSlots: Int
    /// As reported.
    public var cpu: Double
    public var memoryUsedBytes: Int64
    public var memoryLimitBytes: Int64
    /// As this router projects it (report plus reservations) and scores it, for a call with no locality.
    public var load: Scheduler.Load
    public var score: Scheduler.Score
    public var lastHeartbeatAgeMs: Int
    /// The drain under way, if any: its deadline and what then (progress is `active_calls` going to 0).
    public var drain: DrainRequest?

    enum CodingKeys: String, CodingKey {
        case id, version, region, zone, state, liveness, capacity, reserved, cpu, load, score, drain
        case activeCalls = "active_calls", freeSlots = "free_slots", memoryUsedBytes = "memory_used_bytes"
        case memoryLimitBytes = "memory_limit_bytes", lastHeartbeatAgeMs = "last_heartbeat_age_ms"
    }

    public init(_ entry: WorkerRegistry.Entry, scheduler: Scheduler, now: ContinuousClock.Instant) {
        let hb = entry.heartbeat
        id = hb.workerID
        version = hb.version
        region = hb.region
        zone = hb.zone
        // A drain asked for but not yet in a heartbeat already counts: no call is placed there.
        state = entry.drain != nil && (hb.state == .ready || hb.state == .outdated) ? WorkerState.draining.rawValue : hb.state.rawValue
        drain = entry.drain
        liveness = entry.liveness.rawValue
        capacity = hb.capacity
        activeCalls = hb.activeCalls
        reserved = entry.reserved
        freeSlots = entry.freeSlots
        cpu = hb.cpu
        memoryUsedBytes = hb.memoryUsedBytes
        memoryLimitBytes = hb.memoryLimitBytes
        load = scheduler.load(entry)
        score = scheduler.score(entry, Scheduler.Needs())
        lastHeartbeatAgeMs = Int((now - entry.lastHeard).milliseconds)
    }
}

/// `GET /v1/workers`: the workers and totals.
public struct WorkersView: Codable, Sendable, Equatable {
    public var workers: [WorkerView]
    public var totals: [String: Int]

    public init(_ workers: [WorkerView]) {
        self.workers = workers
        let placeable = workers.filter { $0.state == WorkerState.ready.rawValue && $0.liveness == "alive" }
        totals = [
            "workers": workers.count,
            "ready": placeable.count,
            "suspect": workers.filter { $0.liveness == "suspect" }.count,
            "unreachable": workers.filter { $0.liveness == "unreachable" }.count,
            "draining": workers.filter { $0.state == WorkerState.draining.rawValue }.count,
            "outdated": workers.filter { $0.state == WorkerState.outdated.rawValue }.count,
            "capacity": workers.reduce(0) { $0 + $1.capacity },
            "active_calls": workers.reduce(0) { $0 + $1.activeCalls },
            "free_slots": placeable.reduce(0) { $0 + $1.freeSlots },
        ]
    }
}
