import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

@Suite("Redis client")
struct RedisClientTests {
    @Test func everyReplyType() async throws {
        try await withRedis { redis, p in
            #expect(try await redis.send(["SET", "\(p):s", "hello"]) == .status("OK"))
            #expect(try await redis.send(["GET", "\(p):s"]) == .bulk(Array("hello".utf8)))
            #expect(try await redis.send(["GET", "\(p):s"]).string == "hello")
            #expect(try await redis.send(["INCRBY", "\(p):n", "41"]) == .integer(41))
            #expect(try await redis.send(["GET", "\(p):missing"]) == .null)
            _ = try await redis.send(["RPUSH", "\(p):l", "a", "b"])
            #expect(try await redis.send(["LRANGE", "\(p):l", "0", "-1"]) == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
            #expect(try await redis.send(["LRANGE", "\(p):none", "0", "-1"]) == .array([]))
            // Nested arrays come back nested.
            let nested = try await redis.send(["EVAL", "return {1, {2, 'x'}, redis.status_reply('FINE')}", "0"])
            #expect(nested == .array([.integer(1), .array([.integer(2), .bulk(Array("x".utf8))]), .status("FINE")]))
            // An error reply throws server_error with Redis' text...
            let error = await caughtError { _ = try await redis.send(["INCR", "\(p):s"]) }
            #expect(error?.code == .serverError)
            #expect(error?.message.contains("not an integer") == true)
            // ...and comes back as a value inside a pipeline.
            let replies = try await redis.pipeline([RedisCommand("INCR", "\(p):s"), RedisCommand("PING")])
            if case .error(let text) = replies[0] { #expect(text.hasPrefix("ERR")) } else { Issue.record("expected an error value") }
            #expect(replies[1] == .status("PONG"))
        }
    }

    @Test func binarySafeValues() async throws {
        try await withRedis { redis, p in
            let value: [UInt8] = [0, 1, 2, 0, 255, 13, 10, 0]
            _ = try await redis.send(RedisCommand(bytes: [Array("SET".utf8), Array("\(p):bin".utf8), value]))
            #expect(try await redis.send(["GET", "\(p):bin"]) == .bulk(value))
            #expect(try await redis.send(["STRLEN", "\(p):bin"]) == .integer(8))
        }
    }

    @Test func pipelineOfAThousandCommandsInOrder() async throws {
        try await withRedis { redis, p in
            let commands = (0..<1000).map { RedisCommand("INCRBY", "\(p):k\($0 % 10)", "\($0)") }
            let replies = try await redis.pipeline(commands)
            #expect(replies.count == 1000)
            // Each key k sees increments k, k+10, k+20...: the running sums prove order.
            var sums = [Int64](repeating: 0, count: 10)
            for (i, reply) in replies.enumerated() {
                sums[i % 10] += Int64(i)
                #expect(reply == .integer(sums[i % 10]), "reply \(i)")
            }
        }
    }

    @Test func scriptSurvivesScriptFlush() async throws {
        try await withRedis(poolSize: 1) { redis, p in
            let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            #expect(try await redis.evaluate(script, keys: ["\(p):c"], arguments: ["5"]) == .integer(5))
            _ = try await redis.send(["SCRIPT", "FLUSH"])
            let exists = try await redis.send(["SCRIPT", "EXISTS", script.sha1])
            #expect(exists == .array([.integer(0)]))
            // Redis no longer knows it: the client loads it again and the call still works.
            #expect(try await redis.evaluate(script, keys: ["\(p):c"], arguments: ["2"]) == .integer(7))
            #expect(try await redis.send(["SCRIPT", "EXISTS", script.sha1]) == .array([.integer(1)]))
            let bad = RedisScript("return redis.call('NOPE')")
            let error = await caughtError { _ = try await redis.evaluate(bad) }
            #expect(error?.code == .serverError)
        }
    }

    @Test func manyConcurrentCommandsAllAnswered() async throws {
        try await withRedis { redis, p in
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for t in 0..<50 {
                    group.addTask {
                        var ok = 0
                        for i in 0..<40 {
                            let key = "\(p):t\(t):\(i)"
                            _ = try await redis.send(["SET", key, "\(t * 1000 + i)"])
                            if try await redis.send(["GET", key]).string == "\(t * 1000 + i)" { ok += 1 }
                        }
                        return ok
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(total == 2000)
        }
    }

    @Test func badInputIsRefusedWithACode() async throws {
        let (url, server) = try await SharedServer.redis()
        defer { withExtendedLifetime(server) {} }
        var configuration = try RedisConfiguration(url: url)
        configuration.maxCommandBytes = 1024
        let redis = try RedisClient(configuration: configuration, logger: testLogger)
        defer { redis.close() }
        #expect(await caughtError { _ = try await redis.send([]) }?.code == .invalidArgument)
        #expect(await caughtError { _ = try await redis.pipeline([RedisCommand(bytes: [])]) }?.code == .invalidArgument)
        let big = String(repeating: "x", count: 2048)
        #expect(await caughtError { _ = try await redis.send(["SET", "k", big]) }?.code == .tooLarge)
        #expect(try await redis.send(["PING"]) == .status("PONG"))
    }

    @Test func closedClientFailsWithConnectionClosed() async throws {
        try await withRedis { redis, _ in
            _ = try await redis.send(["PING"])
            redis.close()
            #expect(await caughtError { _ = try await redis.send(["PING"]) }?.code == .connectionClosed)
        }
    }

    @Test func infoHelpers() async throws {
        try await withRedis { redis, p in
            let version = try await redis.serverVersion()
            #expect(version.split(separator: ".").count == 3)
            #expect(try await redis.ping() < .seconds(1))
            _ = try await redis.send(["HSET", "\(p):h", "a", "1", "b", "two"])
            #expect(try await redis.hashGetAll("\(p):h") == ["a": "1", "b": "two"])
            #expect(try await redis.hashGetAll("\(p):none") == [:])
        }
    }
}
