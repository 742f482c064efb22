/// A call's saved state: the handler's own state (JSON) and where its outgoing audio stood, so another
/// worker can take the call on where it was. Kept in the call record (`checkpoint`, `checkpoint_seq`).
public struct Checkpoint: WireMessage, Equatable {
    public static let wireVersion = 1
    /// The state as JSON text inside JSON: escaping can double it.
    public static var maxBytes: Int { maxStateBytes * 2 + 1024 }
    public var v = Checkpoint.wireVersion
    /// Grows by one with every checkpoint of the call, whichever worker takes it.
    public var seq: UInt64
    /// The handler's state as JSON text, at most `maxStateBytes`; nil when the handler keeps none.
    public var state: String?
    /// The next outgoing media packet's sequence number and timestamp.
    public var mediaSequence: UInt32
    public var mediaTimestamp: UInt32
    /// Unix time in milliseconds when it was taken.
    public var takenAtMillis: Int64

    public static let maxStateBytes = 64 * 1024

    enum CodingKeys: String, CodingKey {
        case v, seq, state
        case mediaSequence = "media_seq", mediaTimestamp = "media_ts", takenAtMillis = "taken_at_ms"
    }

    public init(seq: UInt64, state: String?, mediaSequence: UInt32, mediaTimestamp: UInt32, takenAtMillis: Int64) {
        self.seq = seq
        self.state = state
        self.mediaSequence = mediaSequence
        self.mediaTimestamp = mediaTimestamp
        self.takenAtMillis = takenAtMillis
    }

    public func validate() throws(SwitchboardError) {
        if let state, state.utf8.count > Self.maxStateBytes {
            throw SwitchboardError(.tooLarge, "checkpoint state of \(state.utf8.count) bytes is over \(Self.maxStateBytes)")
        }
        try WireCheck.unixMillis(takenAtMillis, "taken_at_ms")
    }

    /// Reads the record's `checkpoint` field; nil (with the reason) when it is missing or unusable.
    public static func parse(_ text: String?) -> Result<Checkpoint, SwitchboardError>? {
        guard let text else { return nil }
        return Result { () throws(SwitchboardError) in try decode(Array(text.utf8)) }
    }

    /// Where the outgoing audio resumes `elapsedMillis` after the checkpoint: packets continue in number and
    /// time, skipping those the caller never got.
    public func mediaPosition(elapsedMillis: Int64) -> (sequence: UInt32, timestamp: UInt32) {
        // UInt32 arithmetic wraps, as sequence numbers and timestamps do on the wire.
        let frames = UInt32(truncatingIfNeeded: max(0, elapsedMillis) / 20)
        return (mediaSequence &+ frames, mediaTimestamp &+ frames &* 960)
    }
}

/// Why a call is taken on by another worker.
public enum ResumeReason: String, Codable, Sendable {
    /// Moved live from a worker that still holds it (drain deadline, `call migrate`).
    case migrate
    /// Its worker died.
    case failover
}

/// In an offer: take on a call that is already running, from its checkpoint.
public struct Resume: Codable, Sendable, Equatable {
    public var reason: ResumeReason
    public var fromWorker: String
    public var checkpoint: Checkpoint
    /// The ownership epoch the call's record held when it was read: the worker taking it on claims it only
    /// if the record still holds it (nil from a router that predates epochs: then only if the record still
    /// names `fromWorker`).
    public var epoch: Int64?

    enum CodingKeys: String, CodingKey {
        case reason, checkpoint, epoch
        case fromWorker = "from_worker"
    }

    public init(reason: ResumeReason, fromWorker: String, checkpoint: Checkpoint, epoch: Int64? = nil) {
        self.reason = reason
        self.fromWorker = fromWorker
        self.checkpoint = checkpoint
        self.epoch = epoch
    }
}

/// `<prefix>.worker.<id>.control` (request): an operator's or a router's order to one worker.
public struct WorkerControl: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = WorkerControl.wireVersion
    public var op: Op
    public var callID: String?
    public var drain: DrainRequest?

    public enum Op: String, Codable, Sendable {
        /// Start (or re-time) a drain: `drain` says until when and what then.
        case drain
        /// Cancel a drain.
        case undrain
        /// Migration, step 1: stop sending the call's audio and checkpoint it now; the answer holds the checkpoint.
        case hold
        /// Migration failed: send the call's audio again.
        case unhold
        /// Migration, last step: another worker has the call; let go of it without ending it.
        case release
    }

    enum CodingKeys: String, CodingKey {
        case v, op, drain
        case callID = "call_id"
    }

    public init(_ op: Op, callID: String? = nil, drain: DrainRequest? = nil) {
        self.op = op
        self.callID = callID
        self.drain = drain
    }

    public func validate() throws(SwitchboardError) {
        switch op {
        case .drain:
            guard let drain else { throw SwitchboardError(.badMessage, "'drain' needs the drain request") }
            try drain.validate()
        case .undrain: break
        case .hold, .unhold, .release:
            guard let callID else { throw SwitchboardError(.badMessage, "'\(op.rawValue)' needs a 'call_id'") }
            try WireCheck.identifier(callID, "call_id")
        }
    }
}

