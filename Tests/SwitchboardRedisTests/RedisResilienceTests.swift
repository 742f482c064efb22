import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Redis auth, databases, timeouts and restarts")
struct RedisResilienceTests {
    @Test func authWithPasswordAndWrongPassword() async throws {
        let server = try await TestServer(.redis, arguments: ["--requirepass", "s3cret"])
        let good = try RedisClient(url: "redis://:s3cret@127.0.0.1:\(server.port)", logger: testLogger)
        defer { good.close() }
        #expect(try await good.send(["PING"]) == .status("PONG"))

        let wrong = try RedisClient(url: "redis://:nope@127.0.0.1:\(server.port)", logger: testLogger)
        defer { wrong.close() }
        let error = await caughtError { _ = try await wrong.send(["PING"]) }
        #expect(error?.code == .authenticationFailed)
        #expect(error?.message.contains("WRONGPASS") == true || error?.message.contains("invalid") == true, "\(String(describing: error))")

        let none = try RedisClient(url: "redis://127.0.0.1:\(server.port)", logger: testLogger)
        defer { none.close() }
        let noAuth = await caughtError { _ = try await none.send(["GET", "x"]) }
        #expect(noAuth?.code == .authenticationFailed)
        #expect(noAuth?.message.contains("NOAUTH") == true)
    }

    /// A password with `/` and `@`, percent-encoded in the URL (plain and through Sentinel's URL form).
    @Test func aPasswordWithSlashesAndAtSignsWorks() async throws {
        let server = try await TestServer(.redis, arguments: ["--requirepass", "p/a@ss"])
        let client = try RedisClient(url: "redis://:p%2Fa%40ss@127.0.0.1:\(server.port)/0", logger: testLogger)
        defer { client.close() }
        #expect(try await client.send(["PING"]) == .status("PONG"))
        let sentinel = try RedisConfiguration(url: "redis-sentinel://:p%2Fa%40ss@127.0.0.1:26379/mymaster/3")
        #expect(sentinel.password == "p/a@ss" && sentinel.database == 3 && sentinel.sentinel?.primaryName == "mymaster")
        let wrong = try RedisClient(url: "redis://:wr%2Fong@127.0.0.1:\(server.port)", logger: testLogger)
        defer { wrong.close() }
        let error = await caughtError { _ = try await wrong.send(["PING"]) }
        #expect(error?.code == .authenticationFailed && error?.message.contains("wr/ong") == false)
    }

    @Test func aclUserAuth() async throws {
        let server = try await TestServer(.redis)
        let admin = try RedisClient(url: server.url, logger: testLogger)
        defer { admin.close() }
        _ = try await admin.send(["ACL", "SETUSER", "router", "on", ">pw", "~*", "+@all"])
        let user = try RedisClient(url: "redis://router:pw@127.0.0.1:\(server.port)", logger: testLogger)
        defer { user.close() }
        #expect(try await user.send(["ACL", "WHOAMI"]).string == "router")
    }

    @Test func databaseFromTheURLIsolatesKeys() async throws {
        let (url, server) = try await SharedServer.redis()
        defer { withExtendedLifetime(server) {} }
        let key = uniquePrefix() + ":db"
        let db0 = try RedisClient(configuration: RedisConfiguration(url: url), logger: testLogger)
        let db3 = try RedisClient(configuration: RedisConfiguration(url: url + "/3"), logger: testLogger)
        defer { db0.close(); db3.close() }
        _ = try await db3.send(["SET", key, "three"])
        #expect(try await db3.send(["GET", key]).string == "three")
        #expect(try await db0.send(["GET", key]) == .null)
        _ = try await db3.send(["DEL", key])
        #expect(throws: SwitchboardError.self) { _ = try RedisConfiguration(url: url + "/notanumber") }
    }

    @Test func commandTimeoutFailsPromptly() async throws {
        let server = try await TestServer(.redis)
        var configuration = try RedisConfiguration(url: server.url)
        configuration.commandTimeout = .milliseconds(200)
        let redis = try RedisClient(configuration: configuration, logger: testLogger)
        defer { redis.close() }
        let start = ContinuousClock.now
        let error = await caughtError { _ = try await redis.send(["BLPOP", "never", "30"]) }
        #expect(error?.code == .timeout)
        // Far below the 30 s the command would block for (with room for a test run that loads both cores).
        #expect(ContinuousClock.now - start < .seconds(10))
        // The client goes on working.
        #expect(try await redis.send(["PING"]) == .status("PONG"))
    }

    @Test func recoversAfterTheServerRestarts() async throws {
        let server = try await TestServer(.redis)
        var configuration = try RedisConfiguration(url: server.url)
        configuration.connectTimeout = .seconds(30)
        let redis = try RedisClient(configuration: configuration, logger: testLogger)
        defer { redis.close() }
        // Warm every pooled connection.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 { group.addTask { _ = try await redis.send(["PING"]) } }
            try await group.waitForAll()
        }

        await server.stop()
        // While it is down, commands fail fast with a coded error.
        for _ in 0..<3 {
            let start = ContinuousClock.now
            let error = await caughtError { _ = try await redis.send(["PING"]) }
            #expect(error?.code == .connectionClosed || error?.code == .connectionFailed, "\(String(describing: error))")
            #expect(ContinuousClock.now - start < .seconds(10))  // refused at once, not at the 30 s connect timeout
        }

