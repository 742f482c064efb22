import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Synchronization
import Testing

/// What a caller hears on a call's `.out`: each packet with the time it arrived.
final class AudioTap: Sendable {
    struct Heard: Sendable {
        var at: ContinuousClock.Instant
        var packet: MediaPacket
    }

    private final class Store: Sendable {
        let heard = Mutex<[Heard]>([])
    }

    private let store = Store()
    private let subscription: NATSSubscription

    init(_ nats: NATSConnection, _ subject: String) throws {
        let store = self.store
        subscription = try nats.subscribe(to: subject) { message in
            guard let packet = try? MediaPacket.decode(message.payload) else { return }
            store.heard.withLock { $0.append(Heard(at: .now, packet: packet)) }
        }
    }

    deinit { subscription.unsubscribe() }

    var all: [Heard] { store.heard.withLock { $0 } }
    var count: Int { store.heard.withLock { $0.count } }
    func count(after instant: ContinuousClock.Instant) -> Int { store.heard.withLock { $0.filter { $0.at > instant }.count } }

    /// The longest silence between two packets.
    var longestGap: Duration { longestGap(after: nil) }

    /// The longest silence between two packets heard after `instant`.
    func longestGap(after instant: ContinuousClock.Instant?) -> Duration {
        let all = self.all.filter { instant == nil || $0.at > instant! }
        return zip(all, all.dropFirst()).map { $1.at - $0.at }.max() ?? .zero
    }

    /// The dominant frequency of the first `frames` packets heard after `instant`, decoded in order as a
    /// caller would.
    func frequency(after instant: ContinuousClock.Instant, frames: Int = 25) throws -> Double {
        let decoder = try OpusDecoder()
        var samples: [Int16] = []
        for h in all.filter({ $0.at > instant }).prefix(frames) { samples += try decoder.decode(h.packet.payload) }
        return SignalAnalysis.dominantFrequency(samples, sampleRate: 48_000, from: 100, to: 2000)
    }
}

extension TestCluster {
    /// A new call through the routers' queue group. Asked again when the answer is `unavailable`, as a caller
    /// would: on a loaded test machine a route can miss its deadline (a Redis write not sent in time, say).
    func route(_ metadata: [String: String] = [:]) async throws -> Placement {
        for attempt in 1...5 {
            let reply = try await routeByNATS(RouteRequest(tenant: "t", metadata: metadata))
            if let call = reply.call { return call }
            guard reply.error?.code == "unavailable", attempt < 5 else { throw TestServerError("not placed: \(reply.error?.message ?? "?")") }
        }
        throw TestServerError("not placed")
    }

    func drain(_ worker: String, deadlineSeconds: Double, atDeadline: String = "migrate", router: Int = 0) async throws -> (status: Int, body: Data) {
        try await http("POST", "/v1/workers/\(worker)/drain",
                       body: Array(#"{"deadline_seconds": \#(deadlineSeconds), "at_deadline": "\#(atDeadline)"}"#.utf8), router: router,
                       headers: ["X-Switchboard-Actor": "test@ops"])
    }

    /// Waits until every call's record names `worker`, active, moved once. The router answers (or announces)
    /// a move when the new worker accepts; the worker records itself a moment after, as it starts the call.
    func expectRecords(_ calls: [Placement], on worker: String) async throws {
        try await eventually(timeout: .seconds(30), "every record names \(worker), active, moved once") {
            for call in calls {
                let record = try await record(call.callID)
                guard record["worker_id"] == worker, record["state"] == "active", record["moves"] == "1" else { return false }
            }
            return true
        }
    }

    func drainRecord(_ worker: String) async throws -> String? {
        try await redis.send(["HGET", keys.drains, worker]).string
    }
}

/// One test at a time: each runs real tone calls (50 Opus packets a second each way) in worker processes and
/// listens to them here; run side by side with the rest of the suite they would starve it on 2 cores.
@Suite("Draining, migration and failover", .serialized)
struct DrainClusterTests {
    @Test func drainingAWorkerWithTenCallsPlacesNothingMoreOnItAndItExitsZeroWhenTheyEnd() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            let a = try cluster.spawnWorker(id: "a", ["--capacity", "10", "--handler", "tone"])
            try await cluster.waitForWorkers(1, timeout: .seconds(30))
            var calls: [Placement] = []
            for _ in 0..<10 { calls.append(try await cluster.route()) }
            #expect(calls.allSatisfy { $0.workerID == "a" })
            try await cluster.addWorker(id: "b", capacity: 30)
            try await cluster.waitForWorkers(2, timeout: .seconds(30))