/// A worker's answer to a `WorkerControl`.
public struct WorkerControlReply: WireMessage, Equatable {
    public static let wireVersion = 1
    public static var maxBytes: Int { Checkpoint.maxBytes + 1024 }
    public var v = WorkerControlReply.wireVersion
    public var ok: Bool
    public var error: ErrorBody?
    public var state: WorkerState
    public var activeCalls: Int
    /// For `hold`: the checkpoint just taken.
    public var checkpoint: Checkpoint?

    enum CodingKeys: String, CodingKey {
        case v, ok, error, state, checkpoint
        case activeCalls = "active_calls"
    }

    public init(ok: Bool, error: ErrorBody? = nil, state: WorkerState, activeCalls: Int, checkpoint: Checkpoint? = nil) {
        self.ok = ok
        self.error = error
        self.state = state
        self.activeCalls = activeCalls
        self.checkpoint = checkpoint
    }

    public func validate() throws(SwitchboardError) {
        if !ok && error == nil { throw SwitchboardError(.badMessage, "a failed control reply needs an 'error'") }
        try checkpoint?.validate()
    }
}

/// `<prefix>.migrate` (request, queue group `routers`): move a call to another worker. Sent by a draining
/// worker at its deadline; the CLI's `call migrate` goes through the HTTP API.
public struct MigrateRequest: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = MigrateRequest.wireVersion
    public var callID: String
    public var requestedBy: String

    enum CodingKeys: String, CodingKey {
        case v
        case callID = "call_id", requestedBy = "requested_by"
    }

    public init(callID: String, requestedBy: String) {
        self.callID = callID
        self.requestedBy = requestedBy
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(callID, "call_id")
        try WireCheck.text(requestedBy, "requested_by", max: 128)
    }
}

/// The answer to a migration: where the call went and how long its audio paused.
public struct Migration: Codable, Sendable, Equatable {
    public var callID: String
    public var fromWorker: String
    public var toWorker: String
    /// From the old worker holding its audio to the new one taking the call, in milliseconds.
    public var pauseMillis: Double

    enum CodingKeys: String, CodingKey {
        case callID = "call_id", fromWorker = "from_worker", toWorker = "to_worker", pauseMillis = "pause_ms"
    }

    public init(callID: String, fromWorker: String, toWorker: String, pauseMillis: Double) {
        self.callID = callID
        self.fromWorker = fromWorker
        self.toWorker = toWorker
        self.pauseMillis = pauseMillis
    }
}

/// The NATS reply to a `MigrateRequest`.
public struct MigrateReply: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = MigrateReply.wireVersion
    public var migration: Migration?
    public var error: ErrorBody?

    public init(_ migration: Migration) { self.migration = migration }
    public init(error: SwitchboardError) { self.error = error.apiBody }

    public func validate() throws(SwitchboardError) {
        guard (migration == nil) != (error == nil) else {
            throw SwitchboardError(.badMessage, "a migrate reply holds exactly one of 'migration' and 'error'")
        }
    }
}

/// `<prefix>.call.<id>.events`: what happened to a call, for callers and tests to follow.
public struct CallEvent: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = CallEvent.wireVersion
    public var callID: String
    public var event: Kind
    public var workerID: String
    public var fromWorker: String?
    public var reason: String?
    public var atMillis: Int64

    public enum Kind: String, Codable, Sendable {
        case placed, migrating, migrated, resumed, ended
    }

    enum CodingKeys: String, CodingKey {
        case v, event, reason
        case callID = "call_id", workerID = "worker_id", fromWorker = "from_worker", atMillis = "at_ms"
    }

    public init(callID: String, event: Kind, workerID: String, fromWorker: String? = nil, reason: String? = nil, atMillis: Int64) {
        self.callID = callID
        self.event = event
        self.workerID = workerID
        self.fromWorker = fromWorker
        self.reason = reason
        self.atMillis = atMillis
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(callID, "call_id")
        try WireCheck.identifier(workerID, "worker_id")
        if let fromWorker { try WireCheck.identifier(fromWorker, "from_worker") }
        try WireCheck.unixMillis(atMillis, "at_ms")
    }
}

/// `<prefix>.drains` (broadcast): a worker's drain began or was cancelled; every router stops (or resumes)
/// placing on it at once, before the worker's next heartbeat.
public struct DrainNotice: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = DrainNotice.wireVersion
    public var workerID: String
    /// The drain, or nil when it was cancelled or finished.
    public var drain: DrainRequest?

    enum CodingKeys: String, CodingKey {
        case v, drain
        case workerID = "worker_id"
    }

    public init(workerID: String, drain: DrainRequest?) {
        self.workerID = workerID
        self.drain = drain
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(workerID, "worker_id")
        try drain?.validate()
    }
}

