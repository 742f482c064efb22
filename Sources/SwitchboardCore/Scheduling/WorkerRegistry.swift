/// A router's live view of the fleet, built from heartbeats. Pure: time is an input.
///
/// - Liveness, doubting the observer first (see docs/decisions/0008-failure-detection.md): a worker silent
///   for `suspectAfter` heartbeat intervals is suspect (no new calls; the router pings it). It is dead only on
///   evidence: its direct ping failed while this router was connected, not just back from a stall or a
///   reconnect, and not in a mass silence. When more than `unreachableShare` of the fleet (or every worker
///   of a zone) falls silent at once, the silent workers are `unreachable` instead: no new calls, no
///   failover. A router that was cut off from NATS or whose own ticks stalled past the suspect time treats
///   every worker as just heard and judges nobody for a full detection time (`deadAfter` intervals). A
///   heartbeat older than the last one seen from the same worker process is ignored.
/// - Local correction: every offer this router makes reserves a slot on the worker until a heartbeat shows
///   the worker counted it (its `accepted` count reaches the accept's sequence number), the offer is
///   refused, or the reservation expires. Routers working from the same second-old heartbeats do not all
///   pile onto the worker that looked emptiest.
/// - Index: placeable workers (ready and alive) are kept in pools by version and region, so a decision
///   samples the pools it may use instead of scanning the fleet.
public struct WorkerRegistry: Sendable {
    public typealias Instant = ContinuousClock.Instant

    public struct Configuration: Sendable, Equatable {
        public var heartbeatInterval: Duration = .seconds(1)
        /// Intervals of silence before a worker is suspect (and pinged).
        public var suspectAfter = 2
        /// Intervals of silence before a worker is probed early (nil: never): pinged while still alive, on the
        /// chance that its connection is gone. Only the server's "no responders" is a verdict then (a killed
        /// process's socket is closed by its kernel at once); a timeout is none (a frozen or busy worker keeps its
        /// connection), and the suspect time decides as before.
        public var probeAfter: Double? = 1.25
        /// The full detection time, in intervals: how long a router back from a stall or a disconnection
        /// waits before it judges anyone, and how often a suspect that no verdict could be reached on is
        /// pinged again.
        public var deadAfter = 3
        /// How long a reservation lasts at most (an offer never answered, a heartbeat never received).
        public var reservationTimeout: Duration = .seconds(3)
        /// The disruption guard: when more than this share of the fleet is silent at once (at least two
        /// workers), the silence is taken for the observer's fault and nobody is failed over.
        public var unreachableShare = 0.5

        public init(heartbeatInterval: Duration = .seconds(1), suspectAfter: Int = 2, deadAfter: Int = 3,
                    reservationTimeout: Duration? = nil, unreachableShare: Double = 0.5) {
            self.heartbeatInterval = heartbeatInterval
            self.suspectAfter = suspectAfter
            self.deadAfter = deadAfter
            self.reservationTimeout = reservationTimeout ?? heartbeatInterval * 3
            self.unreachableShare = unreachableShare
        }

        /// Silence past which a worker is suspect; also a gap between two ticks past which this router takes
        /// itself to have stalled.
        public var suspectTime: Duration { heartbeatInterval * suspectAfter }
        public var probeTime: Duration? { probeAfter.map { heartbeatInterval * $0 } }
        public var detectionTime: Duration { heartbeatInterval * max(deadAfter, suspectAfter) }
    }

    public enum Liveness: String, Codable, Sendable {
        case alive, suspect
        /// Silent together with much of the fleet (or its whole zone): no new calls, no failover.
        case unreachable
    }

    public struct Reservation: Sendable, Equatable {
        public var token: UInt64
        /// Set when the worker accepted: the heartbeat whose `accepted` reaches it counts the call.
        public var acceptSeq: UInt64?
        public var expires: Instant
    }

    public struct Entry: Sendable, Equatable {
        public var heartbeat: Heartbeat
        public var lastHeard: Instant
        public var liveness: Liveness
        public var reservations: [Reservation] = []
        /// When this router last asked the worker for a heartbeat directly: a suspect's ping, or an alive but
        /// late worker's probe (nil: none out).
        public var pingSentAt: Instant?
        /// An operator's drain of this worker, known before (or without) the worker's heartbeat saying so.
        public var drain: DrainRequest?