            let (status, body) = try await cluster.drain("a", deadlineSeconds: 3600)
            #expect(status == 202, "\(String(decoding: body, as: UTF8.self))")
            let result = try decodeJSON(DrainResult.self, body)
            #expect(result.confirmed && result.state == "draining" && result.activeCalls == 10)
            // From the moment the command returned, nothing more lands on a.
            for _ in 0..<20 { #expect(try await cluster.route().workerID == "b") }
            // Its calls go on: audio keeps coming, and status shows the drain's progress.
            let tap = try AudioTap(cluster.client, calls[0].media.out)
            try await eventually(timeout: .seconds(30), "a's call still sends audio") { tap.count >= 25 }
            let view = try decodeJSON(WorkersView.self, try await cluster.http("GET", "/v1/workers").body)
            let shown = try #require(view.workers.first { $0.id == "a" })
            #expect(shown.state == "draining" && shown.activeCalls == 10 && shown.drain?.requestedBy == "tester (admin key, client test@ops)")
            #expect(a.process.isRunning)

            for call in calls { #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200) }
            #expect(await a.waitForExit(timeout: .seconds(30)) == 0, "\(a.output)")
            #expect(try await cluster.drainRecord("a") == nil, "a finished drain leaves no record")
            try await eventually(timeout: .seconds(10), "router drops a") { !router.router.workers().contains { $0.id == "a" } }
            for call in calls { #expect(try await cluster.record(call.callID)["end_reason"] == "api") }
        }
    }

    @Test func aShortDeadlineMovesTheCallsAndTheToneGoesOnAtTheSameFrequency() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let a = try cluster.spawnWorker(id: "a", ["--capacity", "10", "--handler", "tone"])
            try await cluster.waitForWorkers(1, timeout: .seconds(30))
            var calls: [Placement] = []
            for _ in 0..<5 { calls.append(try await cluster.route(["tone_hz": "700"])) }
            let b = try cluster.spawnWorker(id: "b", ["--capacity", "10", "--handler", "tone"])
            try await cluster.waitForWorkers(2, timeout: .seconds(30))
            let taps = try calls.map { try AudioTap(cluster.client, $0.media.out) }
            try await eventually(timeout: .seconds(30), "tone flowing") { taps.allSatisfy { $0.count >= 10 } }

            let drained = ContinuousClock.now
            #expect(try await cluster.drain("a", deadlineSeconds: 1).status == 202)
            #expect(await a.waitForExit(timeout: .seconds(30)) == 0, "\(a.output)")
            try await cluster.expectRecords(calls, on: "b")
            let moved = ContinuousClock.now
            try await eventually(timeout: .seconds(30), "tone flowing from b") { taps.allSatisfy { $0.count(after: moved) >= 25 } }
            #expect(ContinuousClock.now - drained < .seconds(30))
            for tap in taps {
                let sequences = tap.all.map(\.packet.sequence)
                // Numbered on from where a left off: nothing twice, nothing backwards.
                #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 > $0 }, "\(sequences)")
                // The bench measures the gap (about one frame); here it only must be a pause, not a loss, even when
                // this busy process stalls.
                #expect(tap.longestGap < .seconds(3), "audio paused \(tap.longestGap)")
                #expect(abs(try tap.frequency(after: moved) - 700) <= 5)
            }
            #expect(try await cluster.workerCalls("b").count == 5)
            #expect(try await cluster.workerCalls("a").isEmpty)
            withExtendedLifetime(b) {}
        }
    }

