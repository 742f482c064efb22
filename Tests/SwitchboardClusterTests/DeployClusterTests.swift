import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Testing

extension TestCluster {
    /// A worker of `version` (echo calls).
    @discardableResult
    func addWorker(id: String, version: String, capacity: Int = 50,
                   _ configure: (inout WorkerConfiguration) -> Void = { _ in }) async throws -> RunningWorker {
        try await addWorker(id: id, capacity: capacity) { config in
            config.version = version
            configure(&config)
        }
    }

    /// `PUT /v1/deployment` through router `router`; the new status, or the error's code.
    @discardableResult
    func deploy(_ body: DeployBody, router: Int = 0) async throws -> Result<DeploymentStatus, DeployFailure> {
        try result(try await http("PUT", "/v1/deployment", body: WireCodec.encode(body), router: router))
    }

    /// `POST /v1/deployment/<action>` (promote, abort, rollback).
    @discardableResult
    func deployAction(_ action: String, _ body: DeployActionBody = DeployActionBody(), router: Int = 0) async throws
        -> Result<DeploymentStatus, DeployFailure> {
        try result(try await http("POST", "/v1/deployment/\(action)", body: WireCodec.encode(body), router: router))
    }

    private func result(_ response: (status: Int, body: Data)) throws -> Result<DeploymentStatus, DeployFailure> {
        guard response.status == 200 else {
            let error = try decodeJSON(ErrorEnvelope.self, response.body).error
            return .failure(DeployFailure(status: response.status, code: error.code, message: error.message))
        }
        return .success(try decodeJSON(DeploymentStatus.self, response.body))
    }

    /// Waits until every router follows deploy policy `revision`.
    func waitForRevision(_ revision: Int64) async throws {
        try await eventually(timeout: .seconds(10), "every router at revision \(revision)") {
            routers.allSatisfy { $0.router.deployPolicy()?.policy.revision == revision }
        }
    }

