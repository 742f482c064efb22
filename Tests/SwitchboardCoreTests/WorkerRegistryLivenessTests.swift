import Testing
@testable import SwitchboardCore

/// The failure detector doubts itself first: stalls and disconnections of the router forgive everyone's
/// silence; a mass silence makes workers unreachable instead of dead; a ping fails a worker only when the
/// router can judge.
@Suite struct WorkerRegistryLivenessTests {
    typealias Instant = ContinuousClock.Instant

    static func heartbeat(_ id: String, seq: UInt64, zone: String = "eu-a") -> Heartbeat {
        Heartbeat(workerID: id, version: "1", region: "eu", zone: zone, state: .ready, capacity: 10, activeCalls: 0,
                  cpu: 0.1, memoryUsedBytes: 0, memoryLimitBytes: 1 << 30, seq: seq, incarnation: "i-\(id)", accepted: 0)
    }

    /// A fleet heard at t0, ticked every 250 ms up to `until` with `heard` speaking every second.
    static func fleet(_ ids: [String], zones: [String: String] = [:], heard: Set<String>, until seconds: Int,
                      t0: Instant) -> (WorkerRegistry, [WorkerRegistry.LivenessEvent]) {
        var registry = WorkerRegistry()
        for id in ids { registry.ingest(heartbeat(id, seq: 1, zone: zones[id] ?? "eu-a"), now: t0) }
        var events: [WorkerRegistry.LivenessEvent] = []
        for step in 1...(seconds * 4) {
            let now = t0 + .milliseconds(250 * step)
            if step % 4 == 0 {
                for id in heard { registry.ingest(heartbeat(id, seq: UInt64(step), zone: zones[id] ?? "eu-a"), now: now) }
            }
            events += registry.tick(now: now)
        }
        return (registry, events)
    }

