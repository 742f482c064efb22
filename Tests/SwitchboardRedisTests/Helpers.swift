import Foundation
import Logging
import SwitchboardCore
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

let testLogger: Logger = {
    var logger = Logger(label: "test.redis")
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// A client on the shared test server (REDIS_URL, or one started for this test) and a key prefix of its own.
func withRedis<T>(poolSize: Int = 4, _ body: (RedisClient, String) async throws -> T) async throws -> T {
    let (url, server) = try await SharedServer.redis()
    defer { withExtendedLifetime(server) {} }
    var configuration = try RedisConfiguration(url: url)
    configuration.poolSize = poolSize
    let client = try RedisClient(configuration: configuration, logger: testLogger)
    defer { client.close() }
    return try await body(client, uniquePrefix())
}