    /// A caller's audio follows its call to the new worker (`CallLeg`: by the call's events, holding packets back
    /// while the call moves): every packet it sends during a migration reaches a worker listening for it, those
    /// before the switch the old one, those after it the new one.
    @Test func aCallersAudioFollowsItsCallAcrossAMigration() async throws {
        try await TestCluster.withCallOnAWithB { cluster, a, b, call in
            let seen = try PacketsSeen(cluster, call)
            let leg = try CallLeg(cluster.client, placement: call, subjects: cluster.subjects)
            let packets: UInt32 = 150
            let speaker = Task { try await speak(packets, through: leg) }
            try await Task.sleep(for: .seconds(1))
            let moved = try await cluster.http("POST", "/v1/calls/\(call.callID)/migrate")
            #expect(moved.status == 200, "\(String(decoding: moved.body, as: UTF8.self))")
            try await speaker.value
            try await cluster.client.flush()
            func received(_ worker: TestCluster.RunningWorker) -> Int {
                Int(worker.worker.metrics.value("switchboard_media_packets_total", ["direction": "in"]) ?? 0)
            }
            try await eventually(timeout: .seconds(10), "every packet reached a worker") { received(a) + received(b) == Int(packets) }
            #expect(leg.worker == "b")
            let sent = seen.all
            let (toA, toB) = (seen.sequences(to: "a"), seen.sequences(to: "b"))
            #expect(sent.count == Int(packets) && Set(toA + toB) == Set(0..<packets), "each packet sent once")
            #expect(!toA.isEmpty && !toB.isEmpty && toA.max()! < toB.min()!, "one switch, from a to b")
            #expect(received(b) == toB.count, "b heard all that was sent to it")
            withExtendedLifetime(seen) {}
        }
    }

    /// A worker that takes a call on says so itself: its claim in Redis is what moves the call, so the caller
    /// follows it even when no router announces the move (one gave up waiting for the accept, a slow claim in a
    /// starved process, and reported the move failed). Here the test offers the call to b itself, as such a
    /// router would have, and nobody else says a word.
    @Test func aCallTakenOnWithoutItsRoutersWordIsFollowedByItsCaller() async throws {
        try await TestCluster.withCallOnAWithB { cluster, a, b, call in
            let seen = try PacketsSeen(cluster, call)
            let leg = try CallLeg(cluster.client, placement: call, subjects: cluster.subjects)
            let speaker = Task { try await speak(150, through: leg) }
            var record: [String: String] = [:]
            try await eventually(timeout: .seconds(10), "a checkpoint") { record = try await cluster.record(call.callID); return record["checkpoint"] != nil }
            guard case .success(let checkpoint)? = Checkpoint.parse(record["checkpoint"]) else { throw TestServerError("no checkpoint: \(record)") }
            let offer = Offer(callID: call.callID, tenant: "t", region: nil, metadata: [:], routerID: "router-gone",
                              resume: Resume(reason: .migrate, fromWorker: "a", checkpoint: checkpoint, epoch: record["epoch"].flatMap { Int64($0) }))
            let reply = try OfferReply.decode(try await cluster.client.request(cluster.subjects.offer(worker: "b"), payload: offer.encoded()).payload)
            #expect(reply.accepted && reply.workerID == "b")
            try await eventually(timeout: .seconds(10), "the caller follows the call to b") { leg.worker == "b" }
            try await eventually(timeout: .seconds(10), "the record names b") { try await cluster.record(call.callID)["worker_id"] == "b" }
            try await eventually(timeout: .seconds(10), "a lets go") { a.worker.activeCalls == 0 }
            try await speaker.value
            try await cluster.client.flush()
            let (toA, toB) = (seen.sequences(to: "a"), seen.sequences(to: "b"))
            #expect(!toB.isEmpty && toA.max() ?? 0 < toB.min()!, "one switch, from a to b: \(toA.count) to a, \(toB.count) to b")
            try await eventually(timeout: .seconds(10), "b hears what was sent to it") {
                Int(b.worker.metrics.value("switchboard_media_packets_total", ["direction": "in"]) ?? 0) == toB.count
            }
            #expect(b.worker.activeCalls == 1)
            withExtendedLifetime(seen) {}
        }
    }

