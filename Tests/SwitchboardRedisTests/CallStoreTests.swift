import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Call records in Redis")
struct CallStoreTests {
    func record(_ id: String, worker: String) -> CallRecord {
        CallRecord(callID: id, tenant: "t", workerID: worker, version: "1.0.0", region: "local", state: .placed,
                   createdAt: WallClock.system.unixMillis, metadata: [:])
    }

    @Test func aCallStartsOnlyOnTheWorkerItsRecordNames() async throws {
        try await withRedis { redis, prefix in
            let store = CallStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            // The worker marks the call started before the router's record is written: either order works.
            #expect(try await store.start("c-early", tenant: "t", worker: "a", incarnation: "i1", startedAt: 1) == .owned)
            try await store.place(record("c-early", worker: "a"))
            #expect(try await store.fields("c-early")["state"] == "active")

            // The router waited in vain for a's accept and placed the call on b: a, answering late, does not
            // take it back, and b's start goes through.
            try await store.place(record("c-late", worker: "b"))
            #expect(try await store.start("c-late", tenant: "t", worker: "a", incarnation: "i1", startedAt: 1) == .superseded)
            #expect(try await store.start("c-late", tenant: "t", worker: "b", incarnation: "i2", startedAt: 1) == .owned)
            let fields = try await store.fields("c-late")
            #expect(fields["worker_id"] == "b" && fields["incarnation"] == "i2", "\(fields)")

            // Nor does a call that has ended start again.
            _ = try await store.end("c-late", tenant: "t", worker: "b", epoch: 1, reason: .caller, retention: .seconds(60))
            #expect(try await store.start("c-late", tenant: "t", worker: "b", incarnation: "i2", startedAt: 1) == .superseded)
        }
    }

    /// What has no time of its own is stamped with the store's wall clock, not the machine's: a placement
    /// without `created_at` goes in that day's index, and a call's end is written at that time, its last
    /// stretch metered into that month.
    @Test func timesComeFromTheStoresWallClock() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let placedAt: Int64 = 1_767_225_599_000  // 2025-12-31T23:59:59Z
            let placing = CallStore(redis: redis, keys: keys, wallClock: .fixed(placedAt))
            var placed = record("c1", worker: "a")
            placed.createdAt = nil
            try await placing.place(placed)
            let listed = try await placing.list(CallQuery(sinceMillis: placedAt - 1_000, untilMillis: placedAt + 1_000))
            #expect(listed.calls.map(\.callID) == ["c1"] && listed.calls.first?.placedAtMillis == placedAt, "\(listed)")

