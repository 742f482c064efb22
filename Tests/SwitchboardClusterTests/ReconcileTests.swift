import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

/// Calls nobody looks after (their worker died while no router saw it, or the router failing them over died)
/// are found by the routers' reconciliation and taken on; a worker that is only unknown, not gone, keeps its
/// calls.
@Suite("Reconciliation", .serialized)
struct ReconcileTests {
    static func orphan(_ cluster: TestCluster, call: String, worker: String) async throws {
        let checkpoint = Checkpoint(seq: 1, state: nil, mediaSequence: 10, mediaTimestamp: 9_600, takenAtMillis: WallClock.system.unixMillis)
        _ = try await cluster.redis.pipeline([
            .init(["HSET", cluster.keys.call(call), "tenant", "t", "worker_id", worker, "state", "active", "epoch", "1",
                   "checkpoint", String(decoding: checkpoint.encoded(), as: UTF8.self), "checkpoint_seq", "1"]),
            .init(["SADD", cluster.keys.workerCalls(worker), call]),
        ])
    }

    @Test func aCallOfAWorkerNoRouterKnowsIsTakenOn() async throws {
        try await withTestCluster(heartbeat: .milliseconds(500), suspectAfter: 2, deadAfter: 3) { cluster in
            let router = try await cluster.addRouter { $0.reconcileInterval = .milliseconds(500) }
            try await cluster.addWorker(id: "alive")
            try await cluster.waitForWorkers(1)
            try await Self.orphan(cluster, call: "c-orphan", worker: "ghost")
            try await eventually(timeout: .seconds(20), "the orphaned call is taken on by the live worker") {
                let record = try await cluster.record("c-orphan")
                return record["worker_id"] == "alive" && record["state"] == "active" && record["epoch"] == "2"
            }
            #expect(try await cluster.workerCalls("ghost").isEmpty)
            #expect(router.router.metrics.value(MetricNames.reconciledWorkers) ?? 0 >= 1)
        }
    }

    @Test func aWorkerThisRouterDoesNotHearButThatAnswersItsPingKeepsItsCalls() async throws {
        // Slower beats than the other tests here: a router that finds itself stalled (a tick a suspect time late)
        // judges nobody for a while, and a test process busy beside the whole suite stalls for a second now and
        // then; at 0.5 s beats this router once never got to judge in 40 s.
        try await withTestCluster(heartbeat: .seconds(1), suspectAfter: 3, deadAfter: 5) { cluster in
            let router = try await cluster.addRouter { $0.reconcileInterval = .seconds(3600) }
            try await cluster.addWorker(id: "alive")
            try await cluster.waitForWorkers(1)
            // "far" sends no heartbeat this router hears (as one behind a partitioned NATS node would) but answers
            // its ping.
            let far = Heartbeat(workerID: "far", version: "1.0.0", region: "local", zone: "local-a", state: .ready, capacity: 4,
                                activeCalls: 1, cpu: 0, memoryUsedBytes: 0, memoryLimitBytes: 0, seq: 1, incarnation: "far-1", accepted: 1)
            let pings = try cluster.client.subscribe(to: cluster.subjects.ping(worker: "far")) { message in
                try? cluster.client.reply(to: message, payload: far.encoded())
            }
            try await cluster.client.flush()
            try await Self.orphan(cluster, call: "c-far", worker: "far")
            try await eventually(timeout: .seconds(40), "the router can judge") {
                // Watching for a detection time first: until then it takes nobody for gone.
                try await Task.sleep(for: .milliseconds(200))
                return await router.router.reconcile().isEmpty && router.router.workers().contains { $0.id == "far" }
            }
            #expect(try await cluster.record("c-far")["worker_id"] == "far")
            #expect(try await cluster.workerCalls("far") == ["c-far"])
            pings.unsubscribe()
        }
    }

