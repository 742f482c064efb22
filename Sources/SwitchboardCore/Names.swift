/// Every NATS subject of a cluster, from its prefix (default `sb`). One place, so router, worker, CLI and tests
/// cannot disagree. See docs/protocol.md.
public struct Subjects: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String = "sb") throws(SwitchboardError) {
        try Subject.validate(prefix)
        self.prefix = prefix
    }

    /// Route requests (queue group `routers`).
    public var route: String { "\(prefix).route" }
    /// One worker's heartbeats (`<prefix>.heartbeat.<worker>`): a worker may publish only its own.
    public func heartbeat(worker: String) -> String { "\(prefix).heartbeat.\(worker)" }
    /// Every worker's heartbeats; every router listens.
    public var heartbeats: String { heartbeat(worker: "*") }
    /// Offers to one worker (request/reply).
    public func offer(worker: String) -> String { "\(prefix).worker.\(worker).offer" }
    /// A router pings a suspect worker directly (request/reply; the answer is a heartbeat).
    public func ping(worker: String) -> String { "\(prefix).worker.\(worker).ping" }
    /// Audio from the caller to the worker that holds the call. The caller follows the call to another worker
    /// by its events (docs/protocol.md); `worker` is `*` in a caller's permissions.
    public func mediaIn(worker: String, call: String) -> String { "\(prefix).media.\(worker).\(call).in" }
    /// Audio from the worker that holds the call to the caller, who listens on `mediaOut(worker: "*", ...)`.
    public func mediaOut(worker: String, call: String) -> String { "\(prefix).media.\(worker).\(call).out" }
    /// Ending a call (request/reply; the worker holding it answers).
    public func end(worker: String, call: String) -> String { "\(prefix).call.\(worker).\(call).end" }
    /// Orders to one worker: drain, undrain, and the steps of moving a call (request/reply).
    public func control(worker: String) -> String { "\(prefix).worker.\(worker).control" }
    /// A worker asks the routers to move one of its calls (request/reply, queue group `routers`).
    public func migrate(worker: String) -> String { "\(prefix).migrate.\(worker)" }
    /// Every worker's migrate requests (the routers' queue subscription).
    public var migrates: String { migrate(worker: "*") }
    /// A worker's drain began or was cancelled (broadcast to every router).
    public var drains: String { "\(prefix).drains" }
    /// What happens to a call: placed, migrating, migrated, resumed, ended; published under the worker that
    /// holds it (the router's events too), heard by its caller on `events(worker: "*", ...)`.
    public func events(worker: String, call: String) -> String { "\(prefix).call.\(worker).\(call).events" }
    /// A dead worker's call waiting for a free slot, and where it went (broadcast to every router).
    public var resumptions: String { "\(prefix).resumptions" }
    /// A new deploy policy (broadcast to every router and worker).
    public var deploy: String { "\(prefix).deploy" }
    /// Operator requests to routers (status and the like), request/reply.
    public var status: String { "\(prefix).status" }

    /// The worker a per-worker subject names (`heartbeat(worker:)`, `migrate(worker:)`): its last token.
    public static func sender(of subject: String) -> Substring {
        subject.lastIndex(of: ".").map { subject[subject.index(after: $0)...] } ?? Substring(subject)
    }

    /// Any worker, in the subjects a caller (and an observer) listens on.
    public static let anyWorker = "*"

    public static let routerQueue = "routers"
}

/// Every Redis key of a cluster, from its prefix (default `sb`).
public struct RedisKeys: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String = "sb") throws(SwitchboardError) {
        guard !prefix.isEmpty, prefix.utf8.count <= 64, !prefix.contains(" ") else {
            throw SwitchboardError(.invalidArgument, "Redis key prefix must be 1-64 characters without spaces")
        }
        self.prefix = prefix
    }

    /// Hash: the call record (tenant, worker, version, region, state, times, end reason).
    public func call(_ id: String) -> String { "\(prefix):call:\(id)" }
    /// Sorted set: the calls placed on one day (`YYYY-MM-DD`, UTC), `<tenant>/<call id>` scored by Unix ms; with
    /// a tenant, that tenant's alone. Kept as long as timelines.
    public func callIndex(day: String, tenant: String? = nil) -> String {
        tenant.map { "\(prefix):calls:t:\($0):\(day)" } ?? "\(prefix):calls:all:\(day)"
    }
    /// Set: ids of the calls a worker holds.
    public func workerCalls(_ worker: String) -> String { "\(prefix):worker:\(worker):calls" }
    /// Hash: worker id → its drain request (JSON), while the drain lasts.
    public var drains: String { "\(prefix):drains" }
    /// String: the router moving a call (migration or failover) holds it, with an expiry.
    public func callLock(_ id: String) -> String { "\(prefix):lock:call:\(id)" }
    /// Stream: operator actions (who, what, when, outcome).
    public var audit: String { "\(prefix):audit" }
    /// Hash: tenant id → its record (policy and key hashes, JSON).
    public var tenants: String { "\(prefix):tenants" }
    /// Hash: SHA-256 of an API key → tenant id.
    public var tenantKeys: String { "\(prefix):tenant-keys" }
    /// String: a tenant's GCRA theoretical arrival time, in microseconds of Redis's clock.
    public func tenantRate(_ tenant: String) -> String { "\(prefix):tenant:\(tenant):tat" }
    /// Sorted set: a tenant's live-call leases, call id scored by expiry (milliseconds of Redis's clock).
    public func tenantLeases(_ tenant: String) -> String { "\(prefix):tenant:\(tenant):leases" }
    /// Hash: a tenant's metered calls in one month (`YYYY-MM`, UTC): `call_ms`, `calls`, and `d01`...`d31`
    /// (call time by day). See `TenantUsage`.
    public func usage(_ tenant: String, month: String) -> String { "\(prefix):usage:\(tenant):\(month)" }
    /// Stream: a call's timeline (`TimelineEvent`s), capped, kept `timelineRetention` after its last event.
    public func timeline(_ callID: String) -> String { "\(prefix):timeline:\(callID)" }
    /// String: how many of a call's timeline events were left out over the cap.
    public func timelineDropped(_ callID: String) -> String { "\(prefix):timeline:\(callID):dropped" }
    /// Hash: the deploy policy (`policy`, JSON) and its `revision`.
    public var deploy: String { "\(prefix):deploy" }
    /// Stream: every change of the deploy policy.
    public var deployHistory: String { "\(prefix):deploy:history" }
    /// Hash: placements per version in one 10 s bucket (`<version>|<result>` → count), starting at `bucket` ms.
    public func deployStats(_ bucket: String) -> String { "\(prefix):deploy:stats:\(bucket)" }
}

extension RedisKeys {
    /// The keys of a cluster with the default prefix `sb`.
    public static let `default` = try! RedisKeys(prefix: "sb")
}

extension Subjects {
    /// The subjects of a cluster with the default prefix `sb`.
    public static let `default` = try! Subjects(prefix: "sb")
}
