/// What a tenant may do: its rate of new calls, its number of live calls, where, and what happens when Redis,
/// which keeps the counts, cannot be reached. Pure; validated before it is stored or used.
public struct TenantPolicy: Codable, Sendable, Equatable {
    /// When Redis is unreachable: admit against a cap kept by each router alone, or refuse (503 `unavailable`).
    public enum WhenRedisDown: Codable, Sendable, Equatable {
        case open(localCap: Int)
        case closed
    }

    public var id: String
    /// New calls per second, sustained.
    public var callsPerSecond: Double
    /// New calls allowed at once after a quiet spell.
    public var burst: Int
    /// Live calls at most, across every router.
    public var maxLiveCalls: Int
    /// Regions the tenant's calls may be placed in; empty: any.
    public var regions: [String]
    public var whenRedisDown: WhenRedisDown
    /// The price of a minute of call, in the operator's currency: the cost shown with usage; nil, none.
    public var pricePerMinute: Double?
    /// Call minutes a calendar month (UTC) at most: new calls are refused once they are used; nil, no limit.
    public var monthlyMinutes: Int?
    /// Spending a calendar month at most, at `pricePerMinute`; nil, no limit.
    public var monthlySpend: Double?
    /// Record the tenant's calls (on gateways with a recordings directory); nil, the router's default.
    public var record: Bool?

    public static let maxRate = 100_000.0
    /// One call in 1,000 s at least: the GCRA interval (µs) then fits comfortably in 64 bits.
    public static let minRate = 0.001
    public static let maxBurst = 100_000
    public static let maxLive = 10_000_000
    public static let maxPrice = 10_000.0
    public static let maxMonthlyMinutes = 1_000_000_000
    public static let maxMonthlySpend = 1e12

    public init(id: String, callsPerSecond: Double, burst: Int, maxLiveCalls: Int, regions: [String] = [],
                whenRedisDown: WhenRedisDown = .closed) {
        self.id = id
        self.callsPerSecond = callsPerSecond
        self.burst = burst
        self.maxLiveCalls = maxLiveCalls
        self.regions = regions
        self.whenRedisDown = whenRedisDown
    }

