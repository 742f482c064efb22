import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Router {
    // MARK: - The policy in force here

    /// The deploy policy this router places by (nil until it has read one: then it places on workers that say
    /// they are `ready`, which is their own reading of the policy), and when it took it.
    public func deployPolicy() -> (policy: DeployPolicy, appliedAt: ContinuousClock.Instant)? {
        state.withLock { state in state.known.deploy.map { ($0, state.known.deployAppliedAt ?? clock.now) } }
    }

    /// Takes a policy read from Redis or announced on NATS; an older revision than the one held is ignored.
    @discardableResult
    func applyDeploy(_ policy: DeployPolicy, from source: String) -> Bool {
        let actions = state.withLock { $0.known.modify(.policy(policy), now: clock.now) }
        guard !actions.isEmpty else { return false }
        perform(actions)
        if !policy.isNone {
            logger.notice("deploy policy in force", metadata: ["revision": "\(policy.revision)", "active": "\(policy.active ?? "")",
                                                               "canary": "\(policy.canary.map { "\($0.version) \($0.percent)%" } ?? "none")",
                                                               "from": "\(source)"])
        }
        return true
    }

    /// Reads the policy from Redis: at start (before the first route), now and then after (a notice missed),
    /// and when a worker said it knows a newer one. A policy Redis lost (a restart without persistence) is
    /// written back from this router's, so revisions never go back and a later change is taken everywhere.
    @discardableResult
    func loadDeployPolicy() async -> Bool {
        do {
            let stored = try await deployStore.read().policy
            applyDeploy(stored, from: "redis")
            if let mine = state.withLock({ $0.known.deploy }), mine.revision > stored.revision {
                try await deployStore.write(mine, over: stored.revision)
                logger.notice("deploy policy was missing in Redis (or older there): written again",
                              metadata: ["revision": "\(mine.revision)", "redis_revision": "\(stored.revision)"])
            }
            return true
        } catch where error.code == .conflict {
            return true  // another router wrote it back first: the next round reads it
        } catch {
            logger.warning("deploy policy not read from Redis", metadata: [LogKey.error: "\(error)"])
            return false
        }
    }

    /// `<prefix>.deploy`: another router changed the policy.
    func ingestDeployNotice(_ message: NATSMessage) {
        do {
            applyDeploy(try DeployNotice.decode(message.payload).policy, from: "notice")
        } catch {
            countBadMessage("deploy_notice", error)
        }
    }

    /// Re-reads the policy every `deployRefresh` and sends this router's placement counts per version to Redis.
    func deployLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.deployRefresh)
            await loadDeployPolicy()
            let counts = state.withLock { state in
                defer { state.versionCounts.removeAll() }
                return state.versionCounts
            }
            do {
                try await deployStore.count(counts)
            } catch {
                // Counts for status only: put back, sent with the next round.
                state.withLock { for (key, n) in counts { $0.versionCounts[key, default: 0] += n } }
            }
        }
    }

    /// What a new call tries first under the policy in force, and the revision it was chosen under.
    func versionChoice(tenant: String) -> (CanarySplit.Choice, revision: Int64?) {
        state.withLock { $0.known.versionChoice(tenant: tenant) }
    }

    /// Counts a placement for its version, for `deploy status` and the metrics.
    func countPlacement(_ version: String, _ result: String) {
        state.withLock { $0.versionCounts["\(version)|\(result)", default: 0] += 1 }
        metrics.increment(MetricNames.placementsByVersion, ["version": version, "result": result],
                          help: "New calls by the version they were meant for or placed on: placed, failed, fallback (a canary's call placed on the active version)")
    }

    // MARK: - Operations

    /// Changes the deploy policy: read with Redis's clock, changed (pure), written only if no other change came
    /// first, in force here at once and announced to every router and worker. `expectedRevision`: refuse
    /// unless the policy is still at that revision (an operator acting on what they saw).
    public func changeDeploy(_ change: DeployPolicy.Change, force: Bool = false, expectedRevision: Int64? = nil,
                             actor: String) async throws(SwitchboardError) -> DeploymentStatus {
        let deadline = clock.now + configuration.routeDeadline
        let (stored, now): (DeployPolicy, Int64)
        do {
            (stored, now) = try await deployStore.read(deadline: deadline)
        } catch {
            throw SwitchboardError(.unavailable, "cannot read the deploy policy from Redis: \(error.message)")
        }
        // Redis may have lost the policy (a restart without persistence): the change is made from the newer of
        // the two, so its revision is above every router's and worker's.
        let local = state.withLock { $0.known.deploy }
        let current = local.map { $0.revision > stored.revision ? $0 : stored } ?? stored
        if let expectedRevision, expectedRevision != current.revision {
            throw SwitchboardError(.conflict, "the deploy policy is at revision \(current.revision), not \(expectedRevision); look again and retry",
                                   context: ["revision": "\(current.revision)"])
        }
        let live = state.withLock { $0.known.liveVersions }
        let next = try current.applying(change, liveVersions: live, force: force, nowMillis: now, actor: actor)
        do {
            try await deployStore.write(next, over: stored.revision, deadline: deadline)
        } catch where error.code != .conflict {
            throw SwitchboardError(.unavailable, "the deploy policy cannot be written to Redis: \(error.message)")
        }
        applyDeploy(next, from: "this router")
        do {
            try nats.publish(configuration.subjects.deploy, payload: DeployNotice(policy: next).encoded())
        } catch {
            logger.warning("deploy notice not sent: other routers and workers read the policy at their next refresh",
                           metadata: [LogKey.error: "\(error)"])
        }
        metrics.increment(MetricNames.deployChanges, ["action": next.action?.rawValue ?? "deploy"], help: "Deploy policy changes made through this router")
        logger.notice("deploy policy changed", metadata: ["revision": "\(next.revision)", "action": "\(next.action?.rawValue ?? "")",
                                                          "active": "\(next.active ?? "")", "by": "\(actor)"])
        return try await deploymentStatus()
    }

    /// The policy in Redis and, per version, the workers this router sees, their calls, and the placements of
    /// every router in the last minute.
    public func deploymentStatus() async throws(SwitchboardError) -> DeploymentStatus {
        let policy: DeployPolicy, now: Int64, counts: [String: Int]
        do {
            (policy, now) = try await deployStore.read()
            counts = try await deployStore.lastMinute(nowMillis: now)
        } catch {
            throw SwitchboardError(.unavailable, "cannot read the deploy policy from Redis: \(error.message)")
        }
        applyDeploy(policy, from: "redis")
        let entries = state.withLock { Array($0.known.registry.entries.values) }
        return DeploymentStatus(policy: policy, nowMillis: now, workers: entries, counts: counts)
    }

    public func deployHistory(limit: Int) async throws(SwitchboardError) -> [DeployHistoryEntry] {
        do {
            return try await deployStore.history(limit: limit)
        } catch where error.code != .invalidArgument {
            throw SwitchboardError(.unavailable, "cannot read the deploy history: \(error.message)")
        }
    }
}