    /// A new call through router `router`'s HTTP API, or (nil) its queue group on NATS. Asked again when the
    /// answer is `unavailable`, as a caller would: a loaded test run can make a route miss its 2 s deadline.
    func placed(router: Int? = nil, tenant: String = "t") async throws -> Placement {
        for attempt in 1...5 {
            let code: String?, text: String
            if let router {
                let response = try await http("POST", "/v1/calls", body: Array(#"{"tenant":"\#(tenant)"}"#.utf8), router: router)
                if response.status == 201 { return try decodeJSON(Placement.self, response.body) }
                (code, text) = (errorCode(response.body), String(decoding: response.body, as: UTF8.self))
            } else {
                let reply = try await routeByNATS(RouteRequest(tenant: tenant))
                if let call = reply.call { return call }
                (code, text) = (reply.error?.code, reply.error?.message ?? "?")
            }
            guard code == "unavailable", attempt < 5 else { throw TestServerError("not placed (router \(router.map(String.init) ?? "any")): \(text)") }
        }
        preconditionFailure()
    }
}

struct DeployFailure: Error, Equatable {
    var status: Int
    var code: String
    var message: String
}

extension Result {
    var value: Success? { if case .success(let v) = self { v } else { nil } }
    var failure: Failure? { if case .failure(let f) = self { f } else { nil } }
}

@Suite("Versioned deploys", .serialized)
struct DeployClusterTests {
    @Test func aRollingDeployCutsNoCallAndTheOldVersionDrainsOnceItsWindowIsOver() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addRouter()
            let old = [try await cluster.addWorker(id: "v1-a", version: "1", capacity: 25),
                       try await cluster.addWorker(id: "v1-b", version: "1", capacity: 25)]
            try await cluster.addWorker(id: "v2-a", version: "2", capacity: 45)
            try await cluster.addWorker(id: "v2-b", version: "2", capacity: 45)
            try await cluster.waitForWorkers(4)
            #expect(try await cluster.deploy(DeployBody(version: "1")).value?.policy.revision == 1)
            try await cluster.waitForRevision(1)
            var calls: [Placement] = []
            for _ in 0..<40 { calls.append(try await cluster.placed()) }
            #expect(Set(calls.map(\.version)) == ["1"], "before the deploy, only the active version")

            let deployed = try #require(try await cluster.deploy(DeployBody(version: "2", rollbackWindowSeconds: 4, drainDeadlineSeconds: 1,
                                                                              atDeadline: .migrate)).value)
            #expect(deployed.policy.active == "2" && deployed.policy.previous == ["1"])
            try await cluster.waitForRevision(2)
            // In force on the other router within a second of the one that wrote it (times from the routers' own clock).
            let applied = cluster.routers.compactMap { $0.router.deployPolicy()?.appliedAt }
            #expect(applied.count == 2 && applied.max()! - applied.min()! < .seconds(1), "\(applied)")
            for router in 0..<2 {
                for _ in 0..<10 { #expect(try await cluster.placed(router: router).version == "2", "router \(router)") }
            }
            // The old workers are outdated (their calls go on), and drain once the rollback window is over: their
            // calls move to the active version at the drain deadline.
            // (Or past it already: a starved test process can take longer to look than the 4 s window lasts.)
            try await eventually(timeout: .seconds(20), "v1 workers outdated") {
                old.allSatisfy { [.outdated, .draining, .stopping].contains($0.worker.workerState) }
            }
            #expect(try await cluster.record(calls[0].callID)["state"] == "active")
            try await eventually(timeout: .seconds(40), "the v1 workers drained and left") {
                !cluster.routers[0].router.workers().contains { $0.heartbeat.version == "1" }
            }
            for worker in old { _ = try await worker.task.value }  // each exits when its last call has moved
            for call in calls {
                let record = try await cluster.record(call.callID)
                #expect(record["state"] == "active" && record["version"] == "2", "\(call.callID): \(record)")
            }
            #expect(try await cluster.workerCalls("v1-a").isEmpty)
            #expect(try await cluster.workerCalls("v1-b").isEmpty)
            let entries = try decodeJSON(AuditEntries.self, try await cluster.http("GET", "/v1/audit").body).entries
            #expect(entries.contains { $0.action == "drain" && $0.actor == "deploy (worker v1-a)" })
            #expect(entries.contains { $0.action == "deploy" && $0.target == "2" && $0.outcome == "ok" })
        }
    }

    @Test func aCanaryTakesItsShareExactlyAndByTenantEachTenantSeesOneVersion() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addRouter()
            // Calls end by themselves after a second. (The benchmark runs 2,000 placements; the split's arithmetic
            // over 2,000 is CanarySplitTests'.)
            for (id, version) in [("v1-a", "1"), ("v1-b", "1"), ("v2-a", "2"), ("v2-b", "2")] {
                try await cluster.addWorker(id: id, version: version, capacity: 400) { $0.maxCallDuration = .seconds(1) }
            }
            try await cluster.waitForWorkers(4)
            try await cluster.deploy(DeployBody(version: "1"))
            let canary = try #require(try await cluster.deploy(DeployBody(version: "2", canaryPercent: 20)).value)
            #expect(canary.policy.canary == .init(version: "2", percent: 20, by: .call))
            try await cluster.waitForRevision(2)
            let counts = try await withThrowingTaskGroup(of: [String: Int].self) { group in
                for _ in 0..<16 {
                    group.addTask {
                        var mine: [String: Int] = [:]
                        for _ in 0..<25 { mine[try await cluster.placed().version, default: 0] += 1 }
                        return mine
                    }
                }
                return try await group.reduce(into: [String: Int]()) { total, mine in total.merge(mine, uniquingKeysWith: +) }
            }
            let share = Double(counts["2"] ?? 0) / 400 * 100
            #expect(counts.values.reduce(0, +) == 400)
            // Each router's share is exact to a call: within a call per router of 20%.
            #expect(abs(Double(counts["2"] ?? 0) - 80) <= 2, "canary share \(share)% (\(counts))")
            let fallbacks = cluster.routers.reduce(0.0) { $0 + ($1.router.metrics.value(MetricNames.placementsByVersion, ["version": "2", "result": "fallback"]) ?? 0) }
            #expect(fallbacks == 0, "the canary had room")

            try await cluster.deploy(DeployBody(version: "2", canaryPercent: 30, canaryBy: .tenant))
            try await cluster.waitForRevision(3)
            var byTenant: [String: Set<String>] = [:]
            for t in 0..<40 {
                for _ in 0..<5 { byTenant["tenant-\(t)", default: []].insert(try await cluster.placed(tenant: "tenant-\(t)").version) }
            }
            #expect(byTenant.values.allSatisfy { $0.count == 1 }, "\(byTenant.filter { $0.value.count > 1 })")
            let onCanary = byTenant.values.filter { $0 == ["2"] }.count
            #expect((1..<40).contains(onCanary), "\(onCanary) of 40 tenants on the canary")
        }
    }

    /// Runs `body` on two routers, a worker of version 1 and one of 2 (`v2`), version 1 deployed and then `second`.
    static func withTwoVersions(then second: DeployBody,
                                _ body: (TestCluster, _ v2: TestCluster.RunningWorker) async throws -> Void) async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addRouter()
            try await cluster.addWorker(id: "v1", version: "1")
            let v2 = try await cluster.addWorker(id: "v2", version: "2")
            try await cluster.waitForWorkers(2)
            try await cluster.deploy(DeployBody(version: "1"))
            try await cluster.deploy(second)
            try await cluster.waitForRevision(2)
            try await body(cluster, v2)
        }
    }

    @Test func rollbackIsInForceAtOnceOnEveryRouterAndCutsNoCall() async throws {
        try await Self.withTwoVersions(then: DeployBody(version: "2", canaryPercent: 50)) { cluster, v2 in
            var onCanary: [Placement] = []
            for _ in 0..<10 {
                let call = try await cluster.placed()
                if call.version == "2" { onCanary.append(call) }
            }
            // Each router sends every second of its calls to the canary (the queue group shares the 10 between them).
            #expect((4...5).contains(onCanary.count), "\(onCanary.count)")

            // A rollback during a canary: new calls back on 1 on both routers; the canary's calls go on.
            func rollBack(expecting revision: Int64) async throws {
                let back = try #require(try await cluster.deployAction("rollback", router: 1).value)
                #expect(back.policy.revision == revision && back.policy.active == "1" && back.policy.canary == nil)
                try await cluster.waitForRevision(revision)
                let applied = cluster.routers.compactMap { $0.router.deployPolicy()?.appliedAt }
                #expect(applied.max()! - applied.min()! < .seconds(1))
                for router in 0..<2 {
                    for _ in 0..<10 { #expect(try await cluster.placed(router: router).version == "1", "router \(router)") }
                }
                for call in onCanary { #expect(try await cluster.record(call.callID)["state"] == "active") }
            }
            try await rollBack(expecting: 3)
            try await eventually("the canary's worker is outdated, not draining") { v2.worker.workerState == .outdated }

            // After a promote, the same: 2 active, then rolled back to 1.
            try await cluster.deploy(DeployBody(version: "2", canaryPercent: 50))
            let promoted = try #require(try await cluster.deployAction("promote").value)
            #expect(promoted.policy.active == "2" && promoted.policy.previous.first == "1")
            try await cluster.waitForRevision(5)
            try await eventually("v2 takes calls again") { v2.worker.workerState == .ready }
            for _ in 0..<6 { onCanary.append(try await cluster.placed(router: 0)) }
            #expect(onCanary.suffix(6).allSatisfy { $0.version == "2" })
            try await rollBack(expecting: 6)

            // Status: each version's role, workers and the last minute's placements (every router's).
            try await eventually(timeout: .seconds(10), "placement counts reach Redis") {
                let status = try decodeJSON(DeploymentStatus.self, try await cluster.http("GET", "/v1/deployment").body)
                let v1 = status.versions.first { $0.version == "1" }, v2 = status.versions.first { $0.version == "2" }
                return v1?.role == "active" && v2?.role == "previous" && v1?.workers["ready"] == 1 && v2?.workers["outdated"] == 1
                    && v2?.activeCalls == onCanary.count && (v1?.lastMinute["placed"] ?? 0) >= 45 && v2?.lastMinute["placed"] == onCanary.count
            }
            let history = try decodeJSON(DeployHistory.self, try await cluster.http("GET", "/v1/deployment/history?limit=3").body)
            #expect(history.entries.map(\.action) == ["rollback", "promote", "deploy"])
        }
    }

    @Test func twoOperatorsAtOnceOneWinsTheOtherGetsAConflict() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addRouter()
            for (id, version) in [("a", "1"), ("b", "2"), ("c", "3")] { try await cluster.addWorker(id: id, version: version) }
            try await cluster.waitForWorkers(3)
            try await cluster.deploy(DeployBody(version: "1"))
            async let first = cluster.deploy(DeployBody(version: "2", revision: 1), router: 0)
            async let second = cluster.deploy(DeployBody(version: "3", revision: 1), router: 1)
            let results = [try await first, try await second]
            let won = results.compactMap(\.value), lost = results.compactMap(\.failure)
            #expect(won.count == 1 && lost.count == 1)
            #expect(lost.first?.status == 409 && lost.first?.code == "conflict" && lost.first?.message.contains("revision 2") == true,
                    "\(lost)")
            #expect(won.first?.policy.revision == 2)
        }
    }

    @Test func aRouterStartedMidDeployPlacesByThePolicyFromItsFirstCall() async throws {
        try await withTestCluster { cluster in
            // The workers re-read the policy rarely here, so they still say "ready": only the router's policy decides.
            try await cluster.addWorker(id: "v1", version: "1") { $0.refreshInterval = .seconds(600) }
            try await cluster.addWorker(id: "v2", version: "2") { $0.refreshInterval = .seconds(600) }
            let store = DeployStore(redis: cluster.redis, keys: cluster.keys)
            let (none, now) = try await store.read()
            let policy = try none.applying(.deploy(version: "2"), liveVersions: ["1", "2"], nowMillis: now, actor: "test")
            try await store.write(policy)  // no notice: as if it was written while this router was down
            let router = try await cluster.addRouter()  // returns once the router says it has started
            #expect(router.router.deployPolicy()?.policy.revision == 1, "read before it serves")
            try await cluster.waitForWorkers(2)
            for _ in 0..<10 { #expect(try await cluster.placed().version == "2") }
        }
    }

    @Test func aPolicyRedisLostIsWrittenBackAndTheNextChangeIsTakenEverywhere() async throws {
        try await Self.withTwoVersions(then: DeployBody(version: "2")) { cluster, v2 in
            // As a Redis restarted without persistence: the policy is gone. The routers keep theirs and write it back.
            _ = try await cluster.redis.send(["DEL", cluster.keys.deploy])
            let store = DeployStore(redis: cluster.redis, keys: cluster.keys)
            try await eventually(timeout: .seconds(10), "the policy is back in Redis") { try await store.read().policy.revision == 2 }
            #expect(try await cluster.placed().version == "2")
            // The next change has a revision above every router's and worker's, so all of them take it.
            #expect(try await cluster.deployAction("rollback").value?.policy.revision == 3)
            try await cluster.waitForRevision(3)
            try await eventually("v2 outdated") { v2.worker.workerState == .outdated }
            for router in 0..<2 { #expect(try await cluster.placed(router: router).version == "1") }
        }
    }

    @Test func guardsRefuseWithClearErrorsAndAFullCanaryFallsBack() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            try await cluster.addWorker(id: "v1", version: "1")
            let v2 = try await cluster.addWorker(id: "v2", version: "2", capacity: 1)
            try await cluster.waitForWorkers(2)
            #expect(try await cluster.deployAction("rollback").failure?.code == "conflict", "nothing to roll back to")
            #expect(try await cluster.deploy(DeployBody(version: "9")).failure?.code == "version_not_found")
            #expect(try await cluster.deploy(DeployBody(version: "1", canaryPercent: 150)).failure?.status == 400)
            #expect(try await cluster.deployAction("promote").failure?.code == "conflict")
            let garbage = try await cluster.http("PUT", "/v1/deployment", body: Array("{nope".utf8))
            #expect(garbage.status == 400 && errorCode(garbage.body) == "bad_request")
            try await cluster.deploy(DeployBody(version: "1"))
            #expect(try await cluster.deploy(DeployBody(version: "2", canaryPercent: -3)).failure?.status == 400)

            // All new calls to the canary, whose one slot is taken: the call goes to the active version, counted.
            try await cluster.deploy(DeployBody(version: "2", canaryPercent: 100))
            try await cluster.waitForRevision(2)
            #expect(try await cluster.placed().version == "2")
            try await eventually("v2 full") { router.router.workers().first { $0.id == "v2" }?.heartbeat.activeCalls == 1 }
            #expect(try await cluster.placed().version == "1")
            #expect(router.router.metrics.value(MetricNames.placementsByVersion, ["version": "2", "result": "fallback"]) == 1)

            // Promote 2, then its workers leave: a rollback to 1 works; a rollback to 2 then needs --force.
            try await cluster.deployAction("promote")
            try await cluster.deployAction("rollback")
            v2.worker.stop()
            _ = try await v2.task.value
            try await eventually("v2 gone") { !router.router.workers().contains { $0.id == "v2" } }
            let gone = try await cluster.deployAction("rollback")
            #expect(gone.failure?.code == "version_not_found", "\(gone)")
            #expect(try await cluster.deployAction("rollback", DeployActionBody(force: true)).value?.policy.active == "2")

            // The CLI: one clear line and a non-zero exit for a refusal; the status as a table.
            let refused = try CLIProcess(["deploy", "9", "--router-url", router.url, "--api-key", TestCluster.adminKey])
            #expect(await refused.waitForExit(timeout: .seconds(30)) == 65)
            #expect(refused.output.contains("error: version_not_found: no live worker runs 9"), "\(refused.output)")
            let status = try CLIProcess(["deploy", "status", "--router-url", router.url, "--api-key", TestCluster.adminKey])
            #expect(await status.waitForExit(timeout: .seconds(30)) == 0)
            #expect(status.output.contains("revision 5 · active 2") && status.output.contains("VERSION"), "\(status.output)")
        }
    }
}

