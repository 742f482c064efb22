import CSwitchboardSys
import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardObservability
import SwitchboardNATS
import SwitchboardRedis
import UnixSignals

/// What the long-running commands (router, worker) share: logging, connecting, running services until a
/// signal.
enum Runtime {
    /// A tracer from the standard `OTEL_*` variables, or nil (tracing off: no endpoint, `OTEL_SDK_DISABLED`, or
    /// `OTEL_TRACES_EXPORTER=none`). A setting it cannot follow stops the process with a clear error.
    static func tracer(service: String, metrics: MetricsRegistry, logger: Logger) throws -> Tracer? {
        let configuration: Tracer.Configuration?
        do {
            configuration = try Tracer.Configuration.fromEnvironment(ProcessInfo.processInfo.environment, defaultServiceName: service)
        } catch {
            throw ExitCodes.fail(SwitchboardError(.invalidArgument, "tracing: \(error)"))
        }
        guard let configuration else { return nil }
        logger.notice("exporting trace spans (OTLP, http/json)", metadata: ["endpoint": "\(configuration.tracesURL)",
                                                                           "service": "\(configuration.serviceName)"])
        return Tracer(configuration, metrics: metrics, logger: logger)
    }

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

    /// Connects to NATS and Redis, builds the services, runs them until SIGTERM or SIGINT (a graceful stop),
    /// then drains NATS. A failure prints one line and exits with the error's code.
    static func serve(_ cluster: ClusterOptions, name: String, role: BusRole, logger: Logger,
                      _ services: (NATSConnection, RedisClient) throws -> [any Service]) async throws {
        let redis: RedisClient
        do throws(SwitchboardError) {
            redis = try RedisClient(configuration: cluster.redisConfiguration(), logger: logger)
            _ = try await redis.ping()  // fail at start, with the reason, rather than on the first call
        } catch {
            throw ExitCodes.fail(error)
        }
        defer { redis.close() }
        try await serve(cluster, name: name, role: role, logger: logger) { nats in try services(nats, redis) }
    }

    /// The same for a process that needs NATS alone (the gateway).
    static func serve(_ cluster: ClusterOptions, name: String, role: BusRole, logger: Logger,
                      _ services: (NATSConnection) throws -> [any Service]) async throws {
        do {
            let nats = try await NATSConnection.connect(try cluster.natsConfiguration(name: name, role: role), logger: logger)
            let group = ServiceGroup(configuration: .init(
                // A service that returns (a worker whose drain is done) ends the process cleanly, exit 0.
                services: try services(nats).map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
            try await group.run()
            try? await nats.drain()
        } catch let error as SwitchboardError {
            throw ExitCodes.fail(error)
        }
    }
}

/// Writes a line to standard output at once (no buffering), so a parent process reading it sees it now.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
