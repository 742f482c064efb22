/// `<prefix>.route` (NATS) and `POST /v1/calls` (HTTP): a caller asks for a worker.
public struct RouteRequest: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = RouteRequest.wireVersion
    public var tenant: String
    /// The caller's region and zone; nil places anywhere.
    public var region: String?
    public var zone: String?
    /// `required` (the default): only workers in `region` (and `zone`, when given); `preferred`: workers there
    /// first, elsewhere when none can take the call.
    public var locality: Locality
    public var metadata: [String: String]
    /// Ask for the scheduler's reasoning in the answer (candidates with their scores, and why others were not).
    public var explain: Bool

    public init(tenant: String, region: String? = nil, zone: String? = nil, locality: Locality = .required,
                metadata: [String: String] = [:], explain: Bool = false) {
        self.tenant = tenant
        self.region = region
        self.zone = zone
        self.locality = locality
        self.metadata = metadata
        self.explain = explain
    }

    enum CodingKeys: String, CodingKey { case v, tenant, region, zone, locality, metadata, explain }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        v = try c.decode(Int.self, forKey: .v)
        tenant = try c.decode(String.self, forKey: .tenant)
        region = try c.decodeIfPresent(String.self, forKey: .region)
        zone = try c.decodeIfPresent(String.self, forKey: .zone)
        locality = try c.decodeIfPresent(Locality.self, forKey: .locality) ?? .required
        metadata = try c.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:]
        explain = try c.decodeIfPresent(Bool.self, forKey: .explain) ?? false
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(tenant, "tenant")
        if let region { try WireCheck.text(region, "region", max: 64) }
        if let zone { try WireCheck.text(zone, "zone", max: 64) }
        if zone != nil && region == nil { throw SwitchboardError(.badMessage, "'zone' needs a 'region'") }
        try WireCheck.metadata(metadata)
    }
}

/// How strictly a call keeps to its region and zone.
public enum Locality: String, Codable, Sendable, CaseIterable {
    case required, preferred
}

/// Where a call's audio flows: the caller publishes to `in` and listens on `out`.
public struct MediaSubjects: Codable, Sendable, Equatable {
    public var `in`: String
    public var out: String
    /// On a closed bus: a NATS credentials file's text (user JWT and seed) that may publish this call's audio
    /// in and its end, and receive its audio out and its events, nothing else; it expires after a few hours.
    public var credentials: String?
    public init(in: String, out: String, credentials: String? = nil) {
        self.in = `in`
        self.out = out
        self.credentials = credentials
    }
}

/// A placed call, as the router answers (HTTP 201 body, and the NATS reply's `call`).
public struct Placement: Codable, Sendable, Equatable {
    public var callID: String
    public var workerID: String
    public var version: String
    public var region: String
    public var media: MediaSubjects
    /// Only when the caller asked the scheduler to explain itself.
    public var explain: Scheduler.Explanation?
    /// The tenant's calls are recorded: a gateway with a recordings directory records this one (absent: no).
    public var record: Bool?

    enum CodingKeys: String, CodingKey {
        case version, region, media, explain, record
        case callID = "call_id", workerID = "worker_id"
    }

    public init(callID: String, workerID: String, version: String, region: String, media: MediaSubjects,
                explain: Scheduler.Explanation? = nil, record: Bool? = nil) {
        self.callID = callID
        self.workerID = workerID
        self.version = version
        self.region = region
        self.media = media
        self.explain = explain
        self.record = record
    }
}

/// The error body of every API: `{"error": {"code": "...", "message": "..."}}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var code: String
    public var message: String
    /// Only when the caller asked the scheduler to explain itself.
    public var explain: Scheduler.Explanation?
    public init(code: String, message: String, explain: Scheduler.Explanation? = nil) {
        self.code = code
        self.message = message
        self.explain = explain
    }
    public init(_ error: SwitchboardError) {
        self.init(code: error.code.rawValue, message: error.message)
    }
}

/// The NATS reply to a route request: a placement or an error.
public struct RouteReply: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = RouteReply.wireVersion
    public var call: Placement?
    public var error: ErrorBody?

    public init(call: Placement) { self.call = call }
    public init(error: SwitchboardError) { self.error = error.apiBody }

    public func validate() throws(SwitchboardError) {
        guard (call == nil) != (error == nil) else {
            throw SwitchboardError(.badMessage, "a route reply holds exactly one of 'call' and 'error'")
        }
    }
}

/// `<prefix>.worker.<id>.offer` (request): a router offers a call to a worker.
public struct Offer: WireMessage, Equatable {
    public static let wireVersion = 1
    /// Room for a resumed call's checkpoint.
    public static var maxBytes: Int { Checkpoint.maxBytes + 16 * 1024 }
    public var v = Offer.wireVersion
    public var callID: String
    public var tenant: String
    public var region: String?
    public var metadata: [String: String]
    public var routerID: String
    /// Set when the call is already running elsewhere (migration, failover): take it on from this checkpoint.
    public var resume: Resume?
    /// The deploy policy revision the router chose by (nil: it knows none). A worker outdated under its own
    /// revision refuses a new call offered under an older one, and takes it under a newer one.
    public var deployRevision: Int64?