/// `GET /v1/deployment`: the policy, and each version as the cluster runs it.
public struct DeploymentStatus: Codable, Sendable, Equatable {
    public var policy: DeployPolicy
    public var nowMillis: Int64
    public var versions: [VersionStatus]

    enum CodingKeys: String, CodingKey {
        case policy, versions
        case nowMillis = "now_ms"
    }

    public struct VersionStatus: Codable, Sendable, Equatable {
        public var version: String
        /// `active`, `canary`, `previous` (a rollback target), or `outdated`; `any` with no policy yet.
        public var role: String
        /// Workers by state as this router sees them: ready, outdated, draining, stopping, suspect, unreachable.
        public var workers: [String: Int]
        public var activeCalls: Int
        public var capacity: Int
        /// Every router's new calls in the last minute: placed on this version, failed when meant for it,
        /// fallback (meant for this canary, placed on the active version).
        public var lastMinute: [String: Int]
        /// When this version's workers drain (retired plus the rollback window), Unix ms.
        public var drainsAtMillis: Int64?

        enum CodingKeys: String, CodingKey {
            case version, role, workers, capacity
            case activeCalls = "active_calls", lastMinute = "last_minute", drainsAtMillis = "drains_at_ms"
        }
    }

    init(policy: DeployPolicy, nowMillis: Int64, workers: [WorkerRegistry.Entry], counts: [String: Int]) {
        self.policy = policy
        self.nowMillis = nowMillis
        var names = Set(workers.map(\.heartbeat.version))
        names.formUnion([policy.active, policy.canary?.version].compactMap { $0 })
        for key in counts.keys { if let bar = key.lastIndex(of: "|") { names.insert(String(key[..<bar])) } }
        versions = names.sorted().map { version in
            let mine = workers.filter { $0.heartbeat.version == version }
            var states: [String: Int] = ["ready": 0, "outdated": 0, "draining": 0]
            for entry in mine {
                let state = entry.liveness != .alive ? entry.liveness.rawValue
                    : entry.drain != nil ? WorkerState.draining.rawValue : entry.heartbeat.state.rawValue
                states[state, default: 0] += 1
            }
            var lastMinute: [String: Int] = ["placed": 0, "failed": 0]
            for (key, n) in counts where key.hasPrefix(version + "|") { lastMinute[String(key.dropFirst(version.count + 1)), default: 0] += n }
            let role = policy.isNone ? "any" : version == policy.active ? "active" : version == policy.canary?.version ? "canary"
                : policy.previous.contains(version) ? "previous" : "outdated"
            var drainsAt: Int64?
            if case .outdated(let at) = policy.standing(of: version) { drainsAt = at }
            return VersionStatus(version: version, role: role, workers: states, activeCalls: mine.reduce(0) { $0 + $1.heartbeat.activeCalls },
                                 capacity: mine.reduce(0) { $0 + $1.heartbeat.capacity }, lastMinute: lastMinute, drainsAtMillis: drainsAt)
        }
    }
}

