import Logging
import SwitchboardCore
import SwitchboardObservability
import Synchronization

/// Calls' timelines in Redis: one stream per call (`<kp>:timeline:<id>`), capped at `cap` events (the first
/// ones kept; beyond, events are counted in `<kp>:timeline:<id>:dropped`, but a call's end always gets in), kept
/// `retention` after its last event.
public struct TimelineStore: Sendable {
    public let redis: RedisClient
    public let keys: RedisKeys
    public var cap: Int
    public var retention: Duration

    public init(redis: RedisClient, keys: RedisKeys, cap: Int = 2_000, retention: Duration = .seconds(7 * 86_400)) {
        self.redis = redis
        self.keys = keys
        self.cap = cap
        self.retention = retention
    }

    /// Types that go in past the cap (a few): how the call ended must be there.
    static let alwaysKept: Set<String> = ["ended", "lost"]

    static let appendScript = RedisScript("""
        -- KEYS[1]: the call's timeline, KEYS[2]: its dropped count. ARGV[1]: cap, ARGV[2]: retention ms; then per
        -- event: '1' if it goes in past the cap (up to 16 more), its number of fields, the fields.
        local cap, i, added, dropped = tonumber(ARGV[1]), 3, 0, 0
        while i <= #ARGV do
          local n = tonumber(ARGV[i + 1])
          local length = redis.call('XLEN', KEYS[1])
          if length < cap or (ARGV[i] == '1' and length < cap + 16) then
            redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + n))
            added = added + 1
          else
            dropped = dropped + 1
          end
          i = i + 2 + n
        end
        if dropped > 0 then
          redis.call('INCRBY', KEYS[2], dropped)
          redis.call('PEXPIRE', KEYS[2], ARGV[2])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return {added, dropped}
        """)

    /// Appends `events` to `callID`'s timeline in one script run; returns how many went in and how many were
    /// left out over the cap.
    @discardableResult
    public func append(_ callID: String, _ events: [TimelineEvent]) async throws(SwitchboardError) -> (added: Int, dropped: Int) {
        guard !events.isEmpty else { return (0, 0) }
        var arguments = [String(cap), String(retention.milliseconds)]
        for event in events {
            let fields = event.streamFields
            arguments += [Self.alwaysKept.contains(event.type) ? "1" : "0", String(fields.count)] + fields
        }
        let reply = try await redis.evaluate(Self.appendScript, keys: [keys.timeline(callID), keys.timelineDropped(callID)], arguments: arguments)
        let parts = reply.array ?? []
        return (Int(parts.first?.int ?? 0), Int(parts.count > 1 ? parts[1].int ?? 0 : 0))
    }

    /// `callID`'s timeline, in time order; empty when it has none (or it expired).
    public func timeline(_ callID: String) async throws(SwitchboardError) -> Timeline {
        let replies = try await redis.pipeline([.init(["XRANGE", keys.timeline(callID), "-", "+"]), .init(["GET", keys.timelineDropped(callID)])])
        let entries = (replies.first?.array ?? []).compactMap { item -> TimelineEvent? in
            guard let parts = item.array, parts.count == 2, let flat = parts[1].array else { return nil }
            var fields: [(String, String)] = []
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let name = flat[i].string { fields.append((name, flat[i + 1].string ?? "")) }
            }
            return TimelineEvent(streamFields: fields)
        }
        let dropped = replies.count > 1 ? replies[1].string.flatMap { Int64($0) } ?? 0 : 0
        return Timeline(callID: callID, events: entries, dropped: dropped)
    }
}

/// Appends timeline events off the calls' paths: `record` only queues (bounded; a full queue drops and counts),
/// and `run` writes what is queued every `interval`, one script run per call. Redis being slow or down never
/// holds up a call; its events wait (up to the queue's bound) and go when Redis answers.
public final class TimelineWriter: Sendable {
    public let store: TimelineStore
    private let queue: Mutex<[(callID: String, event: TimelineEvent)]> = Mutex([])
    /// Redis refused the last write: warned once, until a write goes through again.
    private let failing = Mutex(false)
    private let capacity: Int
    private let interval: Duration
    private let metrics: MetricsRegistry
    private let logger: Logger

    public init(store: TimelineStore, capacity: Int = 20_000, interval: Duration = .milliseconds(250), metrics: MetricsRegistry,
                logger: Logger) {
        self.store = store
        self.capacity = capacity
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    /// Queues one event for `callID`'s timeline. An event that does not validate is dropped and counted: a
    /// timeline is evidence, not a reason to fail.
    public func record(_ callID: String, _ event: TimelineEvent) {
        do {
            try event.validate()
        } catch {
            count("invalid")
            logger.warning("timeline event left out", metadata: ["call_id": "\(callID)", "type": "\(event.type)", "error": "\(error)"])
            return
        }
        let queued = queue.withLock { queue -> Bool in
            guard queue.count < capacity else { return false }
            queue.append((callID, event))
            return true
        }
        if !queued { count("queue_full") }
    }

    /// Events queued and not yet written.
    public var pending: Int { queue.withLock { $0.count } }

    /// Writes queued events every `interval` until cancelled; then once more, so a clean stop loses nothing
    /// Redis takes.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await flush()
        }
        await flush()
    }

    /// Writes what is queued now, call by call, in the order recorded. What Redis does not take goes back to the
    /// front of the queue (within its bound).
    public func flush() async {
        let batch = queue.withLock { queue in defer { queue.removeAll() }; return queue }
        guard !batch.isEmpty else { return }
        var order: [String] = []
        var byCall: [String: [TimelineEvent]] = [:]
        for (callID, event) in batch {
            if byCall[callID] == nil { order.append(callID) }
            byCall[callID, default: []].append(event)
        }
        for (i, callID) in order.enumerated() {
            do {
                let (added, dropped) = try await store.append(callID, byCall[callID]!)
                if added > 0 { count("written", by: added) }
                if dropped > 0 { count("over_cap", by: dropped) }
                if failing.withLock({ swap(&$0, false) }) { logger.notice("timeline events written again") }
            } catch {
                let rest = order[i...].flatMap { id in byCall[id]!.map { (callID: id, event: $0) } }
                let kept = queue.withLock { queue -> Int in
                    let room = max(0, capacity - queue.count)
                    queue.insert(contentsOf: rest.prefix(room), at: 0)
                    return min(room, rest.count)
                }
                if kept < rest.count { count("queue_full", by: rest.count - kept) }
                if !failing.withLock({ swap(&$0, true) }) {
                    logger.warning("timeline events not written; kept for the next tries (up to the queue's bound)",
                                   metadata: ["events": "\(kept)", "error": "\(error)"])
                }
                return
            }
        }
    }

    /// Sets `flag` to `value`; what it was.
    private func swap(_ flag: inout Bool, _ value: Bool) -> Bool {
        defer { flag = value }
        return flag
    }

    private func count(_ result: String, by n: Int = 1) {
        metrics.increment(MetricNames.timelineEvents, ["result": result], by: Double(n),
                          help: "Call timeline events: written, over_cap (a call's cap reached), queue_full, invalid")
    }
}
