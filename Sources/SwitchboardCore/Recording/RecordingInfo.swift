import Foundation

/// What is known of one call's recording, kept beside it as `<callID>.json`: whose it is, where it starts on
/// the call's media clock (so the page lines it up with the timeline), and how it ended.
///
/// On disk, under the recordings directory (a shared volume when the gateways and routers are apart):
/// `<tenant>/<callID>.opus` (two-channel Ogg Opus, caller left, agent right), `<tenant>/<callID>.peaks` (two bytes
/// per 20 ms frame: the caller's and the agent's loudest sample, 0...255 on a square-root scale) and
/// `<tenant>/<callID>.json` (this).
public struct RecordingInfo: Codable, Sendable, Equatable {
    public var callID: String
    public var tenant: String
    /// The gateway that recorded it.
    public var gateway: String
    /// Unix ms of the first frame, on the gateway's media clock (the timeline's clock for gateway events).
    public var startedAtMillis: Int64
    public var sampleRate: Int
    public var bitrate: Int
    /// Milliseconds of audio written.
    public var durationMillis: Int64
    public var bytes: Int64
    /// Stopped at the longest recording allowed; the call went on.
    public var capped: Bool
    /// The recording is over (false while the call is on, or when its gateway stopped before it could close it).
    public var complete: Bool

    public static let frameMillis: Int64 = 20

    enum CodingKeys: String, CodingKey {
        case tenant, gateway, bitrate, bytes, capped, complete
        case callID = "call_id", startedAtMillis = "started_at_ms", sampleRate = "sample_rate", durationMillis = "duration_ms"
    }

    public init(callID: String, tenant: String, gateway: String, startedAtMillis: Int64, sampleRate: Int, bitrate: Int,
                durationMillis: Int64 = 0, bytes: Int64 = 0, capped: Bool = false, complete: Bool = false) {
        self.callID = callID
        self.tenant = tenant
        self.gateway = gateway
        self.startedAtMillis = startedAtMillis
        self.sampleRate = sampleRate
        self.bitrate = bitrate
        self.durationMillis = durationMillis
        self.bytes = bytes
        self.capped = capped
        self.complete = complete
    }

    /// Read back from disk like network input: a file someone edited is refused, not trusted.
    public static func decodeStored(_ bytes: [UInt8]) throws(SwitchboardError) -> RecordingInfo {
        let info: RecordingInfo
        do {
            info = try JSONDecoder().decode(RecordingInfo.self, from: Data(bytes))
        } catch {
            throw SwitchboardError(.badMessage, "recording info cannot be read: \(error)")
        }
        try WireCheck.identifier(info.callID, "call_id")
        try WireCheck.identifier(info.tenant, "tenant")
        return info
    }

    /// The files of a call's recording, relative to the recordings directory. Both parts must be identifiers
    /// (letters, digits, `-`, `_`): no path leaves the directory.
    public static func paths(tenant: String, callID: String) throws(SwitchboardError) -> (audio: String, peaks: String, info: String) {
        try WireCheck.identifier(tenant, "tenant")
        try WireCheck.identifier(callID, "call id")
        let base = "\(tenant)/\(callID)"
        return ("\(base).opus", "\(base).peaks", "\(base).json")
    }
}

/// One HTTP byte range (RFC 9110 §14) of a resource of `size` bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
/// Several ranges in one header are not served (the whole file is, as RFC 9110 allows).
public enum ByteRange {
    /// The half-open range asked for; nil for no header, or one this does not serve (then: the whole).
    /// - Throws: `range_not_satisfiable` for a range wholly past the end.
    public static func parse(_ header: String?, size: Int64) throws(SwitchboardError) -> Range<Int64>? {
        guard let header, header.hasPrefix("bytes="), !header.contains(",") else { return nil }
        let spec = header.dropFirst("bytes=".count).trimmingCharacters(in: .whitespaces)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let first = parts[0].isEmpty ? nil : Int64(parts[0]), last = parts[1].isEmpty ? nil : Int64(parts[1])
        let unsatisfiable = SwitchboardError(.rangeNotSatisfiable, "range \(spec) is outside the \(size) bytes", context: ["size": "\(size)"])
        switch (parts[0].isEmpty, parts[1].isEmpty) {
        case (true, true):
            return nil
        case (true, false):  // the last n bytes
            guard let n = last, n >= 0 else { return nil }
            guard n > 0, size > 0 else { throw unsatisfiable }
            return max(0, size - n)..<size
        case (false, _):
            guard let start = first, start >= 0 else { return nil }
            if !parts[1].isEmpty { guard let end = last, end >= start else { return nil } }
            guard start < size else { throw unsatisfiable }
            return start..<min(size, (last ?? size - 1) + 1)
        }
    }
}
