import Foundation

/// A search of the calls list (`GET /v1/calls`): a time window (by when each call was placed), an optional
/// tenant, end reason, worker, version and state, a page size and where the last page stopped. Pure: parsed
/// and checked from the request's query, and matched against records.
///
/// Calls are found through a per-day index Redis keeps beside the records (`RedisKeys.callIndex`), newest
/// first; one request examines at most `maxExamined` index entries and says where to go on (`next`), so a
/// search that matches little never scans a day of calls at once.
public struct CallQuery: Sendable, Equatable {
    public var tenant: String?
    public var sinceMillis: Int64
    public var untilMillis: Int64
    public var endReason: String?
    public var worker: String?
    public var version: String?
    public var state: CallRecord.State?
    public var limit: Int
    public var cursor: Cursor?

    /// Where a page stopped: the day (an index into `days`) and how many of its entries were examined.
    public struct Cursor: Sendable, Equatable {
        public var day: Int
        public var offset: Int

        public init(day: Int, offset: Int) {
            self.day = day
            self.offset = offset
        }

        public var text: String { "\(day).\(offset)" }
    }

    public static let maxSpanDays = 31
    public static let maxLimit = 200
    public static let maxExamined = 2_000
    static let dayMillis: Int64 = 86_400_000

    public init(tenant: String? = nil, sinceMillis: Int64, untilMillis: Int64, limit: Int = 50) {
        self.tenant = tenant
        self.sinceMillis = sinceMillis
        self.untilMillis = untilMillis
        self.limit = limit
    }

    /// From a request's query: `tenant`, `since` and `until` (Unix ms, or RFC 3339 like `2026-12-06T10:00:00Z`;
    /// default: the last 24 hours up to now), `end_reason`, `worker`, `version`, `state` (`placed`, `active`,
    /// `ended`), `limit` (1-200, default 50) and `cursor` (a page's `next`).
    public static func parse(_ query: [String: String], nowMillis: Int64) throws(SwitchboardError) -> CallQuery {
        func bad(_ message: String) -> SwitchboardError { SwitchboardError(.invalidArgument, message) }
        func time(_ name: String) throws(SwitchboardError) -> Int64? {
            guard let text = query[name], !text.isEmpty else { return nil }
            if let ms = Int64(text), ms >= 0 { return ms }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime]
            if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
            throw bad("\(name) must be Unix milliseconds or an RFC 3339 time (2026-12-06T10:00:00Z), not '\(text.prefix(64))'")
        }
        func identifier(_ name: String) throws(SwitchboardError) -> String? {
            guard let text = query[name], !text.isEmpty else { return nil }
            do {
                try WireCheck.identifier(text, name)
            } catch {
                throw bad(error.message)
            }
            return text
        }
        let until = try time("until") ?? nowMillis
        let since = try time("since") ?? until - dayMillis
        guard since <= until else { throw bad("since must not be after until") }
        guard until - since <= Int64(maxSpanDays) * dayMillis else { throw bad("since and until may be \(maxSpanDays) days apart at most") }
        var q = CallQuery(tenant: try identifier("tenant"), sinceMillis: since, untilMillis: until)
        q.worker = try identifier("worker")
        if let reason = query["end_reason"], !reason.isEmpty {
            guard reason.utf8.count <= 64, reason.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || (0x61...0x7A).contains($0) }) else {
                throw bad("end_reason must be a reason such as caller or worker_lost")
            }
            q.endReason = reason
        }
        if let version = query["version"], !version.isEmpty {
            do {
                try WireCheck.text(version, "version", max: 128)
            } catch {
                throw bad(error.message)
            }
            q.version = version
        }
        if let state = query["state"], !state.isEmpty {
            guard let parsed = CallRecord.State(rawValue: state) else { throw bad("state must be placed, active or ended, not '\(state.prefix(32))'") }
            q.state = parsed
        }
        if let text = query["limit"] {
            guard let limit = Int(text), (1...maxLimit).contains(limit) else { throw bad("limit must be 1-\(maxLimit)") }
            q.limit = limit
        }
        if let text = query["cursor"], !text.isEmpty {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 2, let day = Int(parts[0]), let offset = Int(parts[1]), day >= 0, day < q.days.count, offset >= 0,
                  offset <= 10_000_000
            else { throw bad("cursor must be a page's next, as it was given") }
            q.cursor = Cursor(day: day, offset: offset)
        }
        return q
    }

    /// The days (`YYYY-MM-DD`, UTC) the window touches, newest first.
    public var days: [String] {
        var out: [String] = []
        var at = untilMillis
        while true {
            out.append(Self.day(at))
            let start = at - at % Self.dayMillis
            guard start > sinceMillis else { break }
            at = start - 1
        }
        return out
    }

    /// `YYYY-MM-DD` (UTC) of `unixMillis`.
    public static func day(_ unixMillis: Int64) -> String {
        let day = UsagePeriod.day(unixMillis)
        return "\(UsagePeriod.month(unixMillis))-\(day < 10 ? "0" : "")\(day)"
    }

    /// Whether `entry` is one this search asks for (its time and tenant are the index's business).
    public func matches(_ entry: CallListEntry) -> Bool {
        if let tenant, entry.tenant != tenant { return false }
        guard endReason != nil || worker != nil || version != nil || state != nil else { return true }
        guard let record = entry.record else { return false }  // expired: nothing left to match on
        if let endReason, record.endReason != endReason { return false }
        if let worker, record.workerID != worker { return false }
        if let version, record.version != version { return false }
        if let state, record.state != state { return false }
        return true
    }
}

/// One call of the list: its id, tenant and when it was placed, from the index, and its record while Redis
/// keeps it (nil once it expired: its timeline and recording may outlive it).
public struct CallListEntry: Codable, Sendable, Equatable {
    public var callID: String
    public var tenant: String
    public var placedAtMillis: Int64
    public var record: CallRecord?

    enum CodingKeys: String, CodingKey {
        case tenant, record
        case callID = "call_id", placedAtMillis = "placed_at_ms"
    }

    public init(callID: String, tenant: String, placedAtMillis: Int64, record: CallRecord?) {
        self.callID = callID
        self.tenant = tenant
        self.placedAtMillis = placedAtMillis
        self.record = record
    }
}

/// A page of the calls list, newest first; `next` goes on where it stopped (nil: nothing more).
public struct CallList: Codable, Sendable, Equatable {
    public var calls: [CallListEntry]
    public var next: String?
    /// Index entries examined for this page.
    public var examined: Int

    public init(calls: [CallListEntry], next: String?, examined: Int) {
        self.calls = calls
        self.next = next
        self.examined = examined
    }
}
