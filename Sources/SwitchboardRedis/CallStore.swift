import Foundation
import SwitchboardCore

/// Every write to a call's record (`<kp>:call:<id>`), its worker's set of calls and the tenant's live-call
/// lease, each one script: atomic, one round trip, and fenced by the record's ownership epoch.
///
/// - The router records a placement (`place`, epoch 1); the worker marks the call started (`start`).
/// - A worker taking a call on (migration, failover, drain deadline) claims it (`claim`): owner and epoch+1
///   in one step, only if the record still holds the epoch the router read; it sends no audio before.
/// - A worker's checkpoints (`checkpoint`), its periodic refresh (`refresh`: TTLs, leases, and the record
///   written again when Redis lost it) and a call's end (`end`) apply only while the record names that
///   worker at that epoch; a worker told "superseded" stops the call's media without ending it.
/// Records and worker sets expire (`ttl`) unless their live calls refresh them.
/// See docs/decisions/0008-failure-detection.md.
public struct CallStore: Sendable {
    public let redis: RedisClient
    public let keys: RedisKeys
    /// How long a live call's record and its worker's set last without a refresh.
    public var ttl: Duration
    /// What stamps placements (when the record has no time of its own) and ends, and picks the day's index
    /// and usage fields.
    public let wallClock: WallClock

    public init(redis: RedisClient, keys: RedisKeys, ttl: Duration = .seconds(300), wallClock: WallClock = .system) {
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.wallClock = wallClock
    }

    /// What a worker's write found.
    public enum Ownership: Int64, Sendable {
        /// Another worker holds the call now, or it ended: let go of it (its media stops, no end recorded).
        case superseded = 0
        case owned = 1
        /// No record (Redis lost it): the worker writes it again at its next refresh.
        case missing = -1
        /// `refresh` wrote the lost record again.
        case reasserted = 2
    }

    // MARK: - Router

    static let placeScript = RedisScript("""
        -- KEYS[1]: the record, KEYS[2] and KEYS[3]: the day's index of calls, all and the tenant's.
        -- ARGV[1]: ttl ms, ARGV[2]: the index's retention ms, ARGV[3]: placed at (ms), ARGV[4]: tenant/call id;
        -- then field, value pairs.
        for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
        redis.call('HSETNX', KEYS[1], 'epoch', '1')
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        for k = 2, 3 do
          redis.call('ZADD', KEYS[k], ARGV[3], ARGV[4])
          redis.call('PEXPIRE', KEYS[k], ARGV[2])
        end
        return 1
        """)

    /// How long the index of calls (`GET /v1/calls`) keeps a call: as long as its timeline.
    public var indexRetention: Duration = .seconds(7 * 86_400)

    /// Records a call the router placed (its worker may have marked it started already), and lists it in the
    /// day's index of calls.
    public func place(_ record: CallRecord, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) {
        let placedAt = record.createdAt ?? wallClock.unixMillis
        let day = CallQuery.day(placedAt)
        var arguments = [String(ttl.milliseconds), String((indexRetention + .seconds(86_400)).milliseconds), String(placedAt),
                         "\(record.tenant)/\(record.callID)"]
        for (field, value) in record.placementFields { arguments += [field, value] }
        _ = try await redis.evaluate(Self.placeScript, keys: [keys.call(record.callID), keys.callIndex(day: day),
                                                              keys.callIndex(day: day, tenant: record.tenant)],
                                     arguments: arguments, deadline: deadline)
    }

