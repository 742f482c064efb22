import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardTestSupport
import Synchronization
import Testing

@Suite("NATS subscriptions")
struct NATSSubscriptionTests {
    @Test func queueGroupSpreadsMessagesAcrossTwoSubscribers() async throws {
        try await withNATS { nc, prefix in
            let subject = "\(prefix).route"
            let a = try nc.subscribe(to: subject, queue: "routers")
            let b = try nc.subscribe(to: subject, queue: "routers")
            try await nc.flush()
            let total = 400
            let counts = await withTaskGroup(of: Int.self) { group in
                for sub in [a, b] {
                    group.addTask {
                        var n = 0
                        for await _ in sub {
                            n += 1
                        }
                        return n
                    }
                }
                for i in 0..<total { try? nc.publish(subject, payload: bytes("\(i)")) }
                try? await nc.flush()
                try? await Task.sleep(for: .milliseconds(300))
                a.unsubscribe()
                b.unsubscribe()
                return await group.reduce(into: [Int]()) { $0.append($1) }
            }
            // Each message went to exactly one member, and both members got a fair share.
            #expect(counts.reduce(0, +) == total)
            #expect(counts.allSatisfy { $0 > total / 5 }, "counts \(counts)")
        }
    }

    @Test func unsubscribeStopsDelivery() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).u")
            let watcher = try nc.subscribe(to: "\(prefix).u")
            try nc.publish("\(prefix).u", payload: bytes("one"))
            #expect(await next(sub)?.text == "one")
            #expect(await next(watcher)?.text == "one")
            sub.unsubscribe()
            try await nc.flush()
            try nc.publish("\(prefix).u", payload: bytes("two"))
            // The other subscriber proves "two" was published and delivered...
            #expect(await next(watcher)?.text == "two")
            // ...but not to the unsubscribed one: its sequence has ended.
            var iterator = sub.makeAsyncIterator()
            #expect(await iterator.next() == nil)
        }
    }

    @Test func cancellingTheConsumingTaskUnsubscribes() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).c")
            let consumer = Task { for await _ in sub {} }
            try await Task.sleep(for: .milliseconds(50))
            consumer.cancel()
            _ = await consumer.value
            // The server no longer routes to it: a request on the subject finds no responder.
            try await nc.flush()
            let error = await caughtError { _ = try await nc.request("\(prefix).c", payload: [], timeout: .seconds(1)) }
            #expect(error?.code == .noResponders)
        }
    }

    @Test func drainDeliversWhatIsPending() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).d")
            let total = 500
            for i in 0..<total { try nc.publish("\(prefix).d", payload: bytes("\(i)")) }
            try await nc.flush()
            // Nothing has been consumed yet; drain, then read: every message still arrives, in order, and the
            // sequence ends.
            let drained = Task { try await sub.drain() }
            var seen: [Int] = []
            for await message in sub { seen.append(Int(message.text) ?? -1) }
            try await drained.value
            #expect(seen == Array(0..<total))
            // After the drain, new messages are not delivered to it.
            try nc.publish("\(prefix).d", payload: bytes("late"))
            var iterator = sub.makeAsyncIterator()
            #expect(await iterator.next() == nil)
        }
    }

    @Test func slowConsumerDropsBeyondThePendingLimitAndCounts() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).slow", pendingLimit: 10)
            for i in 0..<100 { try nc.publish("\(prefix).slow", payload: bytes("\(i)")) }
            try await nc.flush()
            try await Task.sleep(for: .milliseconds(200))
            #expect(sub.droppedCount == 90)
            // The oldest ten were kept.
            var got: [String] = []
            for _ in 0..<10 { if let m = await next(sub) { got.append(m.text) } }
            #expect(got == (0..<10).map(String.init))
        }
    }

    @Test func aFloodOfLargeMessagesIsBoundedInBytesAndRoomComesBackAsTheyAreTaken() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).big", pendingLimit: 1000, pendingBytes: 10_000)
            let payload = [UInt8](repeating: 7, count: 1000)
            for i in 0..<100 { try nc.publish("\(prefix).big", payload: [UInt8(i)] + payload.dropFirst()) }
            try await nc.flush()
            let deadline = ContinuousClock.now + .seconds(20)
            while sub.droppedCount < 90 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(sub.droppedCount == 90, "ten 1,000-byte messages fit in 10,000 bytes")
            var first: [UInt8] = []
            for _ in 0..<10 { if let m = await next(sub) { first.append(m.payload[0]) } }
            #expect(first == Array(0..<10))
            // Taken: there is room again.
            try nc.publish("\(prefix).big", payload: [200] + payload.dropFirst())
            #expect(await next(sub)?.payload.first == 200)
        }
    }

    @Test func manySubscriptionsShareABoundedNumberOfThreads() async throws {
        try await withNATS { nc, prefix in
            let before = threadCount()
            var subs: [NATSSubscription] = []
            for i in 0..<1000 { subs.append(try nc.subscribe(to: "\(prefix).media.\(i).in")) }
            // Counted at once: nats.c would start a delivery thread with each subscription (1,000); the shared pool
            // adds none. Other tests running at the same time start threads too, so the window is kept short (a
            // count taken after a round trip once saw 604) and the margin wide.
            let after = threadCount()
            #expect(after - before < 600, "threads before \(before), after \(after)")
            try nc.publish("\(prefix).media.999.in", payload: bytes("x"))
            #expect(await next(subs[999])?.text == "x")
            subs.forEach { $0.unsubscribe() }
        }
    }
}

/// Threads of this process, from /proc.
func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
}