        public var id: String { heartbeat.workerID }
        /// Calls this router placed (or is placing) that the worker's last heartbeat does not show yet.
        public var reserved: Int { reservations.count }
        /// Free slots by the worker's report, less this router's reservations.
        public var freeSlots: Int { max(0, heartbeat.capacity - heartbeat.activeCalls - reserved) }
        /// Ready (or outdated: the router's deploy policy decides), alive and not being drained: may be offered
        /// calls.
        public var isPlaceable: Bool {
            (heartbeat.state == .ready || heartbeat.state == .outdated) && liveness == .alive && (drain?.isWorkersOwn ?? true)
        }
    }

    public enum IngestResult: String, Equatable, Sendable {
        case joined, updated, stale
        /// It was suspect and is heard from again.
        case recovered
        /// A new process under the same id (its incarnation changed).
        case restarted
    }

    public enum LivenessEvent: Equatable, Sendable {
        /// Silent for `suspectAfter` intervals: ping it.
        case suspect(String)
        /// Still suspect, no verdict yet (this router could not judge when its last ping failed): ping again.
        case ping(String)
        /// Late by `probeAfter` intervals, not yet suspect: ping it early; only "no responders" is a verdict.
        case probe(String)
        /// Silent in a mass silence: kept, not failed over.
        case unreachable([String], Disruption)
        /// This router's own ticks stalled (or it was cut off from NATS) for this long: every worker counts
        /// as just heard, and nobody is judged for a detection time.
        case selfSuspected(Duration)
    }

    struct PoolKey: Hashable, Sendable {
        var version: String
        var region: String
    }

    public let configuration: Configuration
    public internal(set) var entries: [String: Entry] = [:]
    /// Drains under way, by worker id (kept for workers not heard from yet, e.g. after a router restart).
    public private(set) var drains: [String: DrainRequest] = [:]
    private(set) var pools: [PoolKey: IndexedIDs] = [:]
    private var nextToken: UInt64 = 0
    /// The observer's own health (see `WorkerRegistry+Liveness.swift`).
    var lastTick: Instant?
    var firstTick: Instant?
    var connected = true
    /// No worker is judged dead before this instant (a detection time after a stall or a reconnection).
    public internal(set) var judgeAfter: Instant?
    /// The mass silence in force, if any.
    public internal(set) var disruption: Disruption?

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    // MARK: Heartbeats and liveness

    /// Takes a heartbeat (or a ping's answer, which is one).
    @discardableResult
    public mutating func ingest(_ heartbeat: Heartbeat, now: Instant) -> IngestResult {
        guard var entry = entries[heartbeat.workerID] else {
            update(Entry(heartbeat: heartbeat, lastHeard: now, liveness: .alive, drain: drains[heartbeat.workerID]))
            return .joined
        }
        let result: IngestResult
        if entry.heartbeat.incarnation != heartbeat.incarnation {
            entry.reservations.removeAll()  // a new process: nothing we offered the old one stands
            result = .restarted
        } else if heartbeat.seq <= entry.heartbeat.seq {
            return .stale
        } else {
            entry.reservations.removeAll { $0.acceptSeq.map { $0 <= heartbeat.accepted } ?? false }
            result = entry.liveness != .alive ? .recovered : .updated
        }
        entry.heartbeat = heartbeat
        entry.lastHeard = now
        entry.liveness = .alive
        entry.pingSentAt = nil
        update(entry)
        return result
    }

    /// Drops a worker at once (it failed its ping, or said it is leaving).
    public mutating func remove(_ workerID: String) {
        guard let old = entries.removeValue(forKey: workerID) else { return }
        if old.isPlaceable { pools[PoolKey(old)]?.remove(workerID) }
    }

    // MARK: Drains

    /// A drain began (or nil: it was cancelled or finished): the worker is no longer offered calls from now,
    /// whatever its last heartbeat said.
    public mutating func setDrain(_ workerID: String, _ drain: DrainRequest?) {
        drains[workerID] = drain
        guard var entry = entries[workerID] else { return }
        entry.drain = drain
        update(entry)
    }