    enum CodingKeys: String, CodingKey {
        case v, tenant, region, metadata, resume
        case callID = "call_id", routerID = "router_id", deployRevision = "deploy_revision"
    }

    public init(callID: String, tenant: String, region: String?, metadata: [String: String], routerID: String,
                resume: Resume? = nil, deployRevision: Int64? = nil) {
        self.deployRevision = deployRevision
        self.callID = callID
        self.tenant = tenant
        self.region = region
        self.metadata = metadata
        self.routerID = routerID
        self.resume = resume
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(callID, "call_id")
        try WireCheck.identifier(tenant, "tenant")
        if let region { try WireCheck.text(region, "region", max: 64) }
        try WireCheck.metadata(metadata)
        try WireCheck.identifier(routerID, "router_id")
        if let deployRevision { try WireCheck.range(deployRevision, 0...Int64.max / 2, "deploy_revision") }
        if let resume {
            try WireCheck.identifier(resume.fromWorker, "from_worker")
            try resume.checkpoint.validate()
            if let epoch = resume.epoch, epoch < 1 || epoch > CallRecord.maxEpoch {
                throw SwitchboardError(.badMessage, "resume epoch \(epoch) is out of range 1...\(CallRecord.maxEpoch)")
            }
        }
    }
}

/// Why a worker said no to an offer.
public enum RefusalReason: String, Codable, Sendable {
    case full, draining, stopping, duplicate, badOffer = "bad_offer"
    /// A call to take on could not be claimed: its record moved on (another worker holds it, it ended) or
    /// Redis did not answer.
    case superseded
    /// A new call, offered under an older deploy policy than the one that made this worker's version outdated.
    case outdated
    /// The worker's agent cannot take a call now: no warm agent process is ready, or the agent server does not
    /// answer. The router tries another worker.
    case agentUnavailable = "agent_unavailable"
}

/// A worker's answer to an offer: accepted (the slot is reserved) or refused with a reason.
public struct OfferReply: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = OfferReply.wireVersion
    public var accepted: Bool
    public var reason: RefusalReason?
    public var workerID: String
    public var version: String
    public var region: String
    /// On accept: the worker's count of accepted offers including this one (see `Heartbeat.accepted`).
    public var acceptSeq: UInt64?

    enum CodingKeys: String, CodingKey {
        case v, accepted, reason, version, region
        case workerID = "worker_id", acceptSeq = "accept_seq"
    }

    public static func accept(workerID: String, version: String, region: String, acceptSeq: UInt64) -> OfferReply {
        OfferReply(accepted: true, reason: nil, workerID: workerID, version: version, region: region, acceptSeq: acceptSeq)
    }

    public static func refuse(_ reason: RefusalReason, workerID: String, version: String, region: String) -> OfferReply {
        OfferReply(accepted: false, reason: reason, workerID: workerID, version: version, region: region)
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(workerID, "worker_id")
        if !accepted && reason == nil { throw SwitchboardError(.badMessage, "a refusal needs a 'reason'") }
    }
}

/// Why a call ended.
public enum EndReason: String, Codable, Sendable, CaseIterable {
    case caller, handler, maxDuration = "max_duration", api, workerStopping = "worker_stopping"
    /// A drain's deadline passed (with `--at-deadline end`, or no other worker could take the call).
    case drainDeadline = "drain_deadline"
    /// Its worker died and it had no checkpoint to resume from (or no worker could take it).
    case workerLost = "worker_lost"
    /// Ended through the API while no worker held it any more (its record was closed by a router).
    case notRunning = "not_running"
    /// Its caller sent no audio for the worker's media timeout (60 s by default).
    case noMedia = "no_media"
    /// Not an end for the caller: another worker took the call on. Only the worker that let go sees it.
    case migrated
    /// The agent hung up: it closed its socket.
    case agentHangup = "agent_hangup"
    /// The agent failed (its process crashed, its socket broke, it sent what the worker refuses), and the one
    /// restart from its saved state failed too, or it could not be reached at all.
    case agentFailed = "agent_failed"
    /// The caller's gateway was stopped and its drain deadline passed with the call still on.
    case gatewayStopping = "gateway_stopping"
}

/// `<prefix>.call.<id>.end` (request): end a call. The worker that holds it answers.
public struct CallEnd: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = CallEnd.wireVersion
    public var callID: String
    public var reason: EndReason

    enum CodingKeys: String, CodingKey {
        case v, reason
        case callID = "call_id"
    }

    public init(callID: String, reason: EndReason) {
        self.callID = callID
        self.reason = reason
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(callID, "call_id")
    }
}