/// A router taking on a dead worker's call tells every router (`<prefix>.resumptions`). While the call waits for
/// a free slot (the notice is repeated at each attempt), every router keeps free slots for it before new calls
/// and moves; when it is done, where it went, so that the slot it took counts at once in every router's view.
public struct ResumptionNotice: WireMessage, Equatable {
    public static let wireVersion = 1
    /// The longest a waiting call holds slots without being announced again.
    public static let holdRange: ClosedRange<Int64> = 1...60_000
    public var v = ResumptionNotice.wireVersion
    public var callID: String
    /// The router taking it on (its own notices come back to it on the bus).
    public var routerID: String
    /// Waiting: hold a slot for the call this long from when the notice is heard. Nil: it no longer waits.
    public var holdMillis: Int64?
    /// Done and taken on: the worker that accepted it and the accept's sequence (its heartbeats show the call
    /// from that one on). Nil with `holdMillis` nil: lost, or taken on by nobody's offer (the worker came back).
    public var workerID: String?
    public var acceptSeq: UInt64?

    enum CodingKeys: String, CodingKey {
        case v
        case callID = "call_id"
        case routerID = "router_id"
        case holdMillis = "hold_ms"
        case workerID = "worker_id"
        case acceptSeq = "accept_seq"
    }

    /// The call waits for a free slot; hold one for it for `hold`.
    public static func waiting(_ callID: String, router: String, hold: Duration) -> ResumptionNotice {
        ResumptionNotice(callID: callID, routerID: router, holdMillis: max(1, min(hold.milliseconds, holdRange.upperBound)))
    }

    /// The call no longer waits: taken on by `worker` with accept `acceptSeq`, or (nil) not by an offer.
    public static func done(_ callID: String, router: String, worker: String? = nil, acceptSeq: UInt64? = nil) -> ResumptionNotice {
        ResumptionNotice(callID: callID, routerID: router, workerID: worker, acceptSeq: acceptSeq)
    }

    private init(callID: String, routerID: String, holdMillis: Int64? = nil, workerID: String? = nil, acceptSeq: UInt64? = nil) {
        self.callID = callID
        self.routerID = routerID
        self.holdMillis = holdMillis
        self.workerID = workerID
        self.acceptSeq = acceptSeq
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(callID, "call_id")
        try WireCheck.identifier(routerID, "router_id")
        if let holdMillis { try WireCheck.range(holdMillis, Self.holdRange, "hold_ms") }
        if let workerID { try WireCheck.identifier(workerID, "worker_id") }
        guard (workerID == nil) == (acceptSeq == nil) else {
            throw SwitchboardError(.badMessage, "'worker_id' and 'accept_seq' come together", context: ["field": "accept_seq"])
        }
        guard holdMillis == nil || workerID == nil else {
            throw SwitchboardError(.badMessage, "a call waiting ('hold_ms') has no worker yet", context: ["field": "worker_id"])
        }
    }
}

/// One operator action, as the audit stream in Redis keeps it (`<prefix>:audit`).
public struct AuditEntry: Codable, Sendable, Equatable {
    /// The stream entry's id (Redis time-sequence), empty before it is written.
    public var id: String
    public var atMillis: Int64
    /// Who: the operator's name as the client gave it, and which credential it came with.
    public var actor: String
    public var action: String
    /// What the action was on: a worker or call id.
    public var target: String
    /// `ok`, or the error code it failed with.
    public var outcome: String
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case id, actor, action, target, outcome, detail
        case atMillis = "at_ms"
    }

    public init(id: String = "", atMillis: Int64, actor: String, action: String, target: String, outcome: String, detail: String = "") {
        self.id = id
        self.atMillis = atMillis
        self.actor = actor
        self.action = action
        self.target = target
        self.outcome = outcome
        self.detail = detail
    }

    /// The stream entry's fields.
    public var fields: [(String, String)] {
        [("at_ms", String(atMillis)), ("actor", actor), ("action", action), ("target", target), ("outcome", outcome), ("detail", detail)]
    }

    public init(id: String, fields: [String: String]) {
        self.init(id: id, atMillis: fields["at_ms"].flatMap { Int64($0) } ?? 0, actor: fields["actor"] ?? "",
                  action: fields["action"] ?? "", target: fields["target"] ?? "", outcome: fields["outcome"] ?? "",
                  detail: fields["detail"] ?? "")
    }
}

/// `GET /v1/audit`: the latest operator actions, newest first.
public struct AuditEntries: Codable, Sendable, Equatable {
    public var entries: [AuditEntry]
    public init(_ entries: [AuditEntry]) { self.entries = entries }
}
