/// Liveness that suspects the observer first. Silence on the bus is as often this router's fault (it stalled,
/// it was cut off, its NATS node lost its routes) as the worker's, and the price of a wrong verdict is every
/// call of a healthy worker. So:
/// - a router whose ticks came later than the suspect time, or that was disconnected, treats everyone as just
///   heard and judges nobody for a full detection time;
/// - a mass silence (more than `unreachableShare` of the fleet, or every worker of a zone of two or more)
///   makes the silent workers `unreachable`: no new calls, no failover, until they speak or the silence
///   shrinks back to a partial one;
/// - a worker is dead only when its direct ping failed and this router could judge at that moment.
extension WorkerRegistry {
    /// Why silent workers are being kept rather than failed over.
    public struct Disruption: Sendable, Equatable, Codable {
        public var silent: Int
        public var total: Int
        /// Zones every worker of which is silent.
        public var zones: [String]
        /// Past the share every silent worker is kept; below it, only those of the wholly silent zones.
        public var coversAll: Bool

        func covers(_ entry: Entry) -> Bool { coversAll || zones.contains(entry.heartbeat.zone) }

        public var reason: String {
            let zonesText = zones.isEmpty ? "" : "; whole zone\(zones.count > 1 ? "s" : "") silent: \(zones.joined(separator: ", "))"
            return "\(silent) of \(total) workers silent at once\(zonesText): taken for a fault of the bus or of this router, not of the workers"
        }
    }

    public enum PingVerdict: Equatable, Sendable {
        /// Dropped from the view; its calls are to be failed over. The incarnation tells a worker that turns
        /// out alive (same process) from one that came back restarted.
        case dead(incarnation: String)
        /// Not judged (this router cannot trust its own view right now); it stays suspect and is pinged again.
        case notJudged(String)
        /// It was heard from meanwhile, or is gone already.
        case moot
    }

    /// Advances time: notices this router's own stalls, marks silent workers suspect (ping them) or, in a mass
    /// silence, unreachable, and expires reservations. Never drops a worker: that takes a failed ping
    /// (`pingFailed`). Copies and stores only the entries that change (it runs several times per interval).
    public mutating func tick(now: Instant) -> [LivenessEvent] {
        var events: [LivenessEvent] = []
        if let stalled = noteStall(now: now) { events.append(stalled) }
        expireReservations(now: now)
        guard connected else { return events }

        let suspectAt = configuration.suspectTime
        let probeAt = configuration.probeTime ?? suspectAt
        var silent: [Entry] = [], late: [Entry] = []
        for entry in entries.values where now - entry.lastHeard >= probeAt {
            if now - entry.lastHeard >= suspectAt { silent.append(entry) } else { late.append(entry) }
        }
        disruption = massSilence(silent)
        var changed: [Entry] = []
        // Probed once per silence, unless many are late at once (that is for the suspect time and the guard).
        if !late.isEmpty, massSilence(silent + late) == nil {
            for var entry in late where entry.liveness == .alive && entry.pingSentAt == nil {
                entry.pingSentAt = now
                events.append(.probe(entry.id))
                changed.append(entry)
            }
        }
        var unreachable: [String] = []
        for var entry in silent {
            if let disruption, disruption.covers(entry) {
                guard entry.liveness != .unreachable else { continue }
                entry.liveness = .unreachable
                entry.pingSentAt = nil
                unreachable.append(entry.id)
            } else if entry.liveness != .suspect {
                entry.liveness = .suspect
                entry.pingSentAt = now
                events.append(.suspect(entry.id))
            } else if entry.pingSentAt.map({ now - $0 >= configuration.detectionTime }) ?? true {
                // No verdict came of the last ping (or none is out): ask again.
                entry.pingSentAt = now
                events.append(.ping(entry.id))
            } else {
                continue
            }
            changed.append(entry)
        }
        for entry in changed { update(entry) }
        if let disruption, !unreachable.isEmpty { events.append(.unreachable(unreachable.sorted(), disruption)) }
        return events.sorted { "\($0)" < "\($1)" }
    }

    /// A suspect worker's ping failed (timed out, or nobody listens on its subject). Dead if this router can
    /// judge now: connected, not within a detection time of a stall or reconnection, not in a mass silence,
    /// and the ping itself did not span a stall of this router (`sentAt` long before `now`).
    public mutating func pingFailed(_ workerID: String, sentAt: Instant, timeout: Duration, now: Instant) -> PingVerdict {
        _ = noteStall(now: now)
        guard var entry = entries[workerID], entry.liveness == .suspect else { return .moot }
        let why: String? =
            if !connected { "this router is not connected to NATS" }
            else if let judgeAfter, now < judgeAfter { "this router was stalled or cut off a moment ago" }
            else if now - sentAt > timeout * 2 + configuration.heartbeatInterval { "the ping took far longer than its timeout: this router stalled" }
            else if let disruption, disruption.covers(entry) { disruption.reason }
            else { nil }
        if let why {
            entry.pingSentAt = nil  // the next tick pings again
            update(entry)
            return .notJudged(why)
        }
        remove(workerID)
        return .dead(incarnation: entry.heartbeat.incarnation)
    }