/// `PUT /v1/deployment`: deploy a version (or set the canary beside the active one).
public struct DeployBody: Codable, Sendable {
    public var version: String
    public var canaryPercent: Double?
    public var canaryBy: DeployPolicy.CanaryKey?
    public var rollbackWindowSeconds: Double?
    public var drainDeadlineSeconds: Double?
    public var atDeadline: AtDeadline?
    public var force: Bool?
    /// Refuse unless the policy is at this revision.
    public var revision: Int64?

    enum CodingKeys: String, CodingKey {
        case version, force, revision
        case canaryPercent = "canary_percent", canaryBy = "canary_by", rollbackWindowSeconds = "rollback_window_seconds"
        case drainDeadlineSeconds = "drain_deadline_seconds", atDeadline = "at_deadline"
    }

    public init(version: String, canaryPercent: Double? = nil, canaryBy: DeployPolicy.CanaryKey? = nil,
                rollbackWindowSeconds: Double? = nil, drainDeadlineSeconds: Double? = nil, atDeadline: AtDeadline? = nil,
                force: Bool? = nil, revision: Int64? = nil) {
        self.version = version
        self.canaryPercent = canaryPercent
        self.canaryBy = canaryBy
        self.rollbackWindowSeconds = rollbackWindowSeconds
        self.drainDeadlineSeconds = drainDeadlineSeconds
        self.atDeadline = atDeadline
        self.force = force
        self.revision = revision
    }

    public func change() throws(SwitchboardError) -> DeployPolicy.Change {
        .deploy(version: version, canaryPercent: canaryPercent, canaryBy: canaryBy,
                options: .init(rollbackWindow: try Self.duration(rollbackWindowSeconds, "rollback_window_seconds"),
                               drainDeadline: try Self.duration(drainDeadlineSeconds, "drain_deadline_seconds"),
                               atDeadline: atDeadline))
    }

    /// Seconds from the network as a duration: finite, 0 to a week (the policy checks its own bounds).
    static func duration(_ seconds: Double?, _ field: String) throws(SwitchboardError) -> Duration? {
        guard let seconds else { return nil }
        guard seconds.isFinite, (0...(7 * 24 * 3600)).contains(seconds) else {
            throw SwitchboardError(.invalidArgument, "\(field) must be 0 to 604800 seconds, got \(seconds)")
        }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

/// `POST /v1/deployment/rollback`, `/promote`, `/abort`: every field optional.
public struct DeployActionBody: Codable, Sendable {
    /// Rollback only: the version to go back to (default: the previous active one).
    public var to: String?
    public var force: Bool?
    public var revision: Int64?

    public init(to: String? = nil, force: Bool? = nil, revision: Int64? = nil) {
        self.to = to
        self.force = force
        self.revision = revision
    }
}

/// `GET /v1/deployment/history`.
public struct DeployHistory: Codable, Sendable {
    public var entries: [DeployHistoryEntry]
    public init(_ entries: [DeployHistoryEntry]) { self.entries = entries }
}