    // MARK: Reservations

    /// Counts an offer to `workerID` from now on; returns the token to settle it with.
    public mutating func reserve(_ workerID: String, now: Instant) -> UInt64? {
        guard var entry = entries[workerID] else { return nil }
        nextToken &+= 1
        entry.reservations.append(Reservation(token: nextToken, acceptSeq: nil, expires: now + configuration.reservationTimeout))
        entries[workerID] = entry
        return nextToken
    }

    /// The worker accepted: keep counting the call until a heartbeat with `accepted >= acceptSeq`.
    public mutating func accepted(_ workerID: String, token: UInt64, acceptSeq: UInt64) {
        guard var entry = entries[workerID], let i = entry.reservations.firstIndex(where: { $0.token == token }) else { return }
        if acceptSeq <= entry.heartbeat.accepted {
            entry.reservations.remove(at: i)  // the worker's latest heartbeat already counts it
        } else {
            entry.reservations[i].acceptSeq = acceptSeq
        }
        entries[workerID] = entry
    }

    /// The offer was refused or failed: the slot was never taken.
    public mutating func release(_ workerID: String, token: UInt64) {
        entries[workerID]?.reservations.removeAll { $0.token == token }
    }

    /// Some offer of this router's is out with no answer yet (a reservation with no accept to settle it).
    public var hasUnansweredOffers: Bool {
        entries.values.contains { $0.reservations.contains { $0.acceptSeq == nil } }
    }

    // MARK: Views

    /// Free slots on the workers that may be offered calls (less this router's reservations), counted up to
    /// `limit` at most: a large fleet with room is not gone through whole to learn that it has some.
    public func placeableFreeSlots(upTo limit: Int = .max) -> Int {
        var free = 0
        for pool in pools.values {
            for id in pool.ids {
                free += entries[id]?.freeSlots ?? 0
                if free >= limit { return free }
            }
        }
        return free
    }

    /// Every known worker (suspect ones included), sorted by id.
    public var sorted: [Entry] { entries.values.sorted { $0.id < $1.id } }

    /// The pools of placeable workers a call may use: those of `versions` (nil: any) in `region` (nil: any),
    /// in key order (a dictionary's order differs between processes; a seeded decision must not).
    func pools(versions: Set<String>?, region: String?) -> [IndexedIDs] {
        var found: [(key: PoolKey, pool: IndexedIDs)] = []
        for (key, pool) in pools
        where !pool.isEmpty && (versions?.contains(key.version) ?? true) && (region.map { $0 == key.region } ?? true) {
            found.append((key, pool))
        }
        if found.count > 1 { found.sort { ($0.key.version, $0.key.region) < ($1.key.version, $1.key.region) } }
        return found.map(\.pool)
    }

    /// Stores `entry` and keeps its pool membership right.
    mutating func update(_ entry: Entry) {
        let old = entries.updateValue(entry, forKey: entry.id)
        let oldKey = old.flatMap { $0.isPlaceable ? PoolKey($0) : nil }
        let newKey = entry.isPlaceable ? PoolKey(entry) : nil
        guard oldKey != newKey else { return }
        if let oldKey { pools[oldKey]?.remove(entry.id) }
        if let newKey { pools[newKey, default: IndexedIDs()].insert(entry.id) }
    }
}

extension WorkerRegistry.PoolKey {
    init(_ entry: WorkerRegistry.Entry) {
        self.init(version: entry.heartbeat.version, region: entry.heartbeat.region)
    }
}

/// A set of ids with O(1) insert, remove and pick-by-position (for uniform random sampling).
struct IndexedIDs: Sendable {
    private(set) var ids: [String] = []
    private var positions: [String: Int] = [:]

    var count: Int { ids.count }
    var isEmpty: Bool { ids.isEmpty }
    subscript(position: Int) -> String { ids[position] }

    mutating func insert(_ id: String) {
        guard positions[id] == nil else { return }
        positions[id] = ids.count
        ids.append(id)
    }

    mutating func remove(_ id: String) {
        guard let position = positions.removeValue(forKey: id) else { return }
        let last = ids.removeLast()
        if position < ids.count {
            ids[position] = last
            positions[last] = position
        }
    }
}