    /// `stop()` and then the worker's task cancelled at once (a test's or a service group's teardown): the end
    /// `stop()` decided is still written, not lost to the cancellation (then the routers would resume the call).
    @Test func aWorkerStoppedAndTornDownAtOnceStillRecordsItsCallsEnd() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try await cluster.addWorker(id: "a")
            try await cluster.waitForWorkers(1)
            let call = try await cluster.route()
            try await eventually(timeout: .seconds(10), "the call is active") { try await cluster.record(call.callID)["state"] == "active" }
            worker.worker.stop()
            worker.task.cancel()
            try await eventually(timeout: .seconds(10), "the call's end is recorded") { try await cluster.record(call.callID)["state"] == "ended" }
            #expect(try await cluster.record(call.callID)["end_reason"] == "worker_stopping")
        }
    }

    @Test func aWorkerKilledWithTwentyCallsHasThemAllResumedElsewhere() async throws {
        // Router and workers are processes of their own, so a stall of this busy test process cannot delay
        // them; the time is read from the router's own events.
        let interval = Duration.milliseconds(500)
        try await withTestCluster(heartbeat: interval, suspectAfter: 2, deadAfter: 3) { cluster in
            let router = try cluster.spawnRouter(id: "r1")
            try await router.waitForOutput("listening on", timeout: .seconds(30))
            let a = try cluster.spawnWorker(id: "a", ["--capacity", "20", "--handler", "tone"])
            var calls: [Placement] = []
            try await eventually(timeout: .seconds(30), "the router places on a") {
                guard let call = try? await cluster.route(["tone_hz": "500"]) else { return false }
                calls.append(call)
                return true
            }
            for _ in 1..<20 { calls.append(try await cluster.route(["tone_hz": "500"])) }
            #expect(Set(calls.map(\.workerID)) == ["a"])
            let b = try cluster.spawnWorker(id: "b", ["--capacity", "30", "--handler", "tone"])
            try await eventually(timeout: .seconds(30), "the router places on b (a is full)") {
                (try? await cluster.route())?.workerID == "b"
            }
            try await eventually(timeout: .seconds(30), "every call checkpointed") {
                for call in calls where try await cluster.record(call.callID)["checkpoint_seq"] == nil { return false }
                return true
            }
            let taps = try calls.map { try AudioTap(cluster.client, $0.media.out) }
            let events = try cluster.client.subscribe(to: cluster.subjects.events(worker: Subjects.anyWorker, call: "*"))
            try await cluster.client.flush()

            let killedAt = Int64(Date().timeIntervalSince1970 * 1000)
            kill(a.pid, SIGKILL)
            var resumed: [String: CallEvent] = [:]
            var other: [CallEvent] = []
            let deadline = Task { try await Task.sleep(for: .seconds(30)); events.unsubscribe() }
            for await message in events {
                let event = try CallEvent.decode(message.payload)
                if event.event == .resumed { resumed[event.callID] = event } else { other.append(event) }
                if resumed.count == 20 { break }
            }
            deadline.cancel()
            #expect(resumed.count == 20, "resumed: \(resumed.count), other events: \(other)")
            #expect(Set(resumed.keys) == Set(calls.map(\.callID)))
            #expect(resumed.values.allSatisfy { $0.workerID == "b" && $0.fromWorker == "a" })
            #expect(!other.contains { $0.event == .ended }, "no call lost: \(other)")
            let last = resumed.values.map(\.atMillis).max() ?? .max
            // Found dead within 3 intervals (or sooner, failing its ping); then 1 s for all 20 to be taken on.
            #expect(last - killedAt <= Int64((interval * 3 + .seconds(1)).milliseconds), "resumed \(last - killedAt) ms after the kill")
            try await cluster.expectRecords(calls, on: "b")
            let after = ContinuousClock.now
            try await eventually(timeout: .seconds(30), "audio on every call again") { taps.allSatisfy { $0.count(after: after) >= 10 } }
            for tap in taps { #expect(abs(try tap.frequency(after: after) - 500) <= 5) }
            #expect(try await cluster.workerCalls("a").isEmpty)
            // Metered once across the failover: b goes on from a's last refresh, so each call's metered time is its
            // duration (its record's start to end) within a second, and the tenant's month is their sum.
            for call in calls {
                _ = try await cluster.client.request(cluster.subjects.end(worker: "b", call: call.callID),
                                                     payload: CallEnd(callID: call.callID, reason: .api).encoded(), timeout: .seconds(10))
            }
            var metered: Int64 = 0
            for call in calls {
                try await eventually(timeout: .seconds(10), "call ended") { try await cluster.record(call.callID)["state"] == "ended" }
                let record = try await cluster.record(call.callID)
                let time = try #require(Int64(record["metered_ms"] ?? ""))
                let duration = try #require(Int64(record["ended_at"] ?? "")) - (try #require(Int64(record["started_at"] ?? "")))
                #expect(abs(time - duration) <= 1_000, "metered \(time) ms of a \(duration) ms call")
                metered += time
            }
            let usage = try await TenantLimits(redis: cluster.redis, keys: cluster.keys).usage("t", month: UsagePeriod.month(WallClock.system.unixMillis))
            #expect(usage.callMillis >= metered && usage.calls >= 20, "\(usage)")  // and the call placed on b above
            withExtendedLifetime((router, b)) {}
        }
    }

    @Test func aWorkerRestartedUnderTheSameIdBeforeItIsFoundDeadHasItsOldCallsResumed() async throws {
        try await withTestCluster { cluster in  // lenient liveness: the restart comes long before death
            try await cluster.addRouter()
            let first = try cluster.spawnWorker(id: "a")
            try await cluster.waitForWorkers(1, timeout: .seconds(30))
            let call = try await cluster.route()
            try await cluster.addWorker(id: "b")
            try await cluster.waitForWorkers(2, timeout: .seconds(30))
            try await eventually(timeout: .seconds(30), "checkpointed") { try await cluster.record(call.callID)["checkpoint_seq"] != nil }
            kill(first.pid, SIGKILL)
            _ = await first.waitForExit(timeout: .seconds(10))
            let second = try cluster.spawnWorker(id: "a")
            try await eventually(timeout: .seconds(30), "the old process's call resumed on b") {
                try await cluster.record(call.callID)["worker_id"] == "b"
            }
            // The new process under the same id keeps taking calls of its own.
            try await cluster.waitForWorkers(2, timeout: .seconds(30))
            withExtendedLifetime(second) {}
        }
    }

    @Test func aDeadWorkersCallWithoutACheckpointEndsAsWorkerLost() async throws {
        try await withTestCluster(heartbeat: .milliseconds(500), suspectAfter: 2, deadAfter: 3) { cluster in
            let router = try await cluster.addRouter()
            let a = try cluster.spawnWorker(id: "a")
            try await cluster.waitForWorkers(1, timeout: .seconds(30))
            // A call the worker accepted but never checkpointed (as one placed a moment before the crash is).
            _ = try await cluster.redis.pipeline([
                .init(["HSET", cluster.keys.call("c-nostate"), "tenant", "t", "worker_id", "a", "state", "active"]),
                .init(["SADD", cluster.keys.workerCalls("a"), "c-nostate"]),
            ])
            let events = try cluster.client.subscribe(to: cluster.subjects.events(worker: Subjects.anyWorker, call: "c-nostate"))
            kill(a.pid, SIGKILL)
            try await eventually(timeout: .seconds(30), "the call is ended") { try await cluster.record("c-nostate")["state"] == "ended" }
            #expect(try await cluster.record("c-nostate")["end_reason"] == "worker_lost")
            try await eventually("counted lost, and gone from the dead worker's set") {
                let gone = try await cluster.workerCalls("a").isEmpty
                return gone && router.router.metrics.value(MetricNames.failoverCalls, ["result": "lost"]) == 1
            }
            var ended: CallEvent?
            for await message in events {
                ended = try CallEvent.decode(message.payload)
                break
            }
            #expect(ended?.event == .ended && ended?.reason == "worker_lost")
        }
    }

    /// A dead worker's call waits for a slot (no other worker has one: here there is none), and its caller hangs up meanwhile: the
    /// router stops trying and says so (`result="ended"`), and does not count the call lost.
    @Test func aDeadWorkersCallWhoseCallerHangsUpWhileItWaitsIsCountedEnded() async throws {
        try await withTestCluster(heartbeat: .milliseconds(500), suspectAfter: 2, deadAfter: 3) { cluster in
            let router = try await cluster.addRouter()
            let a = try cluster.spawnWorker(id: "a")
            try await cluster.waitForWorkers(1, timeout: .seconds(30))
            let call = try await cluster.route()
            try await eventually(timeout: .seconds(30), "checkpointed") { try await cluster.record(call.callID)["checkpoint_seq"] != nil }
            kill(a.pid, SIGKILL)
            try await eventually(timeout: .seconds(30), "the call waits for a worker") {
                router.router.metrics.value(MetricNames.failoverCalls, ["result": "waiting"]) == 1
            }
            #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200)
            try await eventually(timeout: .seconds(10), "the wait ended and counted") {
                router.router.metrics.value(MetricNames.failoverCalls, ["result": "ended"]) == 1
            }
            #expect(router.router.metrics.value(MetricNames.failoverCalls, ["result": "lost"]) == nil)
            #expect(router.router.metrics.value(MetricNames.failoverCalls, ["result": "recovered"]) == nil)
            #expect(try await cluster.record(call.callID)["end_reason"] == "not_running")
            try await eventually("gone from the dead worker's set") { try await cluster.workerCalls("a").isEmpty }
        }
    }

    @Test func aDrainSurvivesARouterRestartAndAWorkerRestart() async throws {
        try await withTestCluster { cluster in
            let first = try await cluster.addRouter()
            try await cluster.addWorker(id: "a")  // an echo call with no audio in stays up, and costs nothing
            try await cluster.waitForWorkers(1)
            _ = try await cluster.route()
            try await cluster.addWorker(id: "b", capacity: 20)
            try await cluster.waitForWorkers(2)
            #expect(try await cluster.drain("a", deadlineSeconds: 3600).status == 202)
            await first.group.triggerGracefulShutdown()
            try await first.task.value

            // A new router knows the drain from Redis (who asked, until when), not only from heartbeats.
            let second = try await cluster.addRouter()
            try await eventually(timeout: .seconds(30), "new router sees both, b ready") {
                second.router.workers().count == 2 && second.router.workers().contains { $0.id == "b" && $0.isPlaceable }
            }
            #expect(second.router.workers().first { $0.id == "a" }?.drain?.requestedBy == "tester (admin key, client test@ops)")
            for _ in 0..<10 { #expect(try await cluster.route().workerID == "b") }

            // A worker that starts while a drain of it is recorded keeps to it: with no calls, it leaves at once.
            _ = try await cluster.redis.send(["HSET", cluster.keys.drains, "c", String(decoding: WireCodec.encode(
                DrainRequest(workerID: "c", deadlineMillis: 0, atDeadline: .migrate, requestedBy: "test", requestedAtMillis: 0)), as: UTF8.self)])
            let c = try await cluster.addWorker(id: "c")
            try await c.task.value
            #expect(c.worker.workerState == .stopping)
            #expect(try await cluster.drainRecord("c") == nil)
        }
    }

    @Test func undrainBringsTheWorkerBack() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let a = try await cluster.addWorker(id: "a")
            try await cluster.waitForWorkers(1)
            _ = try await cluster.route()
            #expect(try await cluster.drain("a", deadlineSeconds: 3600).status == 202)
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).error?.code == "no_capacity")
            let (status, body) = try await cluster.http("POST", "/v1/workers/a/undrain")
            #expect(status == 200, "\(String(decoding: body, as: UTF8.self))")
            #expect(a.worker.workerState == .ready)
            #expect(try await cluster.drainRecord("a") == nil)
            #expect(try await cluster.route().workerID == "a")
        }
    }

    @Test func callMigrateMovesOneCallAndRefusesWhatCannotMove() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker(id: "a", handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let call = try await cluster.route()
            // Nowhere to go: refused, and the call stays where it was, still sending.
            let (status, body) = try await cluster.http("POST", "/v1/calls/\(call.callID)/migrate")
            #expect(status == 503 && errorCode(body) == "no_capacity", "\(status) \(String(decoding: body, as: UTF8.self))")
            let tap = try AudioTap(cluster.client, call.media.out)
            try await eventually(timeout: .seconds(30), "a sends again after the failed move") { tap.count >= 10 }
            try await cluster.addWorker(id: "b", handler: ToneHandler())
            try await cluster.waitForWorkers(2)

            let events = try cluster.client.subscribe(to: cluster.subjects.events(worker: Subjects.anyWorker, call: call.callID))
            let moved = try await cluster.http("POST", "/v1/calls/\(call.callID)/migrate", headers: ["X-Switchboard-Actor": "alice@ops"])
            #expect(moved.status == 200)
            let migration = try decodeJSON(Migration.self, moved.body)
            #expect(migration.fromWorker == "a" && migration.toWorker == "b")
            var kinds: [CallEvent.Kind] = []
            for await message in events {
                kinds.append(try CallEvent.decode(message.payload).event)
                if kinds.count == 2 { break }
            }
            #expect(kinds == [.migrating, .migrated])
            try await cluster.expectRecords([call], on: "b")

            // An ended call, an unknown one: clear errors.
            #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200)
            let ended = try await cluster.http("POST", "/v1/calls/\(call.callID)/migrate")
            #expect(ended.status == 409 && errorCode(ended.body) == "conflict")
            #expect(errorCode(try await cluster.http("POST", "/v1/calls/c-nope/migrate").body) == "not_found")

            // Every operator action is in the audit, with who and the outcome.
            let audit = try await cluster.http("GET", "/v1/audit?limit=10")
            let entries = try decodeJSON(AuditEntries.self, audit.body).entries
            #expect(entries.map(\.outcome) == ["not_found", "conflict", "ok", "no_capacity"])
            #expect(entries.allSatisfy { $0.action == "migrate" })
            #expect(entries[2].actor == "tester (admin key, client alice@ops)" && entries[2].target == call.callID)
        }
    }

    /// A router that holds a call and then vanishes (before release or unhold) must not leave the call silent:
    /// the worker asks Redis whether the call is still its own and, since no one took it on, speaks again.
    @Test func aHeldCallNoRouterFollowsUpSpeaksAgain() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker(id: "a", handler: ToneHandler()) { $0.migrateTimeout = .seconds(3) }
            try await cluster.waitForWorkers(1)
            let call = try await cluster.route()
            let tap = try AudioTap(cluster.client, call.media.out)
            try await eventually(timeout: .seconds(10), "the tone is heard") { tap.count >= 5 }

            func control(_ op: WorkerControl.Op, _ callID: String) async throws -> WorkerControlReply {
                let reply = try await cluster.client.request(cluster.subjects.control(worker: "a"),
                                                             payload: WorkerControl(op, callID: callID).encoded(), timeout: .seconds(5))
                return try WorkerControlReply.decode(reply.payload)
            }
            let held = try await control(.hold, call.callID)
            let heldAt = ContinuousClock.now
            #expect(held.ok && held.checkpoint != nil)
            try await Task.sleep(for: .milliseconds(200))
            let before = tap.count
            try await Task.sleep(for: .milliseconds(800))
            #expect(tap.count == before || ContinuousClock.now - heldAt >= .seconds(3), "a held call sends nothing")
            // An unhold for a call never held, a release for one this worker does not hold: answered, nothing else.
            #expect(try await control(.release, "c-nope").error?.code == "not_found")

            try await eventually(timeout: .seconds(15), "the held call speaks again on its own") { tap.count > before + 10 }
            #expect(ContinuousClock.now - heldAt >= .seconds(3), "not before the migrate timeout")
            #expect(try await cluster.record(call.callID)["worker_id"] == "a")
            #expect(try await control(.unhold, call.callID).ok)
        }
    }

    @Test func badDrainRequestsGetClearErrors() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker(id: "a")
            try await cluster.waitForWorkers(1)
            let unknown = try await cluster.drain("nobody", deadlineSeconds: 60)
            #expect(unknown.status == 404 && errorCode(unknown.body) == "not_found")
            let negative = try await cluster.drain("a", deadlineSeconds: -5)
            #expect(negative.status == 400 && errorCode(negative.body) == "bad_request")
            let badPolicy = try await cluster.drain("a", deadlineSeconds: 5, atDeadline: "explode")
            #expect(badPolicy.status == 400)
            let garbage = try await cluster.http("POST", "/v1/workers/a/drain", body: Array("[1,2".utf8))
            #expect(garbage.status == 400)
            #expect(errorCode(try await cluster.http("POST", "/v1/workers/nobody/undrain").body) == "not_found")
            // Nothing was drained by any of it.
            #expect(try await cluster.drainRecord("a") == nil)
            #expect(try await cluster.route().workerID == "a")
            // A malformed order straight to the worker is refused with a code, and the worker goes on.
            let reply = try await cluster.client.request(cluster.subjects.control(worker: "a"), payload: Array(#"{"v":1,"op":"hold"}"#.utf8),
                                                         timeout: .seconds(5))
            #expect(try WorkerControlReply.decode(reply.payload).error?.code == "bad_request")
            #expect(try await cluster.route().workerID == "a")
        }
    }
}

