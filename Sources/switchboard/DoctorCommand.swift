import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis

/// Connects to NATS and Redis and reports what it found, or what is wrong, in one line each.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check that NATS and Redis are reachable; print server versions and round-trip times.")

    // No default shown in --help: the environment's URL may carry a password.
    @Option(name: .customLong("nats-url"), help: "NATS server URL(s), comma-separated (default nats://127.0.0.1:4222; env NATS_URL).")
    var natsURLOption: String?
    var natsURL: String { natsURLOption ?? ProcessInfo.processInfo.environment["NATS_URL"] ?? "nats://127.0.0.1:4222" }
    @Option(name: .customLong("redis-url"), help: "Redis URL, redis://[:password@]host:port[/db] (default redis://127.0.0.1:6379; env REDIS_URL).")
    var redisURLOption: String?
    var redisURL: String { redisURLOption ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? "redis://127.0.0.1:6379" }
    @Option(help: "Seconds to wait for each server.")
    var timeout: Double = 2
    @Option(help: "Output format: text or json.")
    var output: OutputFormat = .text
    @OptionGroup var nats: NATSAuthOptions
    @OptionGroup var redisAuth: RedisAuthOptions

    struct Check: Encodable {
        var service: String
        var ok: Bool
        var url: String
        var server: [String: String] = [:]
        var roundTripMicros: [String: Double] = [:]
        var error: ErrorBody?
    }

    struct ErrorBody: Encodable {
        var code: String
        var message: String
    }

    func run() async throws {
        var logger = Logger(label: "switchboard.doctor")
        logger.logLevel = .critical
        let checks = [await checkNATS(logger), await checkRedis(logger)]
        switch output {
        case .json: print(jsonString(checks))
        case .text:
            for c in checks {
                if let error = c.error {
                    print("✗ \(c.service) \(c.url): \(error.code): \(error.message)")
                } else {
                    let server = c.server.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                    let rtt = c.roundTripMicros.sorted { $0.key < $1.key }
                        .map { String(format: "%@ %.0f µs", $0.key, $0.value) }.joined(separator: ", ")
                    print("✓ \(c.service) \(c.url): \(server); \(rtt)")
                }
            }
        }
        if checks.contains(where: { !$0.ok }) { throw ExitCode(69) }
    }

    private var limit: Duration { (try? seconds(timeout, "timeout", max: 600)) ?? .seconds(2) }

    private func checkNATS(_ logger: Logger) async -> Check {
        let servers = natsURL.split(separator: ",").map { String($0) }
        var check = Check(service: "nats", ok: false, url: servers.map(redactedNATS).joined(separator: ","))
        do {
            var config = NATSConfiguration(servers: servers, name: "switchboard-doctor")
            config.inboxPrefix = BusRole.operator.inboxPrefix()
            try nats.apply(to: &config)
            config.connectTimeout = limit
            config.reconnect.enabled = false
            let nc = try await NATSConnection.connect(config, logger: logger)
            defer { nc.close() }
            check.server["id"] = nc.serverID ?? "?"
            check.server["connected"] = nc.connectedURL ?? "?"
            check.server["max_payload"] = "\(nc.maxPayload)"
            check.roundTripMicros["ping"] = try await median(5) { try await nc.roundTrip() }
            let subject = "_SWITCHBOARD.doctor.\(UInt32.random(in: 0...UInt32.max))"
            let echo = try nc.subscribe(to: subject)
            let task = Task { for await m in echo { try? nc.reply(to: m, payload: m.payload) } }
            defer { task.cancel() }
            try await nc.flush(timeout: limit)
            check.roundTripMicros["request"] = try await median(5) {
                let clock = ContinuousClock()
                let start = clock.now
                _ = try await nc.request(subject, payload: Array("doctor".utf8), timeout: limit)
                return clock.now - start
            }
            check.ok = true
        } catch {
            check.error = Self.body(error)
        }
        return check
    }

    private func checkRedis(_ logger: Logger) async -> Check {
        var check = Check(service: "redis", ok: false, url: redisURL)
        do {
            var config = try redisAuth.configuration(url: redisURL)
            check.url = config.redacted
            config.connectTimeout = limit
            config.commandTimeout = limit
            config.poolSize = 1
            let redis = try RedisClient(configuration: config, logger: logger)
            defer { redis.close() }
            check.server["version"] = try await redis.serverVersion()
            check.roundTripMicros["ping"] = try await median(5) { try await redis.ping() }
            check.ok = true
        } catch {
            check.error = Self.body(error)
        }
        return check
    }

    private static func body(_ error: any Error) -> ErrorBody {
        let e = error as? SwitchboardError ?? SwitchboardError(.internalError, "\(error)")
        return ErrorBody(code: e.code.rawValue, message: e.message)
    }

    private func redactedNATS(_ url: String) -> String {
        (try? Endpoint.parse(url, defaultScheme: "nats", defaultPort: 4222).redacted) ?? url
    }

    private func median(_ n: Int, _ body: () async throws -> Duration) async throws -> Double {
        var samples: [Duration] = []
        for _ in 0..<n { samples.append(try await body()) }
        return LatencySummary(samples)!.p50.microseconds
    }
}