            // The worker's store, its clock a minute on: in the next day, month and year.
            let ending = CallStore(redis: redis, keys: keys, wallClock: .fixed(placedAt).advanced(by: .seconds(60)))
            #expect(try await ending.start("c1", tenant: "t", worker: "a", incarnation: "i1", startedAt: placedAt) == .owned)
            try await Task.sleep(for: .milliseconds(20))
            let end = try await ending.end("c1", tenant: "t", worker: "a", epoch: 1, reason: .caller, retention: .seconds(60))
            #expect(end.ownership == .owned && end.meteredMillis >= 20)
            #expect(try await ending.fields("c1")["ended_at"] == String(placedAt + 60_000))
            // The call counts in the month it started (the start says when), its last stretch in the clock's.
            let limits = TenantLimits(redis: redis, keys: keys)
            #expect(try await limits.usage("t", month: "2025-12").calls == 1)
            let january = try await limits.usage("t", month: "2026-01")
            #expect(january.callMillis == end.meteredMillis && january.days == [1: end.meteredMillis], "\(january)")
        }
    }

    /// A call is metered once, whoever holds it: from its start to its end on Redis's clock, in its tenant's
    /// month and day, across a move to another worker, with nothing from a worker that no longer holds it.
    @Test func aCallIsMeteredOnceFromStartToEndAcrossAMove() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let store = CallStore(redis: redis, keys: keys)
            let limits = TenantLimits(redis: redis, keys: keys)
            let month = UsagePeriod.month(WallClock.system.unixMillis)
            func held(_ epoch: Int64) -> CallStore.Held { .init(callID: "c1", epoch: epoch, tenant: "t", startedAt: WallClock.system.unixMillis, metadata: [:]) }
            func meteredAt() async throws -> Int64 { Int64(try await store.fields("c1")["metered_at"] ?? "") ?? -1 }

            try await store.place(record("c1", worker: "a"))
            #expect(try await store.start("c1", tenant: "t", worker: "a", incarnation: "i1", startedAt: WallClock.system.unixMillis) == .owned)
            let began = try await meteredAt()
            #expect(began > 0)
            // A start written twice counts one call, and restarts nothing.
            #expect(try await store.start("c1", tenant: "t", worker: "a", incarnation: "i1", startedAt: WallClock.system.unixMillis) == .owned)
            #expect(try await meteredAt() == began)
            try await Task.sleep(for: .milliseconds(50))
            let first = try await store.refresh([held(1)], worker: "a", incarnation: "i1", version: "1", region: "local", leaseTime: .seconds(30))
            #expect(first.map(\.ownership) == [.owned] && first[0].meteredMillis >= 50)

            // Worker b takes the call on (epoch 2): a's refresh and end meter nothing more.
            _ = try #require(try await store.claim("c1", worker: "b", from: Resume(reason: .migrate, fromWorker: "a", checkpoint: Checkpoint(seq: 0, state: nil, mediaSequence: 0, mediaTimestamp: 0, takenAtMillis: 0), epoch: 1),
                                                   incarnation: "i2", version: "1", region: "local"))
            try await Task.sleep(for: .milliseconds(30))
            let stale = try await store.refresh([held(1)], worker: "a", incarnation: "i1", version: "1", region: "local", leaseTime: .seconds(30))
            #expect(stale == [.init(ownership: .superseded, meteredMillis: 0)])
            #expect(try await store.end("c1", tenant: "t", worker: "a", epoch: 1, reason: .caller, retention: .seconds(60))
                    == .init(ownership: .superseded, meteredMillis: 0))
            // b meters from where a left off, and its end meters the rest.
            let second = try await store.refresh([held(2)], worker: "b", incarnation: "i2", version: "1", region: "local", leaseTime: .seconds(30))
            #expect(second.map(\.ownership) == [.owned] && second[0].meteredMillis >= 30)
            try await Task.sleep(for: .milliseconds(20))
            let end = try await store.end("c1", tenant: "t", worker: "b", epoch: 2, reason: .caller, retention: .seconds(60))
            #expect(end.ownership == .owned && end.meteredMillis >= 20)
            let ended = try await meteredAt()
            // Nothing lost, nothing twice: the month holds exactly the call's time on Redis's clock.
            let usage = try await limits.usage("t", month: month)
            #expect(usage.callMillis == ended - began, "\(usage)")
            #expect(usage.callMillis == first[0].meteredMillis + second[0].meteredMillis + end.meteredMillis)
            #expect(usage.calls == 1)
            #expect(usage.days.values.reduce(0, +) == usage.callMillis)
            #expect(try await store.fields("c1")["metered_ms"] == String(usage.callMillis))
            // An ended call meters nothing more.
            #expect(try await store.end("c1", tenant: "t", worker: "b", epoch: 2, reason: .caller, retention: .seconds(60)).meteredMillis == 0)
            #expect(try await limits.usage("t", month: month) == usage)
        }
    }

    /// Once a tenant's month is used up, new calls are refused with the usage and the limit; a call admitted
    /// already (a retry of its route) still is, and other tenants are not touched.
    @Test func aUsedUpMonthRefusesNewCallsOnly() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let now = WallClock.system.unixMillis
            let limits = TenantLimits(redis: redis, keys: keys, wallClock: .fixed(now))
            var policy = TenantPolicy(id: "t", callsPerSecond: 100, burst: 100, maxLiveCalls: 100)
            policy.monthlyMinutes = 1
            #expect(try await limits.admit(policy, callID: "before") == .admitted(live: 1))
            _ = try await redis.send(["HSET", keys.usage("t", month: UsagePeriod.month(now)), "call_ms", "60000"])
            #expect(try await limits.admit(policy, callID: "after") == .usageLimit(used: 60_000, limit: 60_000))
            #expect(try await limits.admit(policy, callID: "before") == .admitted(live: 1))
            policy.monthlyMinutes = 2
            #expect(try await limits.admit(policy, callID: "after") == .admitted(live: 2))
            var other = policy
            other.id = "u"
            other.monthlyMinutes = 1
            #expect(try await limits.admit(other, callID: "elsewhere") == .admitted(live: 1))
            // Next month (on the store's wall clock) starts from nothing.
            let nextMonth = TenantLimits(redis: redis, keys: keys, wallClock: .fixed(now).advanced(by: .seconds(40 * 86_400)))
            #expect(try await nextMonth.admit(policy, callID: "later") == .admitted(live: 3))
        }
    }

    /// A call's timeline holds its first `cap` events and counts the rest, but its end always gets in; it
    /// expires `retention` after its last event; the writer batches per call and keeps what Redis refused.
    @Test func aTimelineIsCappedCountedAndExpires() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let store = TimelineStore(redis: redis, keys: keys, cap: 20, retention: .seconds(60))
            func event(_ i: Int, _ type: String = "tick") -> TimelineEvent {
                TimelineEvent(atMillis: 1_765_000_000_000 + Int64(i), source: .gateway, member: "gw-1", type: type, attributes: ["i": "\(i)"])
            }
            let first = try await store.append("c1", (0..<15).map { event($0) })
            #expect(first.added == 15 && first.dropped == 0)
            let second = try await store.append("c1", (15..<30).map { event($0) } + [event(30, "ended")])
            #expect(second.added == 6 && second.dropped == 10, "\(second)")
            let timeline = try await store.timeline("c1")
            #expect(timeline.events.count == 21 && timeline.dropped == 10)
            #expect(timeline.events.prefix(20).map { $0.attributes["i"] } == (0..<20).map { "\($0)" })
            #expect(timeline.events.last?.type == "ended")
            let ttl = try await redis.send(["PTTL", keys.timeline("c1")]).int ?? 0
            #expect(ttl > 50_000 && ttl <= 60_000)
            #expect(try await store.timeline("c-none") == Timeline(callID: "c-none", events: [], dropped: 0))

            let writer = TimelineWriter(store: store, interval: .milliseconds(10), metrics: MetricsRegistry(), logger: testLogger)
            writer.record("c2", event(1, "placed"))
            writer.record("c3", event(2, "placed"))
            writer.record("c2", event(3, "started"))
            writer.record("c2", TimelineEvent(atMillis: 1, source: .router, member: "bad member", type: "x"))  // refused, counted
            #expect(writer.pending == 3)
            await writer.flush()
            #expect(writer.pending == 0)
            #expect(try await store.timeline("c2").events.map(\.type) == ["placed", "started"])
            #expect(try await store.timeline("c3").events.count == 1)
        }
    }
}
