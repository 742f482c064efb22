import Foundation

/// A call as Redis keeps it (hash `<prefix>:call:<id>`): written by the router at placement and by the
/// worker as the call starts and ends.
public struct CallRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Accepted by a worker and recorded by the router; the worker has not reported it started.
        case placed
        case active
        case ended
    }

    public var callID: String
    public var tenant: String
    public var workerID: String
    public var version: String
    public var region: String
    public var state: State
    /// Unix time in milliseconds.
    public var createdAt: Int64?
    public var startedAt: Int64?
    public var endedAt: Int64?
    public var endReason: String?
    /// The caller's metadata for the handler (kept so another worker can take the call on).
    public var metadata: [String: String]
    /// The latest checkpoint's sequence number; nil before the first.
    public var checkpointSeq: UInt64?
    /// Times the call moved to another worker (migration or failover).
    public var moves: Int
    /// The call's trace (its route span's W3C `traceparent`) when the router that placed it traces: later spans
    /// of the call (moves, failovers, its end) join it.
    public var traceparent: String?
    /// Ownership epoch: 1 at placement, bumped by each worker that takes the call on. Every write a worker
    /// makes to the call is conditional on it, so a worker that lost the call (it was cut off, it stalled)
    /// cannot speak or write for it (see docs/decisions/0008-failure-detection.md).
    public var epoch: Int64
    /// Epochs above this are refused as malformed (a call moving once a second would take 30,000 years).
    public static let maxEpoch: Int64 = 1 << 40

    enum CodingKeys: String, CodingKey {
        case tenant, version, region, state, metadata, moves, epoch, traceparent
        case callID = "call_id", workerID = "worker_id", createdAt = "created_at", startedAt = "started_at"
        case endedAt = "ended_at", endReason = "end_reason", checkpointSeq = "checkpoint_seq"
    }

    public init(callID: String, tenant: String, workerID: String, version: String, region: String, state: State,
                createdAt: Int64? = nil, startedAt: Int64? = nil, endedAt: Int64? = nil, endReason: String? = nil,
                metadata: [String: String] = [:], checkpointSeq: UInt64? = nil, moves: Int = 0, epoch: Int64 = 1) {
        self.metadata = metadata
        self.epoch = epoch
        self.checkpointSeq = checkpointSeq
        self.moves = moves
        self.callID = callID
        self.tenant = tenant
        self.workerID = workerID
        self.version = version
        self.region = region
        self.state = state
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.endReason = endReason
    }

    /// Fields the router writes at placement (no state: the worker owns it).
    public var placementFields: [(String, String)] {
        var f = [("tenant", tenant), ("worker_id", workerID), ("version", version), ("region", region)]
        if let createdAt { f.append(("created_at", String(createdAt))) }
        if !metadata.isEmpty { f.append(("metadata", String(decoding: WireCodec.encode(metadata), as: UTF8.self))) }
        if let traceparent { f.append(("traceparent", traceparent)) }
        return f
    }

    /// Reads a record from the hash's fields; nil when the hash is empty or lacks the placement fields.
    public init?(callID: String, fields: [String: String]) {
        guard let tenant = fields["tenant"], let worker = fields["worker_id"] else { return nil }
        self.callID = callID
        self.tenant = tenant
        self.workerID = worker
        self.version = fields["version"] ?? ""
        self.region = fields["region"] ?? ""
        self.state = fields["state"].flatMap(State.init(rawValue:)) ?? .placed
        self.createdAt = fields["created_at"].flatMap { Int64($0) }
        self.startedAt = fields["started_at"].flatMap { Int64($0) }
        self.endedAt = fields["ended_at"].flatMap { Int64($0) }
        self.endReason = fields["end_reason"]
        self.metadata = fields["metadata"].flatMap { try? JSONDecoder().decode([String: String].self, from: Data($0.utf8)) } ?? [:]
        self.checkpointSeq = fields["checkpoint_seq"].flatMap { UInt64($0) }
        self.moves = fields["moves"].flatMap { Int($0) } ?? 0
        self.epoch = fields["epoch"].flatMap { Int64($0) }.map { min(max($0, 1), Self.maxEpoch) } ?? 1
        self.traceparent = fields["traceparent"].flatMap { $0.utf8.count == 55 ? $0 : nil }
    }
}
