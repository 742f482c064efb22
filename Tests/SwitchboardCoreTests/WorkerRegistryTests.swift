import SwitchboardCore
import Testing

/// A heartbeat with sensible defaults; tests change what they look at.
func beat(_ id: String, version: String = "1", region: String = "eu", zone: String = "eu-a", state: WorkerState = .ready,
          capacity: Int = 10, calls: Int = 0, cpu: Double = 0.1, memory: Double = 0.2, seq: UInt64 = 1,
          incarnation: String = "i1", accepted: UInt64 = 0) -> Heartbeat {
    Heartbeat(workerID: id, version: version, region: region, zone: zone, state: state, capacity: capacity, activeCalls: calls,
              cpu: cpu, memoryUsedBytes: Int64(memory * 1000), memoryLimitBytes: 1000, seq: seq, incarnation: incarnation,
              accepted: accepted)
}

@Suite struct WorkerRegistryTests {
    let t0 = ContinuousClock.now

    @Test func aStaleHeartbeatIsIgnoredAndARestartIsNot() {
        var registry = WorkerRegistry()
        #expect(registry.ingest(beat("a", calls: 1, seq: 5), now: t0) == .joined)
        #expect(registry.ingest(beat("a", calls: 2, seq: 6), now: t0) == .updated)
        #expect(registry.ingest(beat("a", calls: 9, seq: 4), now: t0) == .stale)
        #expect(registry.ingest(beat("a", calls: 9, seq: 6), now: t0) == .stale)
        #expect(registry.entries["a"]?.heartbeat.activeCalls == 2)
        // A new process starts its seq over: not stale.
        #expect(registry.ingest(beat("a", calls: 0, seq: 1, incarnation: "i2"), now: t0) == .restarted)
        #expect(registry.entries["a"]?.heartbeat.activeCalls == 0)
    }

    @Test func silentWorkersTurnSuspectThenDead() {
        var registry = WorkerRegistry(configuration: .init(heartbeatInterval: .seconds(1)))
        registry.ingest(beat("a"), now: t0)
        registry.ingest(beat("b"), now: t0)
        #expect(registry.tick(now: t0 + .milliseconds(1900)).isEmpty)
        registry.ingest(beat("b", seq: 2), now: t0 + .milliseconds(1900))

        #expect(registry.tick(now: t0 + .seconds(2)) == [.suspect("a")])
        #expect(registry.entries["a"]?.liveness == .suspect)
        #expect(registry.entries["a"]?.isPlaceable == false)
        #expect(registry.tick(now: t0 + .milliseconds(2500)).isEmpty)  // suspect once, not on every tick

        // Heard from again (its ping's answer): alive.
        #expect(registry.ingest(beat("a", seq: 2), now: t0 + .milliseconds(2600)) == .recovered)
        #expect(registry.entries["a"]?.isPlaceable == true)

        // The next tick comes 2.4 s later: this router stalled, and the silence it saw was its own.
        #expect(registry.tick(now: t0 + .milliseconds(4900)) == [.selfSuspected(.milliseconds(2400))])
        #expect(registry.entries.values.allSatisfy { $0.liveness == .alive })
    }

    @Test func aReservationLastsUntilAHeartbeatCountsTheCall() {
        var registry = WorkerRegistry()
        registry.ingest(beat("a", capacity: 2, seq: 1, accepted: 10), now: t0)
        let first = registry.reserve("a", now: t0)!
        let second = registry.reserve("a", now: t0)!
        #expect(registry.entries["a"]?.freeSlots == 0)

        registry.release("a", token: second)  // refused
        #expect(registry.entries["a"]?.freeSlots == 1)
        registry.accepted("a", token: first, acceptSeq: 11)

        // A heartbeat sent before the worker accepted still shows 10: the reservation stays.
        registry.ingest(beat("a", capacity: 2, calls: 0, seq: 2, accepted: 10), now: t0)
        #expect(registry.entries["a"]?.reserved == 1)
        #expect(registry.entries["a"]?.freeSlots == 1)
        // The one that counts it clears it: the call is now in the worker's own report.
        registry.ingest(beat("a", capacity: 2, calls: 1, seq: 3, accepted: 11), now: t0)
        #expect(registry.entries["a"]?.reserved == 0)
        #expect(registry.entries["a"]?.freeSlots == 1)

        // Already counted when the accept arrives: dropped at once.
        let late = registry.reserve("a", now: t0)!
        registry.ingest(beat("a", capacity: 2, calls: 2, seq: 4, accepted: 12), now: t0)
        registry.accepted("a", token: late, acceptSeq: 12)
        #expect(registry.entries["a"]?.reserved == 0)
    }

    @Test func reservationsExpireAndARestartDropsThem() {
        var registry = WorkerRegistry(configuration: .init(heartbeatInterval: .seconds(1), reservationTimeout: .seconds(3)))
        registry.ingest(beat("a"), now: t0)
        _ = registry.reserve("a", now: t0)  // never answered
        registry.ingest(beat("a", seq: 2), now: t0 + .seconds(1))
        _ = registry.tick(now: t0 + .seconds(2))
        #expect(registry.entries["a"]?.reserved == 1)
        _ = registry.tick(now: t0 + .seconds(3))
        #expect(registry.entries["a"]?.reserved == 0)

        _ = registry.reserve("a", now: t0 + .seconds(3))
        registry.ingest(beat("a", seq: 1, incarnation: "i2"), now: t0 + .seconds(3))
        #expect(registry.entries["a"]?.reserved == 0)
        #expect(registry.reserve("nobody", now: t0) == nil)
    }
}