/// Ends each call the moment it starts: a stream of route requests does not pile up calls.
struct HangUpHandler: CallHandler {
    func run(_ call: CallContext) async throws {}
}

@Suite("Router shutdown")
struct RouterShutdownTests {
    @Test func sigtermOnOneOfTwoRoutersUnderASteadyStreamOfRoutesLosesNone() async throws {
        try await withTestCluster { cluster in
            let routers = try ["r1", "r2"].map { try cluster.spawnRouter(id: $0) }
            for router in routers { try await router.waitForOutput("listening on", timeout: .seconds(30)) }
            try await cluster.addWorker(id: "a", capacity: 10_000, handler: HangUpHandler())
            // Both routers see the worker once a run of routes all succeed.
            var streak = 0
            try await eventually(timeout: .seconds(30), "both routers place calls") {
                streak = (try? await cluster.routeByNATS(RouteRequest(tenant: "t")).call) != nil ? streak + 1 : 0
                return streak >= 20
            }

            final class Tally: Sendable {
                let placed = Mutex(0)
                let placedAfterSIGTERM = Mutex(0)
                let signalled = Mutex(false)
                let failed = Mutex<[String]>([])
            }
            let tally = Tally()
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        while ContinuousClock.now - start < .seconds(5) {
                            do {
                                let reply = try await cluster.routeByNATS(RouteRequest(tenant: "t"))
                                if reply.call != nil {
                                    tally.placed.withLock { $0 += 1 }
                                    if tally.signalled.withLock({ $0 }) { tally.placedAfterSIGTERM.withLock { $0 += 1 } }
                                } else {
                                    tally.failed.withLock { $0.append(reply.error?.code ?? "?") }
                                }
                            } catch {
                                tally.failed.withLock { $0.append("\(error)") }
                            }
                            try await Task.sleep(for: .milliseconds(25))
                        }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(1))
                    kill(routers[0].pid, SIGTERM)
                    tally.signalled.withLock { $0 = true }
                }
                try await group.waitForAll()
            }
            #expect(tally.failed.withLock { $0 } == [], "route requests lost across the shutdown")
            #expect(tally.placed.withLock { $0 } >= 20)
            #expect(tally.placedAfterSIGTERM.withLock { $0 } >= 10, "the stream went on after the signal")
            #expect(await routers[0].waitForExit(timeout: .seconds(30)) == 0, "\(routers[0].output)")
            #expect(routers[1].process.isRunning)
        }
    }
}