    @Test func aRouterThatStalledForgivesEveryoneAndJudgesNobodyForADetectionTime() {
        let t0 = ContinuousClock.now
        var registry = WorkerRegistry()
        for id in ["w1", "w2", "w3"] { registry.ingest(Self.heartbeat(id, seq: 1), now: t0) }
        #expect(registry.tick(now: t0 + .milliseconds(250)).isEmpty)
        // The next tick comes 5 s late (SIGSTOP): nobody becomes suspect, the router suspects itself.
        let woke = t0 + .milliseconds(5250)
        #expect(registry.tick(now: woke) == [.selfSuspected(.seconds(5))])
        #expect(registry.entries.values.allSatisfy { $0.liveness == .alive && $0.lastHeard == woke })
        #expect(registry.judgeAfter == woke + .seconds(3))
        // w1 stays silent, the others speak: w1 is suspect again 2 s later, but a ping that fails within the
        // detection time of the stall is no evidence; after it, it is.
        var now = woke
        func advance(to end: Instant) {
            while now < end {
                now += .milliseconds(250)
                for id in ["w2", "w3"] { registry.ingest(Self.heartbeat(id, seq: UInt64((now - t0).milliseconds)), now: now) }
                _ = registry.tick(now: now)
            }
        }
        advance(to: woke + .milliseconds(2250))
        #expect(registry.entries["w1"]?.liveness == .suspect)
        #expect(registry.pingFailed("w1", sentAt: now, timeout: .milliseconds(500), now: now + .milliseconds(250))
                == .notJudged("this router was stalled or cut off a moment ago"))
        advance(to: woke + .seconds(6))
        #expect(registry.entries["w1"]?.pingSentAt != nil, "pinged again")
        #expect(registry.pingFailed("w1", sentAt: now, timeout: .milliseconds(500), now: now + .milliseconds(100))
                == .dead(incarnation: "i-w1"))
    }

    @Test func aPingThatSpannedAStallOfTheRouterIsNoEvidence() {
        let t0 = ContinuousClock.now
        var (registry, _) = Self.fleet(["w1", "w2", "w3"], heard: ["w2", "w3"], until: 3, t0: t0)
        #expect(registry.entries["w1"]?.liveness == .suspect)
        let verdict = registry.pingFailed("w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), now: t0 + .milliseconds(3100))
        #expect(verdict == .dead(incarnation: "i-w1"))
        var (again, _) = Self.fleet(["w1", "w2", "w3"], heard: ["w2", "w3"], until: 3, t0: t0)
        // Sent at 2 s, failed at 4.9 s: the router was frozen in between (its last tick was at 3 s).
        #expect(again.pingFailed("w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), now: t0 + .milliseconds(4900))
                == .notJudged("the ping took far longer than its timeout: this router stalled"))
        #expect(again.entries["w1"]?.liveness == .suspect)
        #expect(again.entries["w1"]?.pingSentAt == nil, "pinged again at the next tick")
    }

    @Test func whileDisconnectedNobodyIsJudgedAndOnReconnectEveryoneCountsAsJustHeard() {
        let t0 = ContinuousClock.now
        var registry = WorkerRegistry()
        for id in ["w1", "w2"] { registry.ingest(Self.heartbeat(id, seq: 1), now: t0) }
        _ = registry.tick(now: t0 + .milliseconds(250))
        #expect(registry.setConnected(false, now: t0 + .milliseconds(300)) == nil)
        var events: [WorkerRegistry.LivenessEvent] = []
        for step in 2...16 { events += registry.tick(now: t0 + .milliseconds(250 * step)) }
        #expect(events.isEmpty, "\(events)")
        #expect(registry.entries.values.allSatisfy { $0.liveness == .alive })
        let back = t0 + .milliseconds(4100)
        #expect(!registry.mayJudge(now: back - .milliseconds(1)), "not connected")
        #expect(registry.setConnected(true, now: back) == .selfSuspected(.milliseconds(100)))
        #expect(!registry.mayJudge(now: back + .milliseconds(2999)), "within a detection time of the reconnection")
        #expect(registry.mayJudge(now: back + .seconds(3)))
        #expect(registry.entries.values.allSatisfy { $0.lastHeard == back })
        #expect(registry.tick(now: back + .seconds(1)).isEmpty)
    }

    @Test func moreThanHalfTheFleetSilentAtOnceIsUnreachableNotDead() {
        let t0 = ContinuousClock.now
        var (registry, events) = Self.fleet(["w1", "w2", "w3", "w4"], heard: ["w4"], until: 3, t0: t0)
        let disruption = WorkerRegistry.Disruption(silent: 3, total: 4, zones: [], coversAll: true)
        #expect(events == [.unreachable(["w1", "w2", "w3"], disruption)])
        #expect(registry.entries["w1"]?.liveness == .unreachable)
        #expect(registry.entries["w1"]?.isPlaceable == false)
        #expect(registry.pingFailed("w1", sentAt: t0 + .seconds(3), timeout: .milliseconds(500), now: t0 + .milliseconds(3100)) == .moot)
        #expect(registry.entries.count == 4)
        // Heard again: alive, and placeable.
        #expect(registry.ingest(Self.heartbeat("w1", seq: 9), now: t0 + .seconds(4)) == .recovered)
        #expect(registry.entries["w1"]?.isPlaceable == true)
    }

    @Test func aPartialSilenceIsJudgedByPings() {
        let t0 = ContinuousClock.now
        // A third of the fleet: not a mass silence.
        let (registry, events) = Self.fleet(["w1", "w2", "w3"], heard: ["w2", "w3"], until: 3, t0: t0)
        #expect(events == [.probe("w1"), .suspect("w1")])  // probed at 1.25 intervals, suspect at 2
        #expect(registry.disruption == nil)
        // Half exactly is not more than half.
        let (half, halfEvents) = Self.fleet(["w1", "w2", "w3", "w4"], heard: ["w3", "w4"], until: 3, t0: t0)
        #expect(halfEvents == [.probe("w1"), .probe("w2"), .suspect("w1"), .suspect("w2")])
        #expect(half.disruption == nil)
    }

    @Test func aWholeZoneSilentIsUnreachableWhileTheOtherZonesAreJudged() {
        let t0 = ContinuousClock.now
        let zones = ["a1": "eu-a", "a2": "eu-a", "b1": "eu-b", "b2": "eu-b", "b3": "eu-b", "c1": "eu-c"]
        let (registry, events) = Self.fleet(Array(zones.keys), zones: zones, heard: ["b1", "b2", "b3"], until: 3, t0: t0)
        #expect(events.contains(.suspect("c1")))  // one worker alone is no zone-wide silence
        #expect(events.contains(.unreachable(["a1", "a2"], WorkerRegistry.Disruption(silent: 3, total: 6, zones: ["eu-a"], coversAll: false))))
        #expect(registry.entries["a1"]?.liveness == .unreachable)
        #expect(registry.entries["c1"]?.liveness == .suspect)
    }

    @Test func aSuspectNobodyCouldJudgeIsPingedAgain() {
        let t0 = ContinuousClock.now
        var (registry, _) = Self.fleet(["w1", "w2", "w3"], heard: ["w2", "w3"], until: 2, t0: t0)
        #expect(registry.entries["w1"]?.liveness == .suspect)
        _ = registry.setConnected(false, now: t0 + .milliseconds(2100))
        #expect(registry.pingFailed("w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), now: t0 + .milliseconds(2200))
                == .notJudged("this router is not connected to NATS"))
        _ = registry.setConnected(true, now: t0 + .milliseconds(2300))
        var events: [WorkerRegistry.LivenessEvent] = []
        for step in 10...24 {
            let now = t0 + .milliseconds(250 * step)
            if step % 4 == 0 { for id in ["w2", "w3"] { registry.ingest(Self.heartbeat(id, seq: UInt64(step)), now: now) } }
            events += registry.tick(now: now)
        }
        // Forgiven at the reconnect: probed again 1.25 intervals after it, suspect after 2.
        #expect(Array(events.prefix(2)) == [.probe("w1"), .suspect("w1")], "\(events)")
    }

    /// A late worker's probe that the server answers "no responders" (its connection is gone: a killed process)
    /// is dead at once, before the suspect time; the same answer is no verdict when this router cannot judge,
    /// when the worker spoke since, or when many are late at once.
    @Test func aLateWorkerNobodyListensForIsDeadAtOnceWhenTheRouterCanJudge() {
        let t0 = ContinuousClock.now
        let timeout = Duration.milliseconds(500)
        var (registry, events) = Self.fleet(["w1", "w2", "w3"], heard: ["w2", "w3"], until: 1, t0: t0)
        #expect(events.isEmpty, "not late yet at one interval")
        let probed = t0 + .milliseconds(1250)
        #expect(registry.tick(now: probed) == [.probe("w1")])
        #expect(registry.tick(now: probed + .milliseconds(100)).isEmpty, "one probe per silence")
        #expect(registry.entries["w1"]?.liveness == .alive, "a late worker still takes calls until a verdict")

        // This router reconnected a moment ago: no verdict, whatever the server says.
        var reconnected = registry
        _ = reconnected.setConnected(false, now: probed)
        _ = reconnected.setConnected(true, now: probed + .milliseconds(10))
        #expect(reconnected.probeFoundGone("w1", sentAt: probed, timeout: timeout, now: probed + .milliseconds(20))
                == .moot, "forgiven: heard at the reconnect, after the probe went out")
        // Spoke since the probe went out: moot.
        var spoke = registry
        spoke.ingest(Self.heartbeat("w1", seq: 9), now: probed + .milliseconds(5))
        #expect(spoke.probeFoundGone("w1", sentAt: probed, timeout: timeout, now: probed + .milliseconds(10)) == .moot)
        // Gone: dead, and out of the view.
        #expect(registry.probeFoundGone("w1", sentAt: probed, timeout: timeout, now: probed + .milliseconds(2)) == .dead(incarnation: "i-w1"))
        #expect(registry.entries["w1"] == nil)

        // Two of three late at once is a mass silence: no probes at all, and no verdict from one.
        var (crowd, crowdEvents) = Self.fleet(["w1", "w2", "w3"], heard: ["w3"], until: 1, t0: t0)
        crowdEvents += crowd.tick(now: probed)
        #expect(crowdEvents.isEmpty, "\(crowdEvents)")
        if case .notJudged = crowd.probeFoundGone("w1", sentAt: probed, timeout: timeout, now: probed + .milliseconds(2)) {} else {
            Issue.record("a mass silence is no verdict")
        }
        #expect(crowd.entries["w1"] != nil)
    }

    @Test func unknownWorkersAreTakenForGoneOnlyByARouterThatHasWatchedLongEnoughAndTrustsItsView() {
        let t0 = ContinuousClock.now
        var registry = WorkerRegistry()
        registry.ingest(Self.heartbeat("w1", seq: 1), now: t0)
        _ = registry.tick(now: t0)
        #expect(!registry.mayTakeUnknownWorkersForGone(now: t0 + .seconds(2)), "watched for less than a detection time")
        #expect(registry.mayTakeUnknownWorkersForGone(now: t0 + .seconds(3)))
        _ = registry.setConnected(false, now: t0 + .seconds(3))
        #expect(!registry.mayTakeUnknownWorkersForGone(now: t0 + .seconds(4)), "cut off")
        _ = registry.setConnected(true, now: t0 + .seconds(4))
        #expect(!registry.mayTakeUnknownWorkersForGone(now: t0 + .seconds(5)), "just reconnected")
        #expect(registry.mayTakeUnknownWorkersForGone(now: t0 + .seconds(7)))
    }
}
