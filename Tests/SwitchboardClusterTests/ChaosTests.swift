import Foundation
import SwitchboardCore
import SwitchboardTestSupport
import Testing

/// The failure model's test (docs: DESIGN "Failure model"): live tone calls through a fault of the bus, a
/// router, a worker or Redis, and one pass mark for every case, `expectEveryCallSpeaking`: every healthy call
/// still speaking afterwards, nothing ended, no lease leaked. One case at a time: each runs its own servers,
/// routers and workers as processes, and several at once would starve each other on 2 cores.
@Suite("Chaos: live calls through faults", .serialized)
struct ChaosTests {
    // MARK: - The bus

    @Test func everyCallGoesOnWhenNATSIsStoppedForFourSecondsAndStartedAgain() async throws {
        try await ChaosCluster.run { cluster in
            await cluster.nats.stop()
            try await Task.sleep(for: .seconds(4))
            try await cluster.nats.start()  // the same port: every client reconnects by itself
            await cluster.expectEveryCallSpeaking()
        }
    }

    @Test func everyAgentCallGoesOnWhenNATSIsStoppedForFourSecondsAndStartedAgain() async throws {
        // The same with an agent process behind each call: the worker's sockets to its agents do not cross NATS,
        // and no agent session is restarted for the bus's trouble.
        try await ChaosCluster.run(agents: true) { cluster in
            await cluster.nats.stop()
            try await Task.sleep(for: .seconds(4))
            try await cluster.nats.start()
            await cluster.expectEveryCallSpeaking()
        }
    }

    @Test func everyCallGoesOnWhenNATSIsRestartedTwiceWithinTenSeconds() async throws {
        try await ChaosCluster.run { cluster in
            // Each time down for longer than a worker's detection time (1.5 s), the second while the routers may
            // still be doubting their view after the first.
            for _ in 0..<2 {
                await cluster.nats.stop()
                try await Task.sleep(for: .seconds(2))
                try await cluster.nats.start()
                try await Task.sleep(for: .seconds(2))
            }
            await cluster.expectEveryCallSpeaking()
        }
    }

