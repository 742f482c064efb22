import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Call records in Redis")
struct CallStoreTests {
    func record(_ id: String, worker: String) -> CallRecord {
        CallRecord(callID: id, tenant: "t", workerID: worker, version: "1.0.0", region: "local", state: .placed,
                   createdAt: unixMillisNow(), metadata: [:])
    }

    @Test func aCallStartsOnlyOnTheWorkerItsRecordNames() async throws {
        try await withRedis { redis, prefix in
            let store = CallStore(redis: redis, keys: try RedisKeys(prefix: prefix))
            // The worker marks the call started before the router's record is written: either order works.
            #expect(try await store.start("c-early", worker: "a", incarnation: "i1", startedAt: 1) == .owned)
            try await store.place(record("c-early", worker: "a"))
            #expect(try await store.fields("c-early")["state"] == "active")

            // The router waited in vain for a's accept and placed the call on b: a, answering late, does not
            // take it back, and b's start goes through.
            try await store.place(record("c-late", worker: "b"))
            #expect(try await store.start("c-late", worker: "a", incarnation: "i1", startedAt: 1) == .superseded)
            #expect(try await store.start("c-late", worker: "b", incarnation: "i2", startedAt: 1) == .owned)
            let fields = try await store.fields("c-late")
            #expect(fields["worker_id"] == "b" && fields["incarnation"] == "i2", "\(fields)")

            // Nor does a call that has ended start again.
            _ = try await store.end("c-late", tenant: "t", worker: "b", epoch: 1, reason: .caller, retention: .seconds(60))
            #expect(try await store.start("c-late", worker: "b", incarnation: "i2", startedAt: 1) == .superseded)
        }
    }
}
