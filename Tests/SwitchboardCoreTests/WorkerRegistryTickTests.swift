import Testing
@testable import SwitchboardCore

/// `WorkerRegistry.tick`: silent workers become suspect then dead, reservations expire, and entries that do
/// not change are left as they are.
@Suite struct WorkerRegistryTickTests {
    static func heartbeat(_ id: String, seq: UInt64, calls: Int = 0, accepted: UInt64 = 0) -> Heartbeat {
        Heartbeat(workerID: id, version: "1", region: "eu", zone: "eu-a", state: .ready, capacity: 10, activeCalls: calls,
                  cpu: 0.1, memoryUsedBytes: 0, memoryLimitBytes: 1 << 30, seq: seq, incarnation: "a", accepted: accepted)
    }

    @Test func silentWorkersBecomeSuspectAndDieOnlyByAFailedPing() {
        let t0 = ContinuousClock.now
        var registry = WorkerRegistry()
        for id in ["w1", "w2", "w3"] { registry.ingest(Self.heartbeat(id, seq: 1), now: t0) }
        #expect(registry.tick(now: t0 + .milliseconds(1500)).isEmpty)
        registry.ingest(Self.heartbeat("w2", seq: 2), now: t0 + .milliseconds(1500))
        registry.ingest(Self.heartbeat("w3", seq: 2), now: t0 + .milliseconds(1500))
        #expect(registry.tick(now: t0 + .seconds(2)) == [.suspect("w1")])
        #expect(registry.entries["w1"]?.liveness == .suspect)
        #expect(registry.pools(versions: nil, region: "eu").map { Set($0.ids) } == [["w2", "w3"]])
        // Silence alone never kills.
        #expect(registry.tick(now: t0 + .milliseconds(2500)).isEmpty)
        #expect(registry.tick(now: t0 + .seconds(3)).isEmpty)
        #expect(registry.entries["w1"] != nil)
        #expect(registry.pingFailed("w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), now: t0 + .milliseconds(3100))
                == .dead(incarnation: "a"))
        #expect(registry.entries["w1"] == nil)
        #expect(registry.entries["w2"]?.liveness == .alive)
    }

    @Test func reservationsExpireAndAcceptedOnesWaitForTheirHeartbeat() throws {
        let t0 = ContinuousClock.now
        var registry = WorkerRegistry()
        registry.ingest(Self.heartbeat("w1", seq: 1), now: t0)
        let never = registry.reserve("w1", now: t0)
        let accepted = try #require(registry.reserve("w1", now: t0 + .seconds(1)) as UInt64?)
        #expect(never != nil)
        registry.accepted("w1", token: accepted, acceptSeq: 1)
        #expect(registry.entries["w1"]?.reserved == 2)
        registry.ingest(Self.heartbeat("w1", seq: 2), now: t0 + .seconds(2))
        #expect(registry.tick(now: t0 + .seconds(3)).isEmpty)  // the unanswered offer expires (3 intervals)
        #expect(registry.entries["w1"]?.reservations.map(\.token) == [accepted])
        #expect(registry.entries["w1"]?.reservations.first?.token != never)
        registry.ingest(Self.heartbeat("w1", seq: 3, calls: 1, accepted: 1), now: t0 + .seconds(3))
        #expect(registry.entries["w1"]?.reserved == 0)
        #expect(registry.entries["w1"]?.freeSlots == 9)
    }
}
