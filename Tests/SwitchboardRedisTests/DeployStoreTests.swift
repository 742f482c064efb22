import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("The deploy policy in Redis")
struct DeployStoreTests {
    @Test func aChangeIsWrittenOnlyFromTheRevisionItWasMadeFromAndKeptInTheHistory() async throws {
        try await withRedis { redis, prefix in
            let store = DeployStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            let (none, now) = try await store.read()
            #expect(none == .none)
            let local = WallClock.system.unixMillis
            #expect(abs(now - local) < 60_000, "Redis's clock, in ms")
            let first = try DeployPolicy.none.applying(.deploy(version: "1"), liveVersions: ["1"], nowMillis: now, actor: "alice")
            try await store.write(first)
            #expect(try await store.read().policy == first)

            // Two operators both made a change from revision 1: the first write wins, the second is a conflict.
            let a = try first.applying(.deploy(version: "2"), liveVersions: ["1", "2"], nowMillis: now + 1, actor: "alice")
            let b = try first.applying(.deploy(version: "3"), liveVersions: ["1", "3"], nowMillis: now + 2, actor: "bob")
            try await store.write(a)
            let conflict = await caughtError { try await store.write(b) }
            #expect(conflict?.code == .conflict && conflict?.context["revision"] == "2", "\(String(describing: conflict))")
            #expect(try await store.read().policy == a)

            let history = try await store.history(limit: 10)
            #expect(history.map(\.revision) == [2, 1])
            #expect(history.first?.active == "2" && history.first?.actor == "alice" && history.first?.action == "deploy")
            let canary = try a.applying(.deploy(version: "3", canaryPercent: 12.5), liveVersions: ["2", "3"], nowMillis: now + 3, actor: "bob")
            try await store.write(canary)
            let latest = try #require(try await store.history(limit: 1).first)
            #expect(latest.canary == "3" && latest.canaryPercent == 12.5)
        }
    }

    @Test func anUnreadablePolicyInRedisIsACodedErrorNotACrash() async throws {
        try await withRedis { redis, prefix in
            let keys = try RedisKeys(prefix: prefix)
            let store = DeployStore(redis: redis, keys: keys)
            for bad in ["not json", #"{"v":1,"revision":-4}"#,
                        #"{"v":1,"revision":3,"active":"1","previous":[],"retired":{"0":9223372036854775807},"rollback_window_ms":0,"drain_deadline_ms":0,"at_deadline":"migrate","changed_at_ms":0,"changed_by":""}"#] {
                _ = try await redis.send(["HSET", keys.deploy, "policy", bad, "revision", "3"])
                #expect(await caughtError { _ = try await store.read() }?.code == .badMessage, "\(bad)")
            }
        }
    }

    @Test func placementCountsAddUpOverTheLastMinute() async throws {
        try await withRedis { redis, prefix in
            let store = DeployStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            try await store.count(["1|placed": 3, "2|fallback": 1])
            try await store.count(["1|placed": 2])
            let (_, now) = try await store.read()
            let counts = try await store.lastMinute(nowMillis: now)
            #expect(counts == ["1|placed": 5, "2|fallback": 1])
        }
    }
}