    @Test func aDrainAndAnUndrainTheWorkerMissedAreAppliedAtItsNextReRead() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(id: "missed") { $0.refreshInterval = .milliseconds(300) }
            try await cluster.waitForWorkers(1)
            _ = try await cluster.route()  // a call to keep: a worker drained with none leaves at once
            // Written to Redis as a router does, but the worker never got the control message (it was cut off).
            let now = WallClock.system.unixMillis
            let request = DrainRequest(workerID: "missed", deadlineMillis: now + 3_600_000, atDeadline: .migrate,
                                       requestedBy: "ops@test", requestedAtMillis: now)
            _ = try await cluster.redis.send(["HSET", cluster.keys.drains, "missed", String(decoding: WireCodec.encode(request), as: UTF8.self)])
            try await eventually(timeout: .seconds(10), "the missed drain applies") { worker.worker.workerState == .draining }
            _ = try await cluster.redis.send(["HDEL", cluster.keys.drains, "missed"])
            try await eventually(timeout: .seconds(10), "the missed undrain applies") { worker.worker.workerState == .ready }
        }
    }

    /// A worker undrains its own (deploy) drain while it re-reads its drain from Redis all the time: a re-read
    /// that read the record before the undrain must not drain it again after (once it did, for good: a
    /// version rolled back to stayed drained).
    @Test func aWorkersOwnUndrainIsNotTakenBackByAReReadOfRedis() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(id: "own") {
                $0.refreshInterval = .milliseconds(5)
                $0.whenDrained = .stay
            }
            try await cluster.waitForWorkers(1)
            for round in 0..<150 {
                await worker.worker.drain(deadline: .seconds(3600), atDeadline: .migrate, requestedBy: DrainRequest.byDeploy)
                #expect(worker.worker.workerState == .draining)
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...15)))
                #expect(await worker.worker.undrain(), "round \(round)")
                try await Task.sleep(for: .milliseconds(30))  // a few re-reads
                #expect(worker.worker.workerState == .ready, "round \(round): drained again by a re-read")
                #expect(try await cluster.redis.send(["HGET", cluster.keys.drains, "own"]).string == nil)
            }
        }
    }

    @Test func aCallItsWorkerDoesNotHoldIsEndedAndAnotherWorkersIsLeftOutOfTheSet() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(id: "alive") { $0.refreshInterval = .milliseconds(200) }
            try await cluster.waitForWorkers(1)
            let live = try await cluster.route()
            // Listed in alive's set, not running there: one still recorded on alive, one recorded on another worker.
            _ = try await cluster.redis.pipeline([
                .init(["HSET", cluster.keys.call("c-stray"), "tenant", "t", "worker_id", "alive", "state", "active", "epoch", "3",
                       "incarnation", worker.worker.incarnation]),
                .init(["HSET", cluster.keys.call("c-before"), "tenant", "t", "worker_id", "alive", "state", "active", "epoch", "1",
                       "incarnation", "a-previous-process"]),
                .init(["HSET", cluster.keys.call("c-moved"), "tenant", "t", "worker_id", "other", "state", "active", "epoch", "2"]),
                .init(["SADD", cluster.keys.workerCalls("alive"), "c-stray", "c-moved", "c-before"]),
            ])
            try await eventually(timeout: .seconds(10), "the strays are repaired") {
                try await cluster.workerCalls("alive") == [live.callID, "c-before"]
            }
            let stray = try await cluster.record("c-stray")
            #expect(stray["state"] == "ended" && stray["end_reason"] == "not_running", "\(stray)")
            #expect(try await cluster.record("c-moved")["state"] == "active", "another worker's call is not touched")
            #expect(try await cluster.record("c-before")["state"] == "active", "a previous process's call is the failover's")
            #expect(try await cluster.record(live.callID)["state"] == "active", "the call it holds goes on")
            // (Counted once Redis's reply reaches the worker, which may be after this test saw the change.)
            try await eventually("the repairs counted") {
                worker.worker.metrics.value(MetricNames.recordsRepaired, ["result": "stray_ended"]) == 1
                    && worker.worker.metrics.value(MetricNames.recordsRepaired, ["result": "stray_forgotten"]) == 1
            }
        }
    }

    @Test func anEndRedisDidNotTakeIsWrittenWithItsReasonOnceRedisAnswers() async throws {
        try await withTestCluster(ownRedis: true) { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(id: "w") { $0.refreshInterval = .milliseconds(200) }
            try await cluster.waitForWorkers(1)
            let call = try await cluster.route()
            try await eventually("active") { try await cluster.record(call.callID)["state"] == "active" }
            // Redis holds every script for 3 s (on its own clock), longer than the worker's 2 s command timeout: the
            // end times out and its connection is dropped, so the script it sent never runs.
            _ = try await cluster.redis.send(["CLIENT", "PAUSE", "3000", "WRITE"])
            #expect(worker.worker.endCall(call.callID, reason: .caller))
            try await eventually(timeout: .seconds(20), "the end is recorded once Redis answers") {
                try await cluster.record(call.callID)["state"] == "ended"
            }
            #expect(try await cluster.record(call.callID)["end_reason"] == "caller")
            try await eventually("the late end counted, and the call gone from the worker's set") {
                let gone = try await cluster.workerCalls("w").isEmpty
                return gone && worker.worker.metrics.value(MetricNames.recordsRepaired, ["result": "end_written"]) == 1
            }
        }
    }
}