    /// A page of the calls `query` asks for, newest first: through the days' index, each entry with its record
    /// (nil once expired), at most `CallQuery.maxExamined` entries examined.
    public func list(_ query: CallQuery) async throws(SwitchboardError) -> CallList {
        let days = query.days
        var found: [CallListEntry] = []
        var examined = 0
        var (day, offset) = (query.cursor?.day ?? 0, query.cursor?.offset ?? 0)
        while day < days.count {
            let batch = min(200, CallQuery.maxExamined - examined, max(query.limit - found.count, 0) * 4 + 20)
            guard batch > 0 else { break }
            let key = keys.callIndex(day: days[day], tenant: query.tenant)
            let reply = try await redis.send(["ZREVRANGEBYSCORE", key, String(query.untilMillis), String(query.sinceMillis),
                                              "WITHSCORES", "LIMIT", String(offset), String(batch)])
            let flat = (reply.array ?? []).compactMap(\.string)
            var entries: [(tenant: String, callID: String, at: Int64)] = []
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                let parts = flat[i].split(separator: "/", maxSplits: 1)
                guard parts.count == 2, let at = Int64(flat[i + 1]) else { continue }
                entries.append((String(parts[0]), String(parts[1]), at))
            }
            let records = entries.isEmpty ? [] : try await redis.pipeline(entries.map { RedisCommand(["HGETALL", keys.call($0.callID)]) })
            for (i, entry) in entries.enumerated() {
                examined += 1
                offset += 1
                let fields = records[i].hashFields
                let listed = CallListEntry(callID: entry.callID, tenant: entry.tenant, placedAtMillis: entry.at,
                                           record: CallRecord(callID: entry.callID, fields: fields))
                guard query.matches(listed) else { continue }
                found.append(listed)
                if found.count == query.limit {
                    return CallList(calls: found, next: CallQuery.Cursor(day: day, offset: offset).text, examined: examined)
                }
            }
            if flat.count / 2 < batch {
                day += 1
                offset = 0
            }
        }
        let next = day < days.count ? CallQuery.Cursor(day: day, offset: offset).text : nil
        return CallList(calls: found, next: next, examined: examined)
    }

    /// The call's record fields; empty when Redis has none.
    public func fields(_ callID: String) async throws(SwitchboardError) -> [String: String] {
        try await redis.hashGetAll(keys.call(callID))
    }

    // MARK: - Worker

    static let startScript = RedisScript("""
        -- KEYS[1]: the record, KEYS[2]: the worker's set, KEYS[3]: the tenant's month of usage.
        -- ARGV: call id, worker, epoch, ttl ms, started at, incarnation, usage retention ms.
        -- A record naming another worker: the router placed the call there after this worker's accept came too
        -- late (its offer timed out), and this worker must not take it back.
        local e, w, s = unpack(redis.call('HMGET', KEYS[1], 'epoch', 'worker_id', 'state'))
        if (e and tonumber(e) ~= tonumber(ARGV[3])) or (w and w ~= ARGV[2]) or s == 'ended' then return 0 end
        redis.call('HSET', KEYS[1], 'state', 'active', 'worker_id', ARGV[2], 'epoch', ARGV[3], 'started_at', ARGV[5],
                   'incarnation', ARGV[6])
        -- The call is metered from now, on Redis's clock (once: a start written twice counts one call).
        local t = redis.call('TIME')
        local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
        if redis.call('HSETNX', KEYS[1], 'metered_at', string.format('%.0f', now_ms)) == 1 then
          redis.call('HINCRBY', KEYS[3], 'calls', 1)
          redis.call('PEXPIRE', KEYS[3], ARGV[7])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('PEXPIRE', KEYS[2], ARGV[4])
        return 1
        """)

    /// A new call starts on `worker` at epoch 1: `superseded` when its record names another worker or has ended.
    /// Its metering starts here (and the tenant's month counts one more call).
    public func start(_ callID: String, tenant: String, worker: String, incarnation: String, startedAt: Int64) async throws(SwitchboardError) -> Ownership {
        let reply = try await redis.evaluate(Self.startScript, keys: [keys.call(callID), keys.workerCalls(worker), usageKey(tenant, startedAt)],
                                             arguments: [callID, worker, "1", String(ttl.milliseconds), String(startedAt), incarnation,
                                                         String(usageRetention.milliseconds)])
        return reply.int == 1 ? .owned : .superseded
    }

    // MARK: - Usage

    /// How long a tenant's month of usage is kept after its last write (13 months and a bit).
    public var usageRetention: Duration = .seconds(400 * 86_400)

    /// Adds agent CPU milliseconds to each tenant's month of usage (`agent_cpu_ms`), in one pipeline.
    public func meterAgentCPU(_ millis: [String: Int64], atMillis: Int64) async throws(SwitchboardError) {
        var commands: [RedisCommand] = []
        for (tenant, ms) in millis.sorted(by: { $0.key < $1.key }) {
            let key = usageKey(tenant, atMillis)
            commands.append(RedisCommand(["HINCRBY", key, TenantUsage.agentCPUMillisField, String(ms)]))
            commands.append(RedisCommand(["PEXPIRE", key, String(usageRetention.milliseconds)]))
        }
        for reply in try await redis.pipeline(commands) {
            if case .error(let message) = reply { throw SwitchboardError(.serverError, "agent CPU not metered: \(message)") }
        }
    }

    /// The tenant's month of usage that `unixMillis` falls in.
    func usageKey(_ tenant: String, _ unixMillis: Int64) -> String { keys.usage(tenant, month: UsagePeriod.month(unixMillis)) }

    /// Lua: adds a call's time since it was last metered (its record's `metered_at`, else its start: the
    /// record's, else `started`, the holder's) to its tenant's month (`call_ms` and the day's field) and to the
    /// record's own `metered_ms`, and moves `metered_at` to now. A call metered for the first time without a
    /// recorded start (the start's write failed; a record from before metering) is counted as a call here. Only ever called by a
    /// script that has checked the caller owns the call at its epoch, so a call moved between workers is
    /// metered once, whoever holds it. Returns the milliseconds added.
    static let meterFunction = """
        local function meter(record, usage, now_ms, day, keep_ms, started)
          local at, recorded = unpack(redis.call('HMGET', record, 'metered_at', 'started_at'))
          local from = tonumber(at) or tonumber(recorded) or tonumber(started) or now_ms
          if not at then redis.call('HINCRBY', usage, 'calls', 1) end
          redis.call('HSET', record, 'metered_at', string.format('%.0f', math.max(now_ms, from)))
          redis.call('PEXPIRE', usage, keep_ms)
          if now_ms <= from then return 0 end
          local ms = string.format('%.0f', now_ms - from)
          redis.call('HINCRBY', record, 'metered_ms', ms)
          redis.call('HINCRBY', usage, 'call_ms', ms)
          redis.call('HINCRBY', usage, day, ms)
          return tonumber(ms)
        end
        """

    static let claimScript = RedisScript("""
        -- KEYS[1]: the record, KEYS[2]: the new worker's set, KEYS[3]: the previous worker's set.
        -- ARGV: call id, worker, expected epoch ('' = only if the record names the previous worker), previous
        -- worker, ttl ms, incarnation, version, region. Returns the new epoch, 0 when superseded, -1 when missing.
        if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
        if redis.call('HGET', KEYS[1], 'state') == 'ended' then return 0 end
        local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '1')
        if ARGV[3] ~= '' then
          if epoch ~= tonumber(ARGV[3]) then return 0 end
        elseif redis.call('HGET', KEYS[1], 'worker_id') ~= ARGV[4] then
          return 0
        end
        epoch = epoch + 1
        redis.call('HSET', KEYS[1], 'worker_id', ARGV[2], 'epoch', tostring(epoch), 'state', 'active', 'incarnation', ARGV[6],
                   'version', ARGV[7], 'region', ARGV[8])
        redis.call('HINCRBY', KEYS[1], 'moves', 1)
        redis.call('PEXPIRE', KEYS[1], ARGV[5])
        redis.call('SREM', KEYS[3], ARGV[1])
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('PEXPIRE', KEYS[2], ARGV[5])
        return epoch
        """)

    /// Takes a running call on: the new epoch, or nil when the record moved on (or is gone) since the router
    /// read it.
    public func claim(_ callID: String, worker: String, from resume: Resume, incarnation: String, version: String,
                      region: String) async throws(SwitchboardError) -> Int64? {
        let reply = try await redis.evaluate(
            Self.claimScript, keys: [keys.call(callID), keys.workerCalls(worker), keys.workerCalls(resume.fromWorker)],
            arguments: [callID, worker, resume.epoch.map(String.init) ?? "", resume.fromWorker, String(ttl.milliseconds),
                        incarnation, version, region])
        guard let epoch = reply.int, epoch > 0 else { return nil }
        return epoch
    }

    static let checkpointScript = RedisScript("""
        -- KEYS: call records. ARGV[1]: worker, ARGV[2]: ttl ms; then per key: epoch, checkpoint (JSON), seq.
        local result = {}
        for i, key in ipairs(KEYS) do
          local base = 3 * i
          if redis.call('EXISTS', key) == 0 then
            result[i] = -1
          elseif redis.call('HGET', key, 'worker_id') == ARGV[1] and redis.call('HGET', key, 'state') ~= 'ended'
              and tonumber(redis.call('HGET', key, 'epoch') or '1') == tonumber(ARGV[base]) then
            redis.call('HSET', key, 'checkpoint', ARGV[base + 1], 'checkpoint_seq', ARGV[base + 2])
            redis.call('PEXPIRE', key, ARGV[2])
            result[i] = 1
          else
            result[i] = 0
          end
        end
        return result
        """)

    public struct CheckpointWrite: Sendable {
        public var callID: String
        public var epoch: Int64
        public var checkpoint: Checkpoint
        public init(callID: String, epoch: Int64, checkpoint: Checkpoint) {
            self.callID = callID
            self.epoch = epoch
            self.checkpoint = checkpoint
        }
    }

    /// Writes checkpoints in one script run; for each, whether `worker` still owns the call.
    public func checkpoint(_ batch: [CheckpointWrite], worker: String) async throws(SwitchboardError) -> [Ownership] {
        var arguments = [worker, String(ttl.milliseconds)]
        for item in batch {
            arguments += [String(item.epoch), String(decoding: item.checkpoint.encoded(), as: UTF8.self), String(item.checkpoint.seq)]
        }
        let reply = try await redis.evaluate(Self.checkpointScript, keys: batch.map { keys.call($0.callID) }, arguments: arguments)
        return (reply.array ?? []).map { $0.int.flatMap(Ownership.init(rawValue:)) ?? .superseded }
    }

    static let refreshScript = RedisScript("""
        -- KEYS[1]: the worker's set; then per call its record, its tenant's leases and its tenant's month of usage.
        -- ARGV[1]: worker, ARGV[2]: ttl ms, ARGV[3]: lease ms, ARGV[4]: incarnation, ARGV[5]: the day's usage field,
        -- ARGV[6]: usage retention ms; then per call: id, epoch, tenant, version, region, started at, metadata (JSON
        -- or ''). Lease expiry and metering are on Redis's clock. Returns per call: ownership, milliseconds metered.
        \(meterFunction)
        local t = redis.call('TIME')
        local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
        local until_ms = string.format('%.0f', now_ms + tonumber(ARGV[3]))
        local result = {}
        for i = 1, (#KEYS - 1) / 3 do
          local key, leases, usage, base = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1], 6 + 7 * (i - 1)
          local id = ARGV[base + 1]
          local metered = 0
          redis.call('ZREMRANGEBYSCORE', leases, '-inf', string.format('%.0f', now_ms))
          if redis.call('EXISTS', key) == 0 then
            -- Metered from now: what was metered before the record was lost is not known here.
            redis.call('HSET', key, 'tenant', ARGV[base + 3], 'worker_id', ARGV[1], 'version', ARGV[base + 4],
                       'region', ARGV[base + 5], 'state', 'active', 'started_at', ARGV[base + 6],
                       'epoch', ARGV[base + 2], 'incarnation', ARGV[4], 'metered_at', string.format('%.0f', now_ms))
            if ARGV[base + 7] ~= '' then redis.call('HSET', key, 'metadata', ARGV[base + 7]) end
            redis.call('PEXPIRE', key, ARGV[2])
            redis.call('SADD', KEYS[1], id)
            redis.call('ZADD', leases, until_ms, id)
            result[2 * i - 1] = 2
          elseif redis.call('HGET', key, 'worker_id') == ARGV[1] and redis.call('HGET', key, 'state') ~= 'ended'
              and tonumber(redis.call('HGET', key, 'epoch') or '1') == tonumber(ARGV[base + 2]) then
            redis.call('PEXPIRE', key, ARGV[2])
            redis.call('SADD', KEYS[1], id)
            -- Only a lease that still exists: one that expired was given back and stays given back.
            redis.call('ZADD', leases, 'XX', until_ms, id)
            metered = meter(key, usage, now_ms, ARGV[5], ARGV[6], ARGV[base + 6])
            result[2 * i - 1] = 1
          else
            result[2 * i - 1] = 0
          end
          result[2 * i] = metered
          redis.call('PEXPIRE', leases, tonumber(ARGV[3]) * 2)
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return result
        """)

    /// What a refresh found for one call, and the call time it metered.
    public struct Refreshed: Sendable, Equatable {
        public var ownership: Ownership
        public var meteredMillis: Int64
        public init(ownership: Ownership, meteredMillis: Int64) {
            self.ownership = ownership
            self.meteredMillis = meteredMillis
        }
    }

    /// What a worker knows of a call it holds: enough to write its record again.
    public struct Held: Sendable {
        public var callID: String
        public var epoch: Int64
        public var tenant: String
        public var startedAt: Int64
        public var metadata: [String: String]
        public init(callID: String, epoch: Int64, tenant: String, startedAt: Int64, metadata: [String: String]) {
            self.callID = callID
            self.epoch = epoch
            self.tenant = tenant
            self.startedAt = startedAt
            self.metadata = metadata
        }
    }

    /// A worker's calls, confirmed and kept alive in one script run: each owned call's record and the
    /// worker's set get their TTL back, the tenant's lease is renewed and the call is metered; a record Redis
    /// lost is written again (with a fresh lease, metered from then on); for each call, whether the worker still
    /// owns it, and the call time metered.
    public func refresh(_ calls: [Held], worker: String, incarnation: String, version: String, region: String,
                        leaseTime: Duration) async throws(SwitchboardError) -> [Refreshed] {
        guard !calls.isEmpty else { return [] }
        let now = wallClock.unixMillis
        var keyList = [keys.workerCalls(worker)]
        var arguments = [worker, String(ttl.milliseconds), String(leaseTime.milliseconds), incarnation,
                         TenantUsage.dayField(UsagePeriod.day(now)), String(usageRetention.milliseconds)]
        for call in calls {
            keyList += [keys.call(call.callID), keys.tenantLeases(call.tenant), usageKey(call.tenant, now)]
            arguments += [call.callID, String(call.epoch), call.tenant, version, region, String(call.startedAt),
                          call.metadata.isEmpty ? "" : String(decoding: WireCodec.encode(call.metadata), as: UTF8.self)]
        }
        let reply = try await redis.evaluate(Self.refreshScript, keys: keyList, arguments: arguments)
        let parts = reply.array ?? []
        return calls.indices.map { i in
            let ownership = (2 * i < parts.count ? parts[2 * i].int : nil).flatMap(Ownership.init(rawValue:)) ?? .superseded
            return Refreshed(ownership: ownership, meteredMillis: (2 * i + 1 < parts.count ? parts[2 * i + 1].int : nil) ?? 0)
        }
    }

    // MARK: - The end

    static let endScript = RedisScript("""
        -- KEYS[1]: the record, KEYS[2]: the worker's set, KEYS[3]: the tenant's leases, KEYS[4]: its month of usage.
        -- ARGV: call id, worker, epoch, reason, ended at, retention ms, the day's usage field, usage retention ms.
        -- Only the owner at that epoch ends the call (metering the rest of it) and gives the lease back; a
        -- superseded worker only leaves the call out of its own set. Returns {1 or 0, milliseconds metered}.
        \(meterFunction)
        redis.call('SREM', KEYS[2], ARGV[1])
        local metered = 0
        if redis.call('EXISTS', KEYS[1]) == 1 then
          if redis.call('HGET', KEYS[1], 'state') == 'ended' or redis.call('HGET', KEYS[1], 'worker_id') ~= ARGV[2]
              or tonumber(redis.call('HGET', KEYS[1], 'epoch') or '1') ~= tonumber(ARGV[3]) then
            return {0, 0}
          end
          local t = redis.call('TIME')
          metered = meter(KEYS[1], KEYS[4], math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000), ARGV[7], ARGV[8], nil)
          redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_at', ARGV[5], 'end_reason', ARGV[4])
          redis.call('PEXPIRE', KEYS[1], ARGV[6])
        end
        redis.call('ZREM', KEYS[3], ARGV[1])
        return {1, metered}
        """)

    /// Records a call's end for the worker that held it at `epoch` (the worker itself, or a router for a
    /// call lost with its worker): the rest of the call metered, record closed with the reason and kept
    /// `retention` longer, call out of the worker's set, lease given back. `superseded` when the call had moved
    /// on: nothing but the set.
    @discardableResult
    public func end(_ callID: String, tenant: String, worker: String, epoch: Int64, reason: EndReason,
                    retention: Duration) async throws(SwitchboardError) -> Refreshed {
        let now = wallClock.unixMillis
        let reply = try await redis.evaluate(
            Self.endScript, keys: [keys.call(callID), keys.workerCalls(worker), keys.tenantLeases(tenant), usageKey(tenant, now)],
            arguments: [callID, worker, String(epoch), reason.rawValue, String(now), String(retention.milliseconds),
                        TenantUsage.dayField(UsagePeriod.day(now)), String(usageRetention.milliseconds)])
        let parts = reply.array ?? []
        return Refreshed(ownership: parts.first?.int == 1 ? .owned : .superseded, meteredMillis: (parts.count > 1 ? parts[1].int : nil) ?? 0)
    }

    /// Leaves a call out of a worker's set (a stale entry: the call ended or moved on).
    public func forget(_ callID: String, worker: String) async throws(SwitchboardError) {
        _ = try await redis.send(["SREM", keys.workerCalls(worker), callID])
    }

    /// The workers that have a set of calls in Redis (SCAN, in pages: never one long command).
    public func workersWithCalls() async throws(SwitchboardError) -> [String] {
        let tail = ":calls"
        let head = String(keys.workerCalls("").dropLast(tail.count))  // "<kp>:worker:"
        var cursor = "0", workers: [String] = []
        repeat {
            let page = try await redis.send(["SCAN", cursor, "MATCH", head + "*" + tail, "COUNT", "1000"]).array ?? []
            guard page.count == 2, let next = page[0].string else { break }
            cursor = next
            for key in page[1].array ?? [] {
                guard let key = key.string, key.hasPrefix(head), key.hasSuffix(tail) else { continue }
                workers.append(String(key.dropFirst(head.count).dropLast(tail.count)))
            }
        } while cursor != "0"
        return workers
    }

    /// The calls in a worker's set.
    public func calls(of worker: String) async throws(SwitchboardError) -> [String] {
        (try await redis.send(["SMEMBERS", keys.workerCalls(worker)]).array ?? []).compactMap(\.string)
    }
}