    /// The server answered a probe of an alive but late worker with "no responders": nobody listens on its
    /// ping subject, so its connection is gone. Dead if this router can judge now (as for `pingFailed`), the
    /// worker was not heard from since the probe, and it is not one of many late at once. A probe that timed out
    /// is no verdict and does not come here.
    public mutating func probeFoundGone(_ workerID: String, sentAt: Instant, timeout: Duration, now: Instant) -> PingVerdict {
        _ = noteStall(now: now)
        guard let entry = entries[workerID], entry.liveness != .unreachable, entry.lastHeard < sentAt else { return .moot }
        let late = entries.values.filter { now - $0.lastHeard >= (configuration.probeTime ?? configuration.suspectTime) }
        let why: String? =
            if !connected { "this router is not connected to NATS" }
            else if let judgeAfter, now < judgeAfter { "this router was stalled or cut off a moment ago" }
            else if now - sentAt > timeout * 2 + configuration.heartbeatInterval { "the probe took far longer than its timeout: this router stalled" }
            else if let mass = massSilence(late) { mass.reason }
            else { nil }
        if let why { return .notJudged(why) }  // the suspect time decides, as without probes
        remove(workerID)
        return .dead(incarnation: entry.heartbeat.incarnation)
    }

    /// Whether this router may take a worker it does not know for gone (and fail its calls over): it has
    /// watched the fleet for a detection time, is connected, is not within a detection time of its own stall
    /// or reconnection, and sees no mass silence.
    public func mayTakeUnknownWorkersForGone(now: Instant) -> Bool {
        guard let firstTick, now - firstTick >= configuration.detectionTime, connected, disruption == nil else { return false }
        return judgeAfter.map { now >= $0 } ?? true
    }

    /// Whether what this router hears (or does not) of a worker can be trusted now: connected, and not within a
    /// detection time of its own stall or reconnection (a worker's subscriptions come back on a restarted server
    /// a moment after this router's, and its "no responders" meanwhile says nothing of the worker).
    public func mayJudge(now: Instant) -> Bool {
        connected && (judgeAfter.map { now >= $0 } ?? true)
    }

    /// This router's NATS connection went down or came back. Back: every worker counts as just heard, and
    /// nobody is judged for a detection time (the workers were cut off too, or our view of them was).
    public mutating func setConnected(_ isConnected: Bool, now: Instant) -> LivenessEvent? {
        defer { connected = isConnected }
        guard isConnected, !connected else { return nil }
        let since = lastTick.map { now - $0 } ?? .zero
        forgiveSilence(now: now)
        return .selfSuspected(since)
    }

    /// A tick that comes a suspect time or more after the previous one: this router stalled (CPU throttling,
    /// a pause, a loaded machine). The silence it saw was its own.
    private mutating func noteStall(now: Instant) -> LivenessEvent? {
        defer { lastTick = max(lastTick ?? now, now) }
        if firstTick == nil { firstTick = now }
        guard let lastTick, now - lastTick >= configuration.suspectTime else { return nil }
        forgiveSilence(now: now)
        return .selfSuspected(now - lastTick)
    }

    private mutating func forgiveSilence(now: Instant) {
        judgeAfter = now + configuration.detectionTime
        disruption = nil
        for var entry in entries.values {
            entry.lastHeard = now
            entry.liveness = .alive
            entry.pingSentAt = nil
            update(entry)
        }
    }

    private mutating func expireReservations(now: Instant) {
        var changed: [Entry] = []
        for entry in entries.values where entry.reservations.contains(where: { $0.expires <= now }) {
            var entry = entry
            entry.reservations.removeAll { $0.expires <= now }
            changed.append(entry)
        }
        for entry in changed { entries[entry.id] = entry }
    }

    /// A silence too wide to be the workers' own doing, or nil.
    private func massSilence(_ silent: [Entry]) -> Disruption? {
        guard silent.count >= 2 else { return nil }
        var zoneTotals: [String: Int] = [:]
        for entry in entries.values { zoneTotals[entry.heartbeat.zone, default: 0] += 1 }
        var zoneSilent: [String: Int] = [:]
        for entry in silent { zoneSilent[entry.heartbeat.zone, default: 0] += 1 }
        let wholeZones = zoneSilent.filter { zone, count in count >= 2 && count == zoneTotals[zone] }.keys.sorted()
        let pastShare = Double(silent.count) / Double(entries.count) > configuration.unreachableShare
        guard pastShare || !wholeZones.isEmpty else { return nil }
        return Disruption(silent: silent.count, total: entries.count, zones: wholeZones, coversAll: pastShare)
    }
}
