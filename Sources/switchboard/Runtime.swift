import CSwitchboardSys
import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis
import UnixSignals

/// What the long-running commands (router, worker) share: logging, connecting, running services until a
/// signal.
enum Runtime {
    static func logger(_ label: String, level: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: level) ?? .info
        return logger
    }

    /// When started by `switchboard dev`, die with it.
    static func followParentIfAsked() {
        if ProcessInfo.processInfo.environment["SWITCHBOARD_DIE_WITH_PARENT"] == "1" {
            _ = sb_set_parent_death_signal(SIGTERM)
        }
    }

    static func connectNATS(_ options: ClusterOptions, name: String, logger: Logger) async throws -> NATSConnection {
        try await NATSConnection.connect(NATSConfiguration(servers: options.natsServers, name: name), logger: logger)
    }

    static func connectRedis(_ options: ClusterOptions, logger: Logger) async throws -> RedisClient {
        let redis = try RedisClient(configuration: RedisConfiguration(url: options.redisURL), logger: logger)
        _ = try await redis.ping()  // fail at start, with the reason, rather than on the first call
        return redis
    }

    /// Runs the services until SIGTERM or SIGINT, which shut them down gracefully.
    static func run(_ services: [any Service], logger: Logger) async throws {
        let group = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

extension Duration {
    init(seconds: Double) { self = .milliseconds(Int((seconds * 1000).rounded())) }
}

/// Writes a line to standard output at once (no buffering), so a parent process reading it sees it now.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