        try await server.start()
        // Back up: at most one command fails, the rest succeed, none hangs.
        var failures = 0
        for i in 0..<20 {
            if let error = await caughtError({ _ = try await redis.send(["SET", "after", "\(i)"]) }) {
                failures += 1
                #expect([.connectionClosed, .connectionFailed].contains(error.code))
            }
        }
        #expect(failures <= 1, "\(failures) commands failed after the restart")
        #expect(try await redis.send(["GET", "after"]).string == "19")
    }

    @Test func connectToNothingFailsFast() async throws {
        let port = try TestServer.freePort()
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)")
        configuration.connectTimeout = .seconds(30)
        let redis = try RedisClient(configuration: configuration, logger: testLogger)
        defer { redis.close() }
        let start = ContinuousClock.now
        let error = await caughtError { _ = try await redis.send(["PING"]) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
        // A refused connection fails at once, not after the (30 s) connect timeout; the margin is for a test run
        // that keeps both cores busy.
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func configurationParsing() throws {
        let c = try RedisConfiguration(url: "redis://user:pw@db.local:6380/2")
        #expect(c.host == "db.local" && c.port == 6380 && c.username == "user" && c.password == "pw" && c.database == 2)
        #expect(try RedisConfiguration(url: "localhost").port == 6379)
        #expect(throws: SwitchboardError.self) { _ = try RedisConfiguration(url: "rediss://host") }
        #expect(throws: SwitchboardError.self) { _ = try RedisConfiguration(url: "redis://host/99999") }
        var bad = try RedisConfiguration(url: "localhost")
        bad.poolSize = 0
        #expect(throws: SwitchboardError.self) { _ = try RedisClient(configuration: bad) }
    }
}

/// The ACL users `switchboard redis-acl` writes, on a real redis-server: each role does its work and nothing more.
@Suite("Redis ACL users per role")
struct RedisACLTests {
    @Test func eachRoleDoesItsWorkAndIsRefusedTheRest() async throws {
        let keys = try RedisKeys(prefix: "acl\(Identifiers.random(bytes: 3))")
        let passwords: [RedisACL.Role: String] = [.router: "r-pw", .worker: "w/pw@", .gateway: "g-pw", .operator: "o-pw"]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-acl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("users.acl")
        try RedisACL.file(passwords: passwords, keys: keys).write(to: file, atomically: true, encoding: .utf8)
        #expect(!(try String(contentsOf: file, encoding: .utf8)).contains("r-pw"), "the file holds hashes, not passwords")
        let server = try await TestServer(.redis, arguments: ["--aclfile", file.path])
        func client(_ role: RedisACL.Role) throws -> RedisClient {
            let password = passwords[role]!.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            return try RedisClient(url: "redis://\(role.rawValue):\(password)@127.0.0.1:\(server.port)", logger: testLogger)
        }
        let router = try client(.router), worker = try client(.worker), op = try client(.operator), gateway = try client(.gateway)
        let anonymous = try RedisClient(url: "redis://127.0.0.1:\(server.port)", logger: testLogger)
        defer { for c in [router, worker, op, gateway, anonymous] { c.close() } }

        // The router places a call; the worker starts, refreshes and ends it: scripts and all.
        let store = CallStore(redis: router, keys: keys)
        let record = CallRecord(callID: "c1", tenant: "t", workerID: "w1", version: "1", region: "r", state: .placed, createdAt: 1, metadata: [:])
        try await store.place(record, deadline: .now + .seconds(5))
        let calls = CallStore(redis: worker, keys: keys)
        #expect(try await calls.start("c1", tenant: "t", worker: "w1", incarnation: "i", startedAt: 1) == .owned)
        #expect(try await calls.end("c1", tenant: "t", worker: "w1", epoch: 1, reason: .caller, retention: .seconds(60)).ownership == .owned)
        _ = try await worker.send(["HGET", keys.drains, "w1"])
        _ = try await DeployStore(redis: worker, keys: keys).read()

        // What a worker has no business with: tenants, their keys, a call's lock, the whole keyspace.
        for command in [["HGETALL", keys.tenants], ["HGET", keys.tenantKeys, "x"], ["SET", keys.callLock("c1"), "me"], ["FLUSHALL"],
                        ["KEYS", "*"], ["CONFIG", "GET", "*"]] {
            let error = await caughtError { _ = try await worker.send(command) }
            #expect(error?.message.contains("NOPERM") == true, "\(command): \(String(describing: error))")
        }
        // A gateway writes calls' timelines, and reaches nothing else.
        let event = TimelineEvent(atMillis: 1_765_000_000_000, source: .gateway, member: "gw-1", type: "answered")
        #expect(try await TimelineStore(redis: gateway, keys: keys).append("c1", [event]) == (1, 0))
        for command in [["HGET", keys.call("c1"), "state"], ["HGETALL", keys.usage("t", month: "2026-12")], ["HGETALL", keys.tenants],
                        ["SMEMBERS", keys.workerCalls("w1")], ["GET", keys.tenantRate("t")]] {
            let error = await caughtError { _ = try await gateway.send(command) }
            #expect(error?.message.contains("NOPERM") == true, "\(command): \(String(describing: error))")
        }
        // The operator reads; it writes nothing.
        #expect(try await op.send(["HGET", keys.call("c1"), "state"]).string == "ended")
        let write = await caughtError { _ = try await op.send(["HSET", keys.call("c1"), "state", "active"]) }
        #expect(write?.message.contains("NOPERM") == true)
        // The default user is off.
        #expect(await caughtError { _ = try await anonymous.send(["PING"]) } != nil)
    }
}