/// Per-version workers as a Kubernetes Deployment runs them (`--when-drained stay`): an outdated version whose
/// rollback window is over drains and stays up idle rather than exiting into a restart loop, and a rollback
/// after the window takes it back at once.
@Suite("Versioned deploys under a Deployment", .serialized)
struct DeployStayTests {
    @Test func anOutdatedVersionDrainsAndStaysUpAndARollbackAfterTheWindowTakesItBack() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let old = try await cluster.addWorker(id: "v1-stay", version: "1", capacity: 10) { $0.whenDrained = .stay }
            try await cluster.addWorker(id: "v2-stay", version: "2", capacity: 10) { $0.whenDrained = .stay }
            try await cluster.waitForWorkers(2)
            #expect(try await cluster.deploy(DeployBody(version: "1")).value?.policy.revision == 1)
            try await cluster.waitForRevision(1)
            let call = try await cluster.placed()
            #expect(call.version == "1")

            _ = try #require(try await cluster.deploy(DeployBody(version: "2", rollbackWindowSeconds: 1, drainDeadlineSeconds: 1,
                                                                  atDeadline: .migrate)).value)
            try await cluster.waitForRevision(2)
            // The window ends, the old worker drains, its call moves to version 2, and the worker stays: idle, draining.
            try await eventually(timeout: .seconds(30), "the v1 call moved to v2") {
                try await cluster.record(call.callID)["version"] == "2"
            }
            try await eventually(timeout: .seconds(10), "v1 drained and idle") {
                old.worker.updateGauges()  // as a scrape does
                return old.worker.metrics.render().contains("\(MetricNames.workerDrainedIdle) 1")
            }
            try await Task.sleep(for: .seconds(1))
            #expect(!old.task.isCancelled && old.worker.workerState == .draining, "still up")
            #expect(WorkerProbe.readiness(old.worker.probeInputs()).reason == "draining")
            #expect(WorkerProbe.liveness(old.worker.probeInputs(), limit: .seconds(30)).ok)

            // A rollback after the window: the idle worker is undrained and takes the new calls.
            let back = try #require(try await cluster.deployAction("rollback").value)
            #expect(back.policy.active == "1")
            try await eventually(timeout: .seconds(10), "v1 ready again") { old.worker.workerState == .ready }
            #expect(try await cluster.placed().version == "1")
        }
    }
}
