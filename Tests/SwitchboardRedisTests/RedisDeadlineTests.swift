import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A server frozen with SIGSTOP keeps its connections open and says nothing: every pool thread blocks on a
/// read for the whole `commandTimeout`, the case deadlines and the bounded queue are for. Each test thaws its
/// own server in a `defer`, so a failing test never leaves it frozen.
@Suite("Redis deadlines and the bounded queue")
struct RedisDeadlineTests {
    @Test func everyCallerTimesOutAtItsDeadlineWhileTheServerIsFrozen() async throws {
        let server = try await TestServer(.redis)
        let redis = try client(server)  // 4 connections, commandTimeout 2 s
        defer { redis.close() }
        try await warm(redis)
        let pid = try #require(server.pid)
        defer { Glibc.kill(pid, SIGCONT) }
        try await freeze(pid)

        let deadline = ContinuousClock.now + .milliseconds(300)
        let outcomes = await concurrently(50) { _ = try await redis.send(["PING"], deadline: deadline) }
        for (error, returned) in outcomes {
            #expect(error?.code == .timeout, "\(String(describing: error))")
            #expect(returned >= deadline, "answered \(deadline - returned) before its deadline")
            // Without deadlines the last caller waited its turn: 50 commands / 4 threads × 2 s = 25 s. The slack
            // is for a test run that keeps both cores busy.
            #expect(returned < deadline + .milliseconds(1500), "answered \(returned - deadline) after its deadline")
        }
    }

    @Test func aFullQueueRefusesAtOnce() async throws {
        let server = try await TestServer(.redis)
        let redis = try client(server, poolSize: 1, maxQueuedCommands: 8)
        defer { redis.close() }
        try await warm(redis)
        let pid = try #require(server.pid)
        defer { Glibc.kill(pid, SIGCONT) }
        try await freeze(pid)

        let start = ContinuousClock.now
        let deadline = start + .seconds(3)
        let outcomes = await concurrently(20) { _ = try await redis.send(["PING"], deadline: deadline) }
        let refused = outcomes.filter { $0.error?.code == .unavailable }
        // 8 wait in the queue and 1 is on the thread (or not yet taken, if the thread was slower than the 20).
        #expect((11...12).contains(refused.count), "\(outcomes.map { $0.error?.code.rawValue ?? "ok" })")
        for (error, returned) in refused {
            #expect(error?.message.contains("commands queued") == true, "\(String(describing: error))")
            #expect(returned - start < .milliseconds(1500), "refused only after \(returned - start)")
        }
        for (error, _) in outcomes where error?.code != .unavailable {
            #expect(error?.code == .timeout, "\(String(describing: error))")
        }
    }

    @Test func commandsSucceedAgainOnceTheServerThaws() async throws {
        let server = try await TestServer(.redis)
        var configuration = try RedisConfiguration(url: server.url)
        configuration.poolSize = 2
        configuration.maxQueuedCommands = 8
        configuration.commandTimeout = .milliseconds(300)
        let redis = try RedisClient(configuration: configuration, logger: testLogger)
        defer { redis.close() }
        try await warm(redis)
        let pid = try #require(server.pid)
        defer { Glibc.kill(pid, SIGCONT) }
        try await freeze(pid)
        let start = ContinuousClock.now
        let frozen = await concurrently(8) { _ = try await redis.send(["PING"], deadline: .now + .milliseconds(200)) }
        #expect(frozen.allSatisfy { $0.error?.code == .timeout }, "\(frozen.map(\.error))")
        // Frozen past the 300 ms socket timeout: the stuck connections break and must be made again.
        try await Task.sleep(until: start + .milliseconds(700))

        Glibc.kill(pid, SIGCONT)
        let thawed = ContinuousClock.now
        while await caughtError({ _ = try await redis.send(["PING"]) }) != nil {
            try #require(ContinuousClock.now - thawed < .seconds(10), "no answer 10 s after the server thawed")
            try await Task.sleep(for: .milliseconds(50))
        }
        // The queue has all its room again (the timed-out commands left it) and every reply goes to its caller.
        let key = uniquePrefix() + ":thawed"
        let again = await concurrently(8) {
            let value = UUID().uuidString
            let replies = try await redis.pipeline([RedisCommand("SET", key + value, value), RedisCommand("GET", key + value)])
            #expect(replies[1].string == value)
        }
        #expect(again.allSatisfy { $0.error == nil }, "\(again.map(\.error))")
    }

    // MARK: - Helpers

    private func client(_ server: TestServer, poolSize: Int = 4, maxQueuedCommands: Int = 1024) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: server.url)
        configuration.poolSize = poolSize
        configuration.maxQueuedCommands = maxQueuedCommands
        return try RedisClient(configuration: configuration, logger: testLogger)
    }

    /// Connects the pool's connections, so the frozen server is met on reads rather than connects.
    private func warm(_ redis: RedisClient) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { _ = try await redis.send(["PING"]) } }  // no more than the smallest queue here
            try await group.waitForAll()
        }
    }

    /// SIGSTOPs `pid` and returns once the kernel shows it stopped.
    private func freeze(_ pid: Int32) async throws {
        Glibc.kill(pid, SIGSTOP)
        for _ in 0..<200 {
            // /proc/<pid>/stat: "pid (name) S ...", the state just after the name.
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let name = stat.lastIndex(of: ")"), stat[name...].dropFirst(2).first == "T" { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw TestServerError("redis-server \(pid) did not stop on SIGSTOP")
    }

    /// Runs `body` `count` times at once; each run's error (nil if none) and when it returned.
    private func concurrently(_ count: Int, _ body: @escaping @Sendable () async throws -> Void) async
        -> [(error: SwitchboardError?, returned: ContinuousClock.Instant)] {
        await withTaskGroup(of: (SwitchboardError?, ContinuousClock.Instant).self) { group in
            for _ in 0..<count { group.addTask { (await caughtError(body), ContinuousClock.now) } }
            return await group.reduce(into: []) { $0.append((error: $1.0, returned: $1.1)) }
        }
    }
}
