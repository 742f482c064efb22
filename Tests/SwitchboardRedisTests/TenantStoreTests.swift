import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Tenants and API keys in Redis")
struct TenantStoreTests {
    let acme = TenantPolicy(id: "acme", callsPerSecond: 50, burst: 10, maxLiveCalls: 100, regions: ["eu"],
                            whenRedisDown: .open(localCap: 20))

    @Test func keysAreRandomAndOnlyTheirHashIsKept() {
        #expect(APIKey.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let a = APIKey.generate(), b = APIKey.generate()
        #expect(a != b && a.hasPrefix("sbk_") && a.count == 52)
    }

    @Test func createShowListUpdateDelete() async throws {
        try await withRedis { redis, prefix in
            let store = TenantStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            let key = try await store.create(acme)
            let record = try await store.get("acme")
            #expect(record.policy == acme)
            #expect(record.keyHashes == [APIKey.hash(key)])
            #expect(!(try await redis.hashGetAll(prefix + ":tenants")).values.contains { $0.contains(key) }, "the key itself is not stored")
            let conflict = await caughtError { _ = try await store.create(acme) }
            #expect(conflict?.code == .conflict)

            _ = try await store.create(TenantPolicy(id: "zeta", callsPerSecond: 1, burst: 1, maxLiveCalls: 1))
            #expect(try await store.list().map(\.policy.id) == ["acme", "zeta"])

            var faster = acme
            faster.callsPerSecond = 500
            try await store.update(faster)
            #expect(try await store.get("acme").policy.callsPerSecond == 500)
            #expect(try await store.authenticate(key).callsPerSecond == 500, "keys survive an update")

            try await store.delete("acme")
            #expect(await caughtError { _ = try await store.get("acme") }?.code == .notFound)
            #expect(await caughtError { _ = try await store.authenticate(key) }?.code == .authenticationFailed)
            #expect(await caughtError { try await store.delete("acme") }?.code == .notFound)
        }
    }

    @Test func authenticationWithWrongRotatedAndHandedOverKeys() async throws {
        try await withRedis { redis, prefix in
            let store = TenantStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            let first = try await store.create(acme)
            #expect(try await store.authenticate(first).id == "acme")
            for wrong in ["", "sbk_", "sbk_" + String(repeating: "0", count: 48), "Bearer " + first, String(repeating: "x", count: 10_000)] {
                #expect(await caughtError { _ = try await store.authenticate(wrong) }?.code == .authenticationFailed)
            }
            // A handover: the new key works and so does the old, until the next rotation.
            let second = try await store.rotateKey("acme", keepOld: true)
            #expect(try await store.authenticate(first).id == "acme")
            #expect(try await store.authenticate(second).id == "acme")
            let third = try await store.rotateKey("acme")
            #expect(await caughtError { _ = try await store.authenticate(first) }?.code == .authenticationFailed)
            #expect(await caughtError { _ = try await store.authenticate(second) }?.code == .authenticationFailed)
            #expect(try await store.authenticate(third).id == "acme")
            #expect(try await store.get("acme").keyHashes == [APIKey.hash(third)])
        }
    }

    @Test func malformedTenantsAreRefusedBeforeTheyAreStored() async throws {
        try await withRedis { redis, prefix in
            let store = TenantStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            for bad in [TenantPolicy(id: "acme", callsPerSecond: -5, burst: 10, maxLiveCalls: 10),
                        TenantPolicy(id: "acme", callsPerSecond: 5, burst: 10, maxLiveCalls: 0),
                        TenantPolicy(id: "a:b", callsPerSecond: 5, burst: 10, maxLiveCalls: 10)] {
                #expect(await caughtError { _ = try await store.create(bad) }?.code == .invalidArgument)
            }
            #expect(try await store.list().isEmpty)
        }
    }
}
