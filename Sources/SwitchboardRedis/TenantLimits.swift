import SwitchboardCore

/// A tenant's rate limit, live-call quota and monthly usage limit, enforced in Redis across every router at once.
///
/// `admit` is one script, one round trip, atomic: the month's usage against its limit, the GCRA check, then the
/// quota check (expired leases dropped first), and only if all pass, the rate's new TAT and a lease for the call
/// are taken. Time
/// is Redis's own clock, so routers' clocks do not matter. A lease lasts `leaseTime` unless renewed (the
/// worker holding the call renews its leases in batches); a dead router or worker cannot hold a slot longer.
public struct TenantLimits: Sendable {
    /// What the admission script decided (the router's `Admission` machine takes it from there).
    public typealias Decision = Admission.Verdict

    public let redis: RedisClient
    public let keys: RedisKeys
    public var leaseTime: Duration
    /// Picks the month whose usage a new call counts against (the rest is Redis's clock).
    public let wallClock: WallClock

    public init(redis: RedisClient, keys: RedisKeys, leaseTime: Duration = .seconds(30), wallClock: WallClock = .system) {
        self.redis = redis
        self.keys = keys
        self.leaseTime = leaseTime
        self.wallClock = wallClock
    }

    static let admitScript = RedisScript("""
        -- KEYS: rate TAT, leases, the month's usage. ARGV: interval us, tolerance us, max live, lease ms, call id,
        -- the month's limit in ms ('' for none).
        if ARGV[6] ~= '' and not redis.call('ZSCORE', KEYS[2], ARGV[5]) then
          local used = tonumber(redis.call('HGET', KEYS[3], 'call_ms') or '0')
          if used >= tonumber(ARGV[6]) then return {3, string.format('%.0f', used), 0} end
        end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or now)
        if tat < now then tat = now end
        local allow_at = tat - tonumber(ARGV[2])
        if now < allow_at then return {0, string.format('%.0f', allow_at - now), 0} end
        local now_ms = math.floor(now / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now_ms))
        local live = redis.call('ZCARD', KEYS[2])
        if redis.call('ZSCORE', KEYS[2], ARGV[5]) then return {1, '0', live} end
        if live >= tonumber(ARGV[3]) then return {2, '0', live} end
        local new_tat = tat + tonumber(ARGV[1])
        redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
        redis.call('ZADD', KEYS[2], string.format('%.0f', now_ms + tonumber(ARGV[4])), ARGV[5])
        redis.call('PEXPIRE', KEYS[2], string.format('%.0f', tonumber(ARGV[4]) * 2))
        return {1, '0', live + 1}
        """)

    static let renewScript = RedisScript("""
        -- KEYS: the leases set of each call. ARGV: lease ms, then the call ids in the same order.
        local t = redis.call('TIME')
        local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
        local expiry = string.format('%.0f', now_ms + tonumber(ARGV[1]))
        local renewed = 0
        for i, key in ipairs(KEYS) do
          redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now_ms))
          -- Only a lease that still exists: one that expired was given back and stays given back.
          if redis.call('ZSCORE', key, ARGV[i + 1]) then
            redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
            renewed = renewed + 1
          end
          redis.call('PEXPIRE', key, tonumber(ARGV[1]) * 2)
        end
        return renewed
        """)

    /// Admits a new call for `policy`'s tenant, or says why not. Admitting the same call id again (a retry)
    /// takes nothing more. The month whose usage counts is the one this store's wall clock is in.
    public func admit(_ policy: TenantPolicy, callID: String,
                      deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> Decision {
        let gcra = policy.gcra
        let limit = policy.monthlyLimitMillis
        let reply = try await redis.evaluate(Self.admitScript, keys: [keys.tenantRate(policy.id), keys.tenantLeases(policy.id),
                                                                      keys.usage(policy.id, month: UsagePeriod.month(wallClock.unixMillis))],
                                             arguments: [String(gcra.interval), String(gcra.tolerance), String(policy.maxLiveCalls),
                                                         String(leaseTime.milliseconds), callID, limit.map(String.init) ?? ""], deadline: deadline)
        guard let parts = reply.array, parts.count == 3, let verdict = parts[0].int, let wait = parts[1].int, let live = parts[2].int
        else { throw SwitchboardError(.internalError, "unexpected reply from the admission script: \(reply)") }
        switch verdict {
        case 1: return .admitted(live: Int(live))
        case 0: return .rateLimited(retryAfter: .microseconds(wait))
        case 3: return .usageLimit(used: wait, limit: limit ?? 0)
        default: return .quotaExceeded(live: Int(live), max: policy.maxLiveCalls)
        }
    }

    /// A tenant's metered calls in `month` (`YYYY-MM`).
    public func usage(_ tenant: String, month: String) async throws(SwitchboardError) -> TenantUsage {
        TenantUsage(tenant: tenant, month: month, fields: try await redis.hashGetAll(keys.usage(tenant, month: month)))
    }

    /// Gives a call's lease back (the call ended).
    public func release(tenant: String, callID: String) async throws(SwitchboardError) {
        _ = try await redis.send(["ZREM", keys.tenantLeases(tenant), callID])
    }

    /// Extends the leases of live calls by `leaseTime` from now, in one round trip; returns how many were
    /// still held (a lease that expired is not brought back).
    @discardableResult
    public func renew(_ calls: [(tenant: String, callID: String)]) async throws(SwitchboardError) -> Int {
        guard !calls.isEmpty else { return 0 }
        let reply = try await redis.evaluate(Self.renewScript, keys: calls.map { keys.tenantLeases($0.tenant) },
                                             arguments: [String(leaseTime.milliseconds)] + calls.map(\.callID))
        return Int(reply.int ?? 0)
    }

    static let liveScript = RedisScript("""
        local t = redis.call('TIME')
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)))
        return redis.call('ZCARD', KEYS[1])
        """)

    /// Live calls holding a lease now (expired leases are dropped first).
    public func live(tenant: String) async throws(SwitchboardError) -> Int {
        Int(try await redis.evaluate(Self.liveScript, keys: [keys.tenantLeases(tenant)]).int ?? 0)
    }
}