    /// Refuses what cannot be enforced: zero, negative, not a number, or beyond what one cluster could serve.
    public func validate() throws(SwitchboardError) {
        func refuse(_ message: String) -> SwitchboardError { SwitchboardError(.invalidArgument, "tenant '\(id)': \(message)") }
        do {
            try WireCheck.identifier(id, "tenant id")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        guard callsPerSecond.isFinite, callsPerSecond >= Self.minRate, callsPerSecond <= Self.maxRate else {
            throw refuse("calls per second must be a number from \(Self.minRate) to \(Int(Self.maxRate)), not \(callsPerSecond)")
        }
        guard (1...Self.maxBurst).contains(burst) else { throw refuse("burst must be 1-\(Self.maxBurst), not \(burst)") }
        guard (1...Self.maxLive).contains(maxLiveCalls) else {
            throw refuse("max live calls must be 1-\(Self.maxLive), not \(maxLiveCalls)")
        }
        for region in regions where region.isEmpty || region.utf8.count > 64 {
            throw refuse("regions must be 1-64 characters")
        }
        if case .open(let cap) = whenRedisDown, !(1...Self.maxLive).contains(cap) {
            throw refuse("the local cap when Redis is down must be 1-\(Self.maxLive), not \(cap)")
        }
        if let price = pricePerMinute, !(price.isFinite && price >= 0 && price <= Self.maxPrice) {
            throw refuse("the price per minute must be a number from 0 to \(Int(Self.maxPrice)), not \(price)")
        }
        if let minutes = monthlyMinutes, !(1...Self.maxMonthlyMinutes).contains(minutes) {
            throw refuse("monthly minutes must be 1-\(Self.maxMonthlyMinutes), not \(minutes)")
        }
        if let spend = monthlySpend {
            guard spend.isFinite, spend > 0, spend <= Self.maxMonthlySpend else {
                throw refuse("the monthly spend must be a number above 0 and up to 1e12, not \(spend)")
            }
            guard let price = pricePerMinute, price > 0 else { throw refuse("a monthly spend limit needs a price per minute above 0") }
        }
    }

    /// Call time a calendar month may use, in milliseconds: the tighter of `monthlyMinutes` and what
    /// `monthlySpend` buys at `pricePerMinute`; nil when neither is set.
    public var monthlyLimitMillis: Int64? {
        let byMinutes = monthlyMinutes.map { Int64($0) * 60_000 }
        let bySpend = monthlySpend.flatMap { spend in pricePerMinute.map { Int64((spend / $0 * 60_000).rounded(.down)) } }
        switch (byMinutes, bySpend) {
        case let (a?, b?): return min(a, b)
        case let (a, b): return a ?? b
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, burst, regions
        case callsPerSecond = "calls_per_second", maxLiveCalls = "max_live_calls"
        case whenRedisDown = "when_redis_down", localCap = "local_cap"
        case pricePerMinute = "price_per_minute", monthlyMinutes = "monthly_minutes", monthlySpend = "monthly_spend"
        case record
    }

    /// `{"id", "calls_per_second", "burst", "max_live_calls", "regions", "when_redis_down": "open"|"closed",
    /// "local_cap", "price_per_minute", "monthly_minutes", "monthly_spend", "record"}`; `regions` defaults to
    /// any, `when_redis_down` to closed, the last four to none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        callsPerSecond = try c.decode(Double.self, forKey: .callsPerSecond)
        burst = try c.decode(Int.self, forKey: .burst)
        maxLiveCalls = try c.decode(Int.self, forKey: .maxLiveCalls)
        regions = try c.decodeIfPresent([String].self, forKey: .regions) ?? []
        switch try c.decodeIfPresent(String.self, forKey: .whenRedisDown) ?? "closed" {
        case "closed": whenRedisDown = .closed
        case "open": whenRedisDown = .open(localCap: try c.decode(Int.self, forKey: .localCap))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .whenRedisDown, in: c,
                                                   debugDescription: "'\(other)' is not open or closed")
        }
        pricePerMinute = try c.decodeIfPresent(Double.self, forKey: .pricePerMinute)
        monthlyMinutes = try c.decodeIfPresent(Int.self, forKey: .monthlyMinutes)
        monthlySpend = try c.decodeIfPresent(Double.self, forKey: .monthlySpend)
        record = try c.decodeIfPresent(Bool.self, forKey: .record)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(callsPerSecond, forKey: .callsPerSecond)
        try c.encode(burst, forKey: .burst)
        try c.encode(maxLiveCalls, forKey: .maxLiveCalls)
        try c.encode(regions, forKey: .regions)
        switch whenRedisDown {
        case .closed: try c.encode("closed", forKey: .whenRedisDown)
        case .open(let cap):
            try c.encode("open", forKey: .whenRedisDown)
            try c.encode(cap, forKey: .localCap)
        }
        try c.encodeIfPresent(pricePerMinute, forKey: .pricePerMinute)
        try c.encodeIfPresent(monthlyMinutes, forKey: .monthlyMinutes)
        try c.encodeIfPresent(monthlySpend, forKey: .monthlySpend)
        try c.encodeIfPresent(record, forKey: .record)
    }

    /// GCRA's emission interval (the time one call uses up) and tolerance (how far ahead of it a burst may run).
    public var gcra: GCRA { GCRA(callsPerSecond: callsPerSecond, burst: burst) }
}

/// The generic cell rate algorithm (as redis-cell's `CL.THROTTLE`): one stored time per tenant, the theoretical
/// arrival time (TAT) of the next call at the sustained rate; no background drip. Pure, in microseconds, so the
/// Redis script and a router's local fallback agree.
public struct GCRA: Sendable, Equatable {
    /// Time one call uses up at the sustained rate.
    public let interval: Int64
    /// How far the TAT may run ahead of now: room for `burst` calls at once.
    public let tolerance: Int64

    public init(callsPerSecond: Double, burst: Int) {
        interval = max(1, Int64((1_000_000 / callsPerSecond).rounded()))
        tolerance = interval * Int64(max(0, burst - 1))
    }

    public enum Decision: Equatable, Sendable {
        case allow(newTAT: Int64)
        /// Refused; the caller may try again after this many microseconds.
        case deny(retryAfter: Int64)
    }

    /// Decides one call at `now` given the stored TAT (nil: none stored, a quiet tenant).
    public func decide(tat stored: Int64?, now: Int64) -> Decision {
        let tat = max(stored ?? now, now)
        let allowAt = tat - tolerance
        guard now >= allowAt else { return .deny(retryAfter: allowAt - now) }
        return .allow(newTAT: tat + interval)
    }
}
