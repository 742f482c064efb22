import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardTestSupport
import Testing

@Suite("NATS request/reply")
struct NATSRequestTests {
    /// Answers every request on `subject` with "re:" + its payload, until cancelled.
    static func echoResponder(_ nc: NATSConnection, _ subject: String, queue: String? = nil) throws -> Task<Void, Never> {
        let sub = try nc.subscribe(to: subject, queue: queue)
        return Task {
            for await message in sub {
                var headers = NATSHeaders()
                headers["Echo-Of"] = message.headers["Call-Id"]
                try? nc.reply(to: message, payload: bytes("re:") + message.payload, headers: message.headers.isEmpty ? NATSHeaders() : headers)
            }
        }
    }

    @Test func requestGetsTheReply() async throws {
        try await withNATS { nc, prefix in
            let responder = try Self.echoResponder(nc, "\(prefix).echo")
            defer { responder.cancel() }
            try await nc.flush()
            let reply = try await nc.request("\(prefix).echo", payload: bytes("ping"), headers: ["Call-Id": "c-7"])
            #expect(reply.text == "re:ping")
            #expect(reply.headers["Echo-Of"] == "c-7")
        }
    }

    @Test func noResponderFailsFastWithNoResponders() async throws {
        try await withNATS { nc, prefix in
            let start = ContinuousClock.now
            let error = await caughtError { _ = try await nc.request("\(prefix).nobody", payload: bytes("?"), timeout: .seconds(30)) }
            #expect(error?.code == .noResponders)
            #expect(ContinuousClock.now - start < .seconds(10))  // at once, not at the (30 s) timeout
        }
    }

    @Test func silentResponderTimesOutOnTime() async throws {
        try await withNATS { nc, prefix in
            let silent = try nc.subscribe(to: "\(prefix).silent")  // receives, never answers
            try await nc.flush()
            let start = ContinuousClock.now
            let error = await caughtError { _ = try await nc.request("\(prefix).silent", payload: [], timeout: .milliseconds(200)) }
            let elapsed = ContinuousClock.now - start
            #expect(error?.code == .timeout)
            #expect(elapsed >= .milliseconds(190) && elapsed < .seconds(10), "took \(elapsed)")
            _ = await next(silent)
        }
    }

    @Test func cancelledRequestEndsAtOnce() async throws {
        try await withNATS { nc, prefix in
            let silent = try nc.subscribe(to: "\(prefix).hold")
            try await nc.flush()
            let task = Task { try await nc.request("\(prefix).hold", payload: [], timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(50))
            let start = ContinuousClock.now
            task.cancel()
            let error = await caughtError { _ = try await task.value }
            #expect(error?.code == .cancelled)
            #expect(ContinuousClock.now - start < .seconds(10))  // at once, not at the (30 s) timeout
            withExtendedLifetime(silent) {}
        }
    }

    @Test func tenThousandConcurrentRequestsAreAllAnswered() async throws {
        try await withNATS { nc, prefix in
            // The responder is on a connection of its own, as a worker would be.
            let responderConnection = try await NATSConnection.connect(config(nc.configuration.servers[0], name: "responder"), logger: testLogger)
            defer { responderConnection.close() }
            let responder = try Self.echoResponder(responderConnection, "\(prefix).many")
            defer { responder.cancel() }
            try await responderConnection.flush()

            let tasks = 100, perTask = 100
            let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                for t in 0..<tasks {
                    group.addTask {
                        var ok = 0
                        for i in 0..<perTask {
                            let body = "\(t)-\(i)"
                            let reply = try await nc.request("\(prefix).many", payload: bytes(body), timeout: .seconds(20))
                            if reply.text == "re:\(body)" { ok += 1 }
                        }
                        return ok
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(answered == tasks * perTask)
        }
    }

    @Test func requestsFromManyTasksAtOnceDoNotBlockThePool() async throws {
        try await withNATS { nc, prefix in
            let silent = try nc.subscribe(to: "\(prefix).wait")
            try await nc.flush()
            // 50 requests waiting at once on a 2-thread pool: if each held a thread, this would stall.
            let start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        let error = await caughtError { _ = try await nc.request("\(prefix).wait", payload: [], timeout: .milliseconds(300)) }
                        #expect(error?.code == .timeout)
                    }
                }
                // Meanwhile other work still runs.
                group.addTask { try await Task.sleep(for: .milliseconds(10)) }
                try await group.waitForAll()
            }
            #expect(ContinuousClock.now - start < .seconds(2))
            withExtendedLifetime(silent) {}
        }
    }
}
