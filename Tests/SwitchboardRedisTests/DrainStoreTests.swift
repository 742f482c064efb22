import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Drains in Redis")
struct DrainStoreTests {
    func request(_ worker: String, by actor: String, at millis: Int64) -> DrainRequest {
        DrainRequest(workerID: worker, deadlineMillis: millis + 60_000, atDeadline: .migrate, requestedBy: actor, requestedAtMillis: millis)
    }

    @Test func drainsAreSavedReadAndRemovedAndAStaleRemovalLeavesANewerDrain() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let store = DrainStore(redis: redis, keys: keys)
            #expect(try await store.load("w1") == nil)
            let first = request("w1", by: "alice", at: 1_000)
            try await store.save(first)
            try await store.save(request("w2", by: "bob", at: 2_000))
            #expect(try await store.load("w1") == first)
            #expect(try await store.loadAll().drains.keys.sorted() == ["w1", "w2"])

            // A router drained w1 again since: the worker's removal of the drain it applied leaves the newer one.
            let second = request("w1", by: "carol", at: 3_000)
            try await store.save(second)
            #expect(try await store.remove(ifStill: first) == false)
            #expect(try await store.load("w1") == second)
            #expect(try await store.remove(ifStill: second) == true)
            #expect(try await store.load("w1") == nil)

            try await store.remove("w2")
            #expect(try await store.loadAll().drains.isEmpty)
        }
    }

    @Test func anUnreadableDrainIsLeftOutAndNamedNotACrash() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let store = DrainStore(redis: redis, keys: keys)
            try await store.save(request("w1", by: "alice", at: 1_000))
            _ = try await redis.send(["HSET", keys.drains, "w2", "{not json"])
            _ = try await redis.send(["HSET", keys.drains, "w3", String(decoding: WireCodec.encode(request("w4", by: "bob", at: 1)), as: UTF8.self)])
            let all = try await store.loadAll()
            #expect(all.drains.keys.sorted() == ["w1"] && all.unreadable == ["w2", "w3"], "\(all)")
            let error = await caughtError { _ = try await store.load("w2") }
            #expect(error?.code == .badMessage, "\(String(describing: error))")
        }
    }
}