/// Where each packet sent toward a call went (the worker, its sequence number), as an observer on the open test
/// bus sees it.
final class PacketsSeen: Sendable {
    private final class Log: Sendable { let packets = Mutex<[(worker: String, sequence: UInt32)]>([]) }
    private let log = Log()
    private let subscription: NATSSubscription

    init(_ cluster: TestCluster, _ call: Placement) throws {
        let log = self.log
        subscription = try cluster.client.subscribe(to: cluster.subjects.mediaIn(worker: "*", call: call.callID)) { message in
            guard let packet = try? MediaPacket.decode(message.payload) else { return }
            log.packets.withLock { $0.append((String(message.subject.split(separator: ".")[2]), packet.sequence)) }
        }
    }

    deinit { subscription.unsubscribe() }

    var all: [(worker: String, sequence: UInt32)] { log.packets.withLock { $0 } }

    /// The sequence numbers of the packets that went to `worker`, in the order sent.
    func sequences(to worker: String) -> [UInt32] { all.filter { $0.worker == worker }.map(\.sequence) }
}

extension TestCluster {
    /// Runs `body` on one router, a call on worker a, and worker b beside it, both placeable.
    static func withCallOnAWithB(_ body: (TestCluster, RunningWorker, RunningWorker, Placement) async throws -> Void) async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let a = try await cluster.addWorker(id: "a")
            try await cluster.waitForWorkers(1)
            let call = try await cluster.route()
            let b = try await cluster.addWorker(id: "b")
            try await cluster.waitForWorkers(2)
            try await body(cluster, a, b, call)
        }
    }
}

/// Sends `packets` packets of a 440 Hz tone through `leg`, one every 20 ms, numbered from 0.
func speak(_ packets: UInt32, through leg: CallLeg) async throws {
    let encoder = try OpusEncoder()
    var tone = ToneGenerator(frequency: 440)
    let clock = ContinuousClock()
    var next = clock.now
    for sequence in 0..<packets {
        try leg.send(MediaPacket(sequence: sequence, timestamp: sequence &* 960, payload: try encoder.encode(tone.next(960))).encoded())
        next += .milliseconds(20)
        try await Task.sleep(until: next, clock: clock)
    }
}
