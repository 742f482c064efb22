import Foundation
import SwitchboardCore
import SwitchboardNATS

/// A router's settings. Defaults suit a local cluster; the executable fills them from flags, environment
/// and a config file.
public struct RouterConfiguration: Sendable {
    /// Shown in logs, metrics and offers; unique per router process.
    public var id: String
    public var subjects: Subjects
    public var keys: RedisKeys
    /// HTTP API address; port 0 picks a free port (see `Router.httpPort`).
    public var httpHost = "127.0.0.1"
    public var httpPort = 8080
    /// Heartbeat interval, liveness (suspect after 2 silent intervals, dead after 3) and reservations.
    public var registry = WorkerRegistry.Configuration()
    /// How calls are placed: strategy, choices, weights, CPU ceiling.
    public var scheduler = Scheduler.Configuration()
    /// Time a suspect worker has to answer a ping before it is taken for dead.
    public var pingTimeout: Duration = .milliseconds(500)
    /// One deadline for the whole route: offers, accept, record.
    public var routeDeadline: Duration = .seconds(2)
    /// Time a single worker has to answer an offer.
    public var offerTimeout: Duration = .milliseconds(500)
    /// Time a worker has to answer an order (drain, undrain, and the hold, release or unhold of a move): it may
    /// write to Redis first, and an operator's action is not in a hurry.
    public var controlTimeout: Duration = .seconds(2)
    /// Time the worker holding a call has to end it and answer (`DELETE /v1/calls/{id}`).
    public var endTimeout: Duration = .seconds(5)
    /// Workers offered one call at most.
    public var maxOffers = 3
    /// Largest HTTP request body accepted.
    public var maxBodyBytes = 64 * 1024
    /// Tenancy: callers authenticate with a tenant's API key, and each route is admitted against the tenant's
    /// rate limit and live-call quota. Off: the body's `tenant` is taken as given and nothing is limited.
    public var tenancy = false
    /// Calls are recorded (by gateways with a recordings directory) unless their tenant's policy says
    /// otherwise; off by default, on per tenant (`record` in its policy).
    public var recordCalls = false
    /// Where gateways write recordings (the same shared volume): the router serves and deletes them from
    /// here. Nil: the recording endpoints answer `not_found`.
    public var recordingsDirectory: String?
    /// Where operators look at traces: a URL with `{trace_id}` (`https://tempo.example/trace/{trace_id}`); the
    /// call page links each call's trace with it. Nil: the page shows the trace id alone.
    public var traceLink: String?
    /// Operator endpoints (workers, drains, moves, deploys, the audit) need `Authorization: Bearer <key>` with
    /// one of these, tenancy on or off; the audit names the key's owner. Tenant keys do not open them (403).
    public var adminKeys: [AdminKey] = []
    /// Operator endpoints open to anyone (a loud warning at start, and in `/readyz`). For a laptop only.
    public var insecureNoAuth = false
    /// On a closed bus: the account signing key with which each placement carries a credential for the call's
    /// media alone (see docs/security.md); nil: placements carry none.
    public var mediaSigning: SigningKey?
    /// How long a call's media credential lasts (the server closes a connection whose credential expired).
    public var mediaCredentialTTL: Duration = .seconds(4 * 3600)
    /// Tenants named in metric labels at most; calls of tenants beyond are counted under `tenant="other"`, so
    /// a cluster of many tenants does not grow a series per tenant.
    public var tenantLabelCap = 50
    /// The share of slots in use `switchboard_workers_desired` aims for, in (0, 1].
    public var autoscaleTarget = 0.7
    /// How long a live-call lease lasts unless the worker renews it.
    public var leaseTime: Duration = .seconds(30)
    /// How long this router trusts a key it has looked up (a rotated key may work this much longer).
    public var keyCacheTime: Duration = .seconds(5)
    /// While Redis cannot be asked, a key this router checked at most this long ago still counts (its tenant's
    /// `when Redis is down` rule then decides); older ones are refused (`unavailable`), so a key revoked just
    /// before Redis went away stops working within this time too.
    public var keyStaleLimit: Duration = .seconds(30)
    /// A drain asked for without a deadline gets this one.
    public var defaultDrainDeadline: Duration = .seconds(3600)
    /// How long a dead worker's call is offered again (with backoff) while no worker has room, before it is
    /// lost.
    public var failover = FailoverRetry.Configuration()
    /// How often one of the routers looks for calls whose worker no router knows (see `reconcile`).
    public var reconcileInterval: Duration = .seconds(15)
    /// How long a router may hold a call it is moving (migration, failover) before another may try.
    public var moveLockTime: Duration = .seconds(15)
    /// Audit entries kept at least (the stream is trimmed near this length).
    public var auditLength = 10_000
    /// How often the drains kept in Redis are read again (notices are the fast path; this catches a missed one).
    public var drainRefresh: Duration = .seconds(5)
    /// How often the deploy policy is read again (notices are the fast path; this bounds a missed one to a
    /// second), and placement counts per version are sent to Redis.
    public var deployRefresh: Duration = .seconds(1)
    /// How long an ended call's record stays in Redis.
    public var endedCallRetention: Duration = .seconds(24 * 3600)
    /// How long a call's timeline is kept after its last event, and how many events it holds at most.
    public var timelineRetention: Duration = .seconds(7 * 86_400)
    public var timelineCap = 2_000
    /// Where Unix time comes from: records, events, timelines, drains and the audit (deadlines and waits use
    /// `ContinuousClock`). A test may give a fixed one.
    public var wallClock: WallClock = .system

    public var heartbeatInterval: Duration {
        get { registry.heartbeatInterval }
        set {
            registry = .init(heartbeatInterval: newValue, suspectAfter: registry.suspectAfter, deadAfter: registry.deadAfter,
                             unreachableShare: registry.unreachableShare)
        }
    }

    public init(id: String, subjects: Subjects, keys: RedisKeys) {
        self.id = id
        self.subjects = subjects
        self.keys = keys
    }
}

/// An operator's credential: who it names (in the audit) and the key.
public struct AdminKey: Sendable, Equatable {
    public var name: String
    public var key: String

    /// Keys shorter than this are refused: an admin key opens every operator action.
    public static let minimumLength = 16

    public init(name: String, key: String) throws(SwitchboardError) {
        guard (1...64).contains(name.utf8.count),
              name.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 || $0 == 64 }) else {
            throw SwitchboardError(.invalidArgument, "an admin key's name must be 1-64 letters, digits, '-', '_', '.' or '@'")
        }
        guard key.utf8.count >= Self.minimumLength, key.utf8.count <= 256, !key.unicodeScalars.contains(where: { $0.value <= 32 }) else {
            throw SwitchboardError(.invalidArgument, "admin key '\(name)' must be \(Self.minimumLength)-256 characters without spaces")
        }
        self.name = name
        self.key = key
    }

    /// A key file: one `name:key` per line; blank lines and lines starting with `#` are skipped.
    public static func parseFile(_ text: String) throws(SwitchboardError) -> [AdminKey] {
        var keys: [AdminKey] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw SwitchboardError(.invalidArgument, "line \(number + 1) of the admin key file is not name:key")
            }
            keys.append(try AdminKey(name: String(line[..<colon]), key: String(line[line.index(after: colon)...])))
        }
        guard !keys.isEmpty else { throw SwitchboardError(.invalidArgument, "the admin key file names no key") }
        guard Set(keys.map(\.name)).count == keys.count else { throw SwitchboardError(.invalidArgument, "two admin keys share a name") }
        return keys
    }
}

