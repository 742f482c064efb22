import Foundation
import Synchronization
import SwitchboardCore
@testable import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite struct RedisSentinelURLTests {
    @Test func aSentinelURLNamesTheSentinelsThePrimaryAndTheDatabase() throws {
        let c = try RedisConfiguration(url: "redis-sentinel://:s3cret@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/2")
        let sentinel = try #require(c.sentinel)
        #expect(sentinel.addresses.map(\.host) == ["10.0.0.1", "sentinel-b", "::1"])
        #expect(sentinel.addresses.map(\.port) == [26380, 26379, 26381])
        #expect(sentinel.primaryName == "mymaster")
        #expect(c.database == 2)
        #expect(c.password == "s3cret")  // the primary's; the Sentinels' own is apart
        #expect(sentinel.password == nil)
        #expect(c.replicasToAck == 1)  // behind Sentinels a write is done once a replica holds it
        #expect(c.redacted == "redis-sentinel://:***@10.0.0.1:26380,sentinel-b:26379,[::1]:26381/mymaster/2")
        #expect(try RedisConfiguration(url: "redis://127.0.0.1:6379").replicasToAck == 0)
        // A password may hold an '@'; the primary's name and the database are the path.
        let at = try RedisConfiguration(url: "redis-sentinel://app:p@ss@s1,s2/cache")
        #expect(at.username == "app" && at.password == "p@ss" && at.sentinel?.addresses.map(\.host) == ["s1", "s2"])
        #expect(at.sentinel?.primaryName == "cache" && at.database == 0)
    }

    @Test func aBadSentinelURLIsRefusedWithAReason() {
        for bad in ["redis-sentinel://h1:26379", "redis-sentinel://h1:26379/", "redis-sentinel:///mymaster",
                    "redis-sentinel://h1:99999/mymaster", "redis-sentinel://h1/mymaster/notadb", "redis-sentinel://h1/m/1/extra"] {
            #expect(throws: SwitchboardError.self, "\(bad)") { _ = try RedisConfiguration(url: bad) }
        }
    }
}

/// Real `redis-server` processes: a primary, two replicas, three Sentinels. The primary is killed while a
/// client writes; the client must find the new primary by itself, and lose no write it was told succeeded.
@Suite(.serialized) struct RedisSentinelFailoverTests {
    @Test func aClientFollowsAFailoverAndNoConfirmedWriteIsLost() async throws {
        let set = try await SentinelSet()
        try await set.waitUntilReady()
        var config = try RedisConfiguration(url: set.url)
        config.connectTimeout = .milliseconds(500)
        config.commandTimeout = .seconds(1)
        let client = try RedisClient(configuration: config, logger: testLogger)
        defer { client.close() }
        let key = uniquePrefix("failover")

        let confirmed = Mutex<[Int]>([])
        let failures = Mutex<[SwitchboardError.Code: Int]>([:])
        let oldPrimary = try #require(await set.primaryPort())
        // Writes one after another; each one the client says succeeded is remembered.
        func write(_ i: Int) async {
            do {
                _ = try await client.send(["RPUSH", key, "\(i)"])
                confirmed.withLock { $0.append(i) }
            } catch {
                failures.withLock { $0[error.code, default: 0] += 1 }
            }
        }
        var i = 0
        for _ in 0..<200 { i += 1; await write(i) }
        #expect(confirmed.withLock { $0.count } == 200, "\(failures.withLock { $0 })")

        set.server(on: oldPrimary)?.kill()
        // Writing on through the failover until the Sentinels have named another primary and 200 writes
        // went through to it. Bounded by the Sentinels' own timing (down after 1 s, then an election).
        let deadline = ContinuousClock.now + .seconds(60)
        var afterSwitch = 0
        while afterSwitch < 200 && ContinuousClock.now < deadline {
            i += 1
            let before = confirmed.withLock { $0.count }
            await write(i)
            if confirmed.withLock({ $0.count }) > before, let now = await set.primaryPort(), now != oldPrimary { afterSwitch += 1 }
            if confirmed.withLock({ $0.count }) == before { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(afterSwitch == 200, "writes went through to the new primary")
        let newPrimary = try #require(await set.primaryPort())
        #expect(newPrimary != oldPrimary)

        // Every confirmed write is on the new primary, in order. Failures were coded errors, not crashes.
        let stored = try await client.send(["LRANGE", key, "0", "-1"]).array?.compactMap { $0.string.flatMap(Int.init) } ?? []
        let acked = confirmed.withLock { $0 }
        #expect(Set(acked).isSubset(of: Set(stored)), "\(Set(acked).subtracting(stored).count) confirmed writes lost")
        #expect(stored == stored.sorted())
        let codes = Set(failures.withLock { $0.keys })
        #expect(codes.isSubset(of: [.connectionFailed, .connectionClosed, .timeout, .unavailable, .serverError]), "\(codes)")
    }

    @Test func aWriteNoReplicaConfirmsFailsAsUnavailableAndReadsStillWork() async throws {
        // One primary with no replica at all: a write cannot be confirmed; the caller is told, and reads go on.
        let primary = try await LocalServer(.redis)
        let sentinel = try await LocalServer(.sentinel, configLines: ["sentinel monitor lonely 127.0.0.1 \(primary.port) 1"])
        var config = try RedisConfiguration(url: "redis-sentinel://127.0.0.1:\(sentinel.port)/lonely")
        config.commandTimeout = .seconds(1)
        let client = try RedisClient(configuration: config, logger: testLogger)
        defer { client.close() }
        let error = await caughtError { _ = try await client.send(["SET", "k", "v"]) }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("replica") == true)
        #expect(try await client.send(["GET", "k"]).string == "v")  // the primary has it; only its safety is in doubt
        config.replicasToAck = 0
        let relaxed = try RedisClient(configuration: config, logger: testLogger)
        defer { relaxed.close() }
        _ = try await relaxed.send(["SET", "k2", "v"])
        withExtendedLifetime((primary, sentinel)) {}
    }

    @Test func noSentinelAnsweringIsAConnectionFailureNamingThem() async throws {
        let port = try LocalServer.freePort()
        var config = try RedisConfiguration(url: "redis-sentinel://127.0.0.1:\(port)/nobody")
        config.connectTimeout = .milliseconds(200)
        let client = try RedisClient(configuration: config, logger: testLogger)
        defer { client.close() }
        let error = await caughtError { _ = try await client.send(["PING"]) }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.contains("no Sentinel named the primary 'nobody'") == true)
    }
}
