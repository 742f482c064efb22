/// A tenant's metered calls in one calendar month (UTC), as Redis keeps them: call time in milliseconds of
/// Redis's clock, by month and by day, and the calls started. Workers meter their calls as they run (each
/// refresh adds the time since the last one, fenced by the call's record, so a call moved to another worker
/// is counted once), and the call's end adds the rest. See docs/api.md ("Usage and cost").
public struct TenantUsage: Sendable, Equatable {
    public var tenant: String
    /// `YYYY-MM`.
    public var month: String
    public var callMillis: Int64
    public var calls: Int64
    /// Call time by day of the month (1-31).
    public var days: [Int: Int64]
    /// CPU time of the calls' agent processes (calls hosted by an agent process of their own; others add none).
    public var agentCPUMillis: Int64

    public init(tenant: String, month: String, callMillis: Int64 = 0, calls: Int64 = 0, days: [Int: Int64] = [:], agentCPUMillis: Int64 = 0) {
        self.tenant = tenant
        self.month = month
        self.callMillis = callMillis
        self.calls = calls
        self.days = days
        self.agentCPUMillis = agentCPUMillis
    }

    /// Field names in the month's Redis hash.
    public static let callMillisField = "call_ms"
    public static let callsField = "calls"
    public static let agentCPUMillisField = "agent_cpu_ms"
    public static func dayField(_ day: Int) -> String { day < 10 ? "d0\(day)" : "d\(day)" }

    /// From the month's Redis hash (fields it does not know are left out).
    public init(tenant: String, month: String, fields: [String: String]) {
        self.init(tenant: tenant, month: month)
        for (field, value) in fields {
            guard let n = Int64(value) else { continue }
            switch field {
            case Self.callMillisField: callMillis = n
            case Self.callsField: calls = n
            case Self.agentCPUMillisField: agentCPUMillis = n
            default:
                if field.hasPrefix("d"), let day = Int(field.dropFirst()), (1...31).contains(day) { days[day] = n }
            }
        }
    }

    public var minutes: Double { Double(callMillis) / 60_000 }
}

/// What `GET /v1/tenants/{t}/usage` and `switchboard tenant usage` show: the month's use, its cost at the
/// tenant's price, and its limit.
public struct UsageReport: Codable, Sendable, Equatable {
    public struct Day: Codable, Sendable, Equatable {
        public var day: String
        public var callSeconds: Double
        enum CodingKeys: String, CodingKey { case day, callSeconds = "call_seconds" }
    }

    public var tenant: String
    public var month: String
    public var callSeconds: Double
    public var minutes: Double
    public var calls: Int64
    /// CPU seconds of the calls' agent processes, where known.
    public var agentCPUSeconds: Double
    public var pricePerMinute: Double?
    public var cost: Double?
    public var monthlyMinutes: Int?
    public var monthlySpend: Double?
    /// New calls are refused until the month turns or the limit is raised.
    public var limitReached: Bool
    public var days: [Day]

    enum CodingKeys: String, CodingKey {
        case tenant, month, minutes, calls, cost, days
        case callSeconds = "call_seconds", pricePerMinute = "price_per_minute", monthlyMinutes = "monthly_minutes"
        case agentCPUSeconds = "agent_cpu_seconds"
        case monthlySpend = "monthly_spend", limitReached = "limit_reached"
    }

    public init(_ usage: TenantUsage, policy: TenantPolicy?) {
        tenant = usage.tenant
        month = usage.month
        callSeconds = Double(usage.callMillis) / 1000
        minutes = usage.minutes
        calls = usage.calls
        agentCPUSeconds = Double(usage.agentCPUMillis) / 1000
        pricePerMinute = policy?.pricePerMinute
        cost = policy?.pricePerMinute.map { $0 * usage.minutes }
        monthlyMinutes = policy?.monthlyMinutes
        monthlySpend = policy?.monthlySpend
        limitReached = policy?.monthlyLimitMillis.map { usage.callMillis >= $0 } ?? false
        days = usage.days.keys.sorted().map { day in
            Day(day: "\(usage.month)-\(day < 10 ? "0" : "")\(day)", callSeconds: Double(usage.days[day]!) / 1000)
        }
    }
}

/// Calendar months and days (UTC) of Unix times, for usage keys.
public enum UsagePeriod {
    /// `YYYY-MM` of `unixMillis`.
    public static func month(_ unixMillis: Int64) -> String {
        let (y, m, _) = civil(unixMillis)
        return "\(y)-\(m < 10 ? "0" : "")\(m)"
    }

    /// The day of the month (1-31) of `unixMillis`.
    public static func day(_ unixMillis: Int64) -> Int { civil(unixMillis).day }

    /// `text` if it is a month as `YYYY-MM` (years 2000-9999).
    public static func validMonth(_ text: String) throws(SwitchboardError) -> String {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let y = Int(parts[0]), let m = Int(parts[1]),
              (2000...9999).contains(y), (1...12).contains(m) else {
            throw SwitchboardError(.invalidArgument, "a month is YYYY-MM, not '\(text.prefix(20))'")
        }
        return text
    }

    /// Year, month, day of a Unix time (Howard Hinnant's days-to-civil).
    static func civil(_ unixMillis: Int64) -> (year: Int, month: Int, day: Int) {
        let days = Int(floorDiv(unixMillis, 86_400_000)) + 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }
}
