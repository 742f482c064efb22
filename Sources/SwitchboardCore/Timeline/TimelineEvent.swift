import Foundation

/// One thing that happened to a call, as one member of the cluster saw it: an entry of the call's timeline
/// (`GET /v1/calls/{id}/timeline`, a capped Redis stream per call). Its time is the observer's clock, in Unix
/// milliseconds. See docs/api.md ("Timeline").
public struct TimelineEvent: Codable, Sendable, Equatable {
    public enum Source: String, Codable, Sendable, CaseIterable {
        case router, worker, gateway
    }

    public var atMillis: Int64
    public var source: Source
    /// The router's, worker's or gateway's id.
    public var member: String
    /// What happened (`placed`, `offer_failed`, `started`, `migrated`, `ended`...; docs/api.md lists them).
    public var type: String
    public var attributes: [String: String]

    public static let maxAttributes = 16
    public static let maxValueBytes = 256

    public init(atMillis: Int64, source: Source, member: String, type: String, attributes: [String: String] = [:]) {
        self.atMillis = atMillis
        self.source = source
        self.member = member
        self.type = type
        self.attributes = attributes
    }

    enum CodingKeys: String, CodingKey {
        case source, member, type, attributes
        case atMillis = "at_ms"
    }

    /// An event as written: an identifier for its type and member, at most 16 attributes of short text.
    public func validate() throws(SwitchboardError) {
        try WireCheck.unixMillis(atMillis, "at_ms")
        try WireCheck.identifier(member, "member")
        try WireCheck.identifier(type, "type")
        guard attributes.count <= Self.maxAttributes else {
            throw SwitchboardError(.tooLarge, "a timeline event has at most \(Self.maxAttributes) attributes, not \(attributes.count)")
        }
        for (name, value) in attributes {
            try WireCheck.identifier(name, "attribute")
            try WireCheck.text(value, name, max: Self.maxValueBytes, allowEmpty: true)
        }
    }

    /// The event as a Redis stream entry's fields: `t`, `src`, `id`, `type`, then `a.<name>` for each attribute.
    public var streamFields: [String] {
        var fields = ["t", String(atMillis), "src", source.rawValue, "id", member, "type", type]
        for name in attributes.keys.sorted() { fields += ["a." + name, attributes[name]!] }
        return fields
    }

    /// An event from a stream entry's fields; nil for an entry that is not one (it is skipped, not fatal).
    public init?(streamFields fields: [(String, String)]) {
        var at: Int64?, source: Source?, member: String?, type: String?
        var attributes: [String: String] = [:]
        for (name, value) in fields {
            switch name {
            case "t": at = Int64(value)
            case "src": source = Source(rawValue: value)
            case "id": member = value
            case "type": type = value
            default: if name.hasPrefix("a.") { attributes[String(name.dropFirst(2))] = value }
            }
        }
        guard let at, let source, let member, let type else { return nil }
        self.init(atMillis: at, source: source, member: member, type: type, attributes: attributes)
    }
}

/// A call's timeline as the API answers it: its events in time order (ties in the order they were written),
/// and how many were left out over the cap.
public struct Timeline: Codable, Sendable, Equatable {
    public var callID: String
    public var events: [TimelineEvent]
    public var dropped: Int64

    enum CodingKeys: String, CodingKey {
        case events, dropped
        case callID = "call_id"
    }

    /// `events` in stream order, sorted by time (stable: one member's events keep their order).
    public init(callID: String, events: [TimelineEvent], dropped: Int64) {
        self.callID = callID
        self.events = events.enumerated().sorted { ($0.element.atMillis, $0.offset) < ($1.element.atMillis, $1.offset) }.map(\.element)
        self.dropped = dropped
    }
}
