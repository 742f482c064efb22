import SwitchboardCore
import Testing

@Suite struct WorkerTableTests {
    let t0 = ContinuousClock.now

    func hb(_ id: String, calls: Int = 0, capacity: Int = 10, state: WorkerState = .ready, region: String = "eu",
            cpu: Double = 0.1, seq: UInt64 = 1, incarnation: String = "i1") -> Heartbeat {
        Heartbeat(workerID: id, version: "1", region: region, zone: "\(region)-a", state: state, capacity: capacity,
                  activeCalls: calls, cpu: cpu, memoryUsedBytes: 0, memoryLimitBytes: 0, seq: seq, incarnation: incarnation)
    }

    @Test func joinsUpdatesAndIgnoresStaleHeartbeats() {
        var table = WorkerTable()
        #expect(table.ingest(hb("a", calls: 1, seq: 5), now: t0) == .joined)
        #expect(table.ingest(hb("a", calls: 2, seq: 6), now: t0 + .seconds(1)) == .updated)
        #expect(table.ingest(hb("a", calls: 9, seq: 4), now: t0 + .seconds(2)) == .stale)
        #expect(table.entries["a"]?.heartbeat.activeCalls == 2)
        #expect(table.entries["a"]?.lastSeen == t0 + .seconds(1))
        // A restarted worker (new incarnation) starts its sequence over and is not stale.
        #expect(table.ingest(hb("a", calls: 0, seq: 1, incarnation: "i2"), now: t0 + .seconds(3)) == .updated)
        #expect(table.entries["a"]?.heartbeat.activeCalls == 0)
    }

    @Test func workerNotHeardForThreeIntervalsIsGone() {
        var table = WorkerTable(heartbeatInterval: .seconds(1), goneAfter: 3)
        table.ingest(hb("a"), now: t0)
        table.ingest(hb("b"), now: t0 + .seconds(2))
        #expect(table.live(now: t0 + .milliseconds(2999)).map(\.id) == ["a", "b"])
        #expect(table.leastLoaded(region: nil, now: t0 + .milliseconds(3000))?.id == "b")
        #expect(table.expire(now: t0 + .seconds(3)) == ["a"])
        #expect(table.entries.keys.sorted() == ["b"])
        #expect(table.expire(now: t0 + .seconds(5)) == ["b"])
        #expect(table.entries.isEmpty)
    }

    @Test func choiceSkipsFullDrainingOtherRegionsAndTriedWorkers() {
        var table = WorkerTable()
        table.ingest(hb("full", calls: 10), now: t0)
        table.ingest(hb("draining", state: .draining), now: t0)
        table.ingest(hb("us", region: "us"), now: t0)
        table.ingest(hb("busy", calls: 6), now: t0)
        table.ingest(hb("idle", calls: 1), now: t0)
        #expect(table.leastLoaded(region: "eu", now: t0)?.id == "idle")
        #expect(table.leastLoaded(region: "eu", excluding: ["idle"], now: t0)?.id == "busy")
        #expect(table.leastLoaded(region: "eu", excluding: ["idle", "busy"], now: t0) == nil)
        #expect(table.leastLoaded(region: "us", now: t0)?.id == "us")
        #expect(table.leastLoaded(region: "ap", now: t0) == nil)
        #expect(table.leastLoaded(region: nil, excluding: ["idle", "busy"], now: t0)?.id == "us")
    }

    @Test func inFlightOffersCountUntilTheNextHeartbeat() {
        var table = WorkerTable()
        table.ingest(hb("a", calls: 0, capacity: 2), now: t0)
        table.ingest(hb("b", calls: 1, capacity: 4), now: t0)
        #expect(table.leastLoaded(region: nil, now: t0)?.id == "a")
        table.reserve("a")
        table.reserve("a")
        // "a" has no free slot left by this router's count: the next call goes to "b".
        #expect(table.entries["a"]?.freeSlots == 0)
        #expect(table.leastLoaded(region: nil, now: t0)?.id == "b")
        table.release("a")
        #expect(table.entries["a"]?.freeSlots == 1)
        table.ingest(hb("a", calls: 1, capacity: 2, seq: 2), now: t0 + .seconds(1))
        #expect(table.entries["a"]?.inFlight == 0)
        #expect(table.entries["a"]?.freeSlots == 1)
    }
}