    /// A call ended through the API the moment NATS is back: a router may be back on the bus before the worker's
    /// subscriptions are on the new server, and "no responders" then says nothing of the worker. The router
    /// answers `unavailable` and, asked again, has the worker end the call (reason `api`); it never closes the
    /// record under a live worker, which has the worker let go of the call (seen by hand on the dev cluster:
    /// three live calls closed `not_running`). The other calls go on.
    @Test func aCallEndedAsNATSComesBackIsEndedByItsWorkerNotClosedUnderIt() async throws {
        try await ChaosCluster.run { cluster in
            await cluster.nats.stop()
            try await Task.sleep(for: .seconds(2))
            try await cluster.nats.start()
            let target = cluster.calls[0]
            var statuses: [Int] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                // From the moment the router answers again until the call is ended.
                if let response = try? await PlainHTTP.request("DELETE", cluster.routerURLs[0] + "/v1/calls/\(target.id)",
                                                                headers: ["Authorization": "Bearer \(cluster.key)"]) {
                    statuses.append(response.status)
                    if response.status == 200 { break }
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(statuses.last == 200 && statuses.allSatisfy { [200, 503].contains($0) }, "\(statuses)")
            let record = try await cluster.record(target.id)
            #expect(record["state"] == "ended" && record["end_reason"] == "api", "\(record)")
            print("chaos result: a call ended as NATS came back: \(statuses.filter { $0 == 503 }.count) answers 503 before the end")
            for call in cluster.calls.dropFirst() {
                #expect(try await cluster.record(call.id)["state"] == "active", "call \(call.id) goes on")
            }
        }
    }

    /// A call asked for the moment NATS is back is placed: a router back on the bus before the workers'
    /// subscriptions are on the new server hears "no responders" from them, and once no worker is left to try,
    /// offers again a moment later rather than answer `no_capacity` (seen by hand on the dev cluster: two calls
    /// refused after a NATS restart).
    /// The workers are held frozen through the restart, so the router is surely back before them.
    @Test func aCallAskedForAsNATSComesBackIsPlaced() async throws {
        try await ChaosCluster.run { cluster in
            let workers = ["a", "b"].map { cluster.process($0).pid }
            await cluster.nats.stop()
            workers.forEach(cluster.freeze)
            try await Task.sleep(for: .seconds(2))
            try await cluster.nats.start()
            let ready = await cluster.poll(timeout: .seconds(10)) {
                (try? await PlainHTTP.request("GET", cluster.routerURLs[0] + "/readyz"))?.status == 200
            }
            try cluster.require(ready, "the router is back on the bus")
            // Offers the router made that nobody heard, by its own count (synchronous, unlike the timeline's notes).
            func unheardOffers() async -> Double {
                guard let response = try? await PlainHTTP.request("GET", cluster.routerURLs[0] + "/metrics") else { return -1 }
                return String(decoding: response.body, as: UTF8.self).split(separator: "\n")
                    .filter { $0.hasPrefix("switchboard_offers_total{") && $0.contains(#"result="no_responders""#) }
                    .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
            }
            let before = await unheardOffers()
            // The test's own connection may take a moment longer: its request is made again until it goes out.
            let asked = Task {
                for _ in 0..<100 {
                    if let reply = try? await cluster.route(key: cluster.key, metadata: ["tone_hz": "900"], timeout: .seconds(5)) { return reply }
                    try await Task.sleep(for: .milliseconds(20))
                }
                throw TestServerError("the route request never went out")
            }
            // Thawed once the router has offered the call to a worker nobody heard, however late this process's
            // own connection came back.
            let offered = await cluster.poll(timeout: .seconds(10)) { await unheardOffers() > before }
            workers.forEach(cluster.thaw)
            try cluster.require(offered, "the router offered the call to nobody listening while the workers were frozen")
            let answer = try await asked.value
            let placed = try #require(answer.call, "\(answer.error?.code ?? "") \(answer.error?.message ?? "")")
            print("chaos result: a call asked for as NATS came back: placed after \(Int(await unheardOffers() - before)) offers unheard")
            try await cluster.end(placed)
            await cluster.expectEveryCallSpeaking()
        }
    }

    // MARK: - Routers

    @Test func everyCallGoesOnWhenTheOnlyRouterIsFrozenForFiveSeconds() async throws {
        try await ChaosCluster.run { cluster in
            // Thawed, it has heard from nobody for 5 s: it must not take that as the fleet's death.
            let router = cluster.process("r1")
            cluster.freeze(router.pid)
            try await Task.sleep(for: .seconds(5))
            cluster.thaw(router.pid)
            await cluster.expectEveryCallSpeaking()
        }
    }

    @Test func everyCallGoesOnWhenOneOfTwoRoutersIsFrozenForFiveSeconds() async throws {
        try await ChaosCluster.run(routers: 2) { cluster in
            let router = cluster.process("r1")
            cluster.freeze(router.pid)
            try await Task.sleep(for: .seconds(5))
            cluster.thaw(router.pid)
            await cluster.expectEveryCallSpeaking()
        }
    }

    // MARK: - Workers

    @Test func aFrozenWorkersCallsResumeElsewhereAndItDoesNotSpeakOverThemWhenThawed() async throws {
        try await frozenWorker(agents: false)
    }

    /// The same with an agent process behind each call: the calls resume in fresh agent sessions on the other
    /// worker, and the thawed worker's agents say nothing the callers hear.
    @Test func aFrozenWorkersAgentCallsResumeElsewhereAndItDoesNotSpeakOverThemWhenThawed() async throws {
        try await frozenWorker(agents: true)
    }

    private func frozenWorker(agents: Bool) async throws {
        try await ChaosCluster.run(agents: agents) { cluster in
            let (frozen, itsCalls) = cluster.busiestWorker()
            let worker = cluster.process(frozen)
            let frozenFrom = cluster.calls.map(\.tap.count)
            cluster.freeze(worker.pid)
            // Frozen past detection (3 intervals, 1.5 s), and on until a router has moved its calls: the case is
            // a worker that wakes to find its calls elsewhere, however long a busy box takes to move them.
            try await Task.sleep(for: .seconds(3))
            let moved = await cluster.poll(timeout: .seconds(15)) {
                for call in itsCalls where try await cluster.record(call.id)["worker_id"] == frozen { return false }
                return true
            }
            let thawedFrom = cluster.calls.map(\.tap.count)
            cluster.thaw(worker.pid)
            cluster.check(moved, "\(frozen)'s calls not moved while it was frozen")
            // Half a second of the new speakers first, so that the frame left in the frozen worker's client (see
            // below) is heard before the pass mark starts listening.
            _ = await cluster.poll(timeout: .seconds(30)) { zip(cluster.calls, thawedFrom).allSatisfy { $0.tap.count >= $1 + 25 } }
            await cluster.expectEveryCallSpeaking(movedFrom: [frozen])
            for (i, call) in cluster.calls.enumerated() {
                // A number heard twice, from the first packet on, had two speakers.
                let sequences = call.tap.all.map(\.packet.sequence)
                let twice = Dictionary(grouping: sequences, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted()
                cluster.check(twice.isEmpty, "call \(call.id) (placed on \(call.placedOn)): \(twice.count) sequence numbers heard twice, from \(twice.first.map(String.init) ?? "")")
                // From the thaw on only the new worker may speak: a number below one already heard is the old
                // worker's. One is let by, numbered at most 2 past the last heard at the freeze: the frame the
                // worker had handed to its NATS client when it froze leaves the process once it runs again, and
                // nothing can call it back. Audio it made after waking would be more, or numbered further on.
                let lastAtFreeze = sequences.prefix(frozenFrom[i]).max() ?? 0
                var highest = sequences.prefix(thawedFrom[i]).max() ?? 0
                var late: [UInt32] = []
                for sequence in sequences.dropFirst(thawedFrom[i]) {
                    if sequence <= highest { late.append(sequence) } else { highest = sequence }
                }
                cluster.check(late.count <= 1 && late.allSatisfy { $0 <= lastAtFreeze + 2 },
                              "call \(call.id) (placed on \(call.placedOn)): the frozen worker spoke after the thaw: \(late.prefix(10)) "
                              + "(\(late.count) in all; last number heard at the freeze: \(lastAtFreeze))")
            }
        }
    }

    @Test func aKilledWorkersCallsWaitForANewWorkerWhenTheRestOfTheFleetIsFull() async throws {
        // Two slots each, four calls: no free slot anywhere once one worker is gone.
        try await ChaosCluster.run(workers: [("a", 2), ("b", 2)]) { cluster in
            let (killed, _) = cluster.busiestWorker()
            kill(cluster.process(killed).pid, SIGKILL)
            try await Task.sleep(for: .seconds(5))
            try cluster.spawnWorker("c", capacity: 4)
            await cluster.expectEveryCallSpeaking(movedFrom: [killed], to: ["c"])
        }
    }

    @Test func aKilledWorkersCallsTakeTheSlotsCallersFreeBeforeNewCallsDo() async throws {
        // The fleet full, a worker killed, and new calls asked for all the while, as callers who hang up and call
        // again at once would (found by hand: the dead worker's calls lost every freed slot to them, and stayed
        // silent until their callers gave up). Two routers: the one taking a call on holds slots on the other too.
        try await ChaosCluster.run(routers: 2, workers: [("a", 2), ("b", 2)]) { cluster in
            let (killed, lost) = cluster.busiestWorker()
            let survivor = killed == "a" ? "b" : "a"
            let waiting = try cluster.watchResumptions()
            let storm = cluster.callStorm()
            kill(cluster.process(killed).pid, SIGKILL)
            // Its calls wait for a slot (their router says so on the bus) before any caller hangs up.
            let lostIDs = Set(lost.map(\.id))
            let told = await cluster.poll(timeout: .seconds(20)) { waiting.ids.withLock { lostIDs.isSubset(of: $0) } }
            try cluster.require(told, "the dead worker's calls were not said to wait for a slot: \(waiting.ids.withLock { $0 })")
            for call in cluster.calls where call.placedOn == survivor { try await cluster.hangUp(call) }
            await cluster.expectEveryCallSpeaking(movedFrom: [killed], to: [survivor])
            storm.cancel()
            let (asked, placed) = await storm.value
            for call in placed { try? await cluster.end(call) }
            cluster.check(asked >= 20, "the new calls were asked for \(asked) times only: the race was not run")
            print("chaos result: new calls asked for during the failover: \(asked), placed: \(placed.count)")
        }
    }

    @Test func aThirdOfTheFleetKilledAtOnceHasItsCallsResumedOnTheRest() async throws {
        try await ChaosCluster.run(workers: [("a", 4), ("b", 4), ("c", 4)], calls: 6) { cluster in
            let (killed, _) = cluster.busiestWorker()
            kill(cluster.process(killed).pid, SIGKILL)
            await cluster.expectEveryCallSpeaking(movedFrom: [killed])
        }
    }

    // MARK: - Redis

    @Test func aFrozenRedisRefusesNewCallsInTimeAndLiveCallsTalkThroughIt() async throws {
        try await ChaosCluster.run { cluster in
            let redisPID = try cluster.require(cluster.redisServer.pid, "redis-server is not running")
            let from = cluster.calls.map(\.tap.count)
            let frozenAt = ContinuousClock.now
            cluster.freeze(redisPID)
            // A caller of a tenant whose limits fail closed hears `unavailable` within the route deadline.
            let reply = try await cluster.route(key: cluster.key, metadata: ["tone_hz": "2000"])
            let answered = ContinuousClock.now - frozenAt
            cluster.check(reply.error?.code == "unavailable" && answered <= ChaosCluster.routeDeadline + .milliseconds(1500),
                          "route during the freeze: \(reply.error?.code ?? "placed") after \(answered)")
            try await Task.sleep(until: frozenAt + .seconds(6), clock: .continuous)
            // The calls need no Redis to speak: of the 300 packets each sent meanwhile, 100 at least were heard.
            cluster.check(zip(cluster.calls, from).allSatisfy { $0.tap.count >= $1 + 100 },
                          "calls silent while Redis was frozen: heard \(zip(cluster.calls, from).map { $0.tap.count - $1 })")
            cluster.thaw(redisPID)
            if let placed = reply.call { try? await cluster.end(placed) }
            let thawed = ContinuousClock.now

            // A new caller (its key unknown to the routers until now) is placed again soon after.
            var probe: Placement?
            var last = "none yet"
            _ = await cluster.poll(timeout: .seconds(15)) {
                let reply = try await cluster.route(key: cluster.probeKey, timeout: .seconds(5))
                last = reply.error.map { "\($0.code): \($0.message)" } ?? "placed"
                probe = reply.call
                return probe != nil
            }
            let back = ContinuousClock.now - thawed
            cluster.check(probe != nil && back <= .seconds(4), "routing back \(back) after the thaw (last answer: \(last))")
            if let probe { try? await cluster.end(probe) }
            await cluster.expectEveryCallSpeaking()
        }
    }

    @Test func anEmptiedRedisHasEveryLiveCallsRecordBackWithinTenSeconds() async throws {
        try await ChaosCluster.run { cluster in
            // This Redis keeps nothing on disk (no save points, no AOF): a restart starts it empty.
            try await cluster.redisServer.restart()
            let restarted = ContinuousClock.now
            var tenants: Int64?
            _ = await cluster.poll(timeout: .seconds(5)) {
                tenants = try await cluster.redis.send(["EXISTS", cluster.keys.tenants]).int
                return tenants != nil
            }
            try cluster.require(tenants == 0, "Redis did not come back empty (tenants: \(String(describing: tenants)))")
            var missing: [String] = []
            let back = await cluster.poll(timeout: .seconds(10) - (ContinuousClock.now - restarted)) {
                missing = []
                for call in cluster.calls where try await cluster.record(call.id)["worker_id"] != call.placedOn {
                    missing.append(call.id)
                }
                return missing.isEmpty
            }
            cluster.check(back, "records not back 10 s after Redis came back empty: \(missing)")
            await cluster.expectEveryCallSpeaking()
        }
    }
}
