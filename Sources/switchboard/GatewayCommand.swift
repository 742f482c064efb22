import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardGateway
import SwitchboardObservability
import SwitchboardRedis

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run a gateway: take calls from Twilio Media Streams and from a browser page, and carry each caller's leg for the whole call (docs/gateway.md).")

    @OptionGroup var cluster: ClusterOptions

    @Option(help: "Gateway id, unique in the cluster: letters, digits, '-', '_' (env SWITCHBOARD_ID).")
    var id: String = Settings.string("id", "gateway-\(Identifiers.random(bytes: 3))")
    @Option(name: .customLong("http-host"), help: "Address to listen on (the container image sets 0.0.0.0).")
    var httpHost: String = Settings.string("http-host", "127.0.0.1")
    @Option(name: .customLong("http-port"), help: "Port of the webhook, the streams, the page, /healthz, /readyz and /metrics (0 picks a free one).")
    var httpPort: Int = Settings.int("http-port", 8090)
    @Option(name: .customLong("public-url"), help: "The address callers and Twilio use (https://gw.example.com); default http:// and the request's Host.")
    var publicURL: String = Settings.string("public-url", "")
    @Option(name: .customLong("twilio-auth-token-file"), help: "File holding the Twilio account's auth token (or env SWITCHBOARD_TWILIO_AUTH_TOKEN); webhooks are refused without one.")
    var twilioAuthTokenFile: String = Settings.string("twilio-auth-token-file", "")
    @Option(name: .customLong("tenant-keys-file"), help: "File of tenant=key lines: the API keys the gateway routes each tenant's calls with.")
    var tenantKeysFile: String = Settings.string("tenant-keys-file", "")
    @Option(name: .customLong("number"), help: "A Twilio number and its tenant, +15551234567=acme (repeatable; env SWITCHBOARD_NUMBERS, comma-separated).")
    var numbers: [String] = Settings.value("numbers")?.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } ?? []
    @Option(name: .customLong("token-secret-file"), help: "File holding the secret (32 bytes or more) that signs stream and call tokens; replicas share it. Default: a random one (one replica only).")
    var tokenSecretFile: String = Settings.string("token-secret-file", "")
    @Option(name: .customLong("stream-token-ttl"), help: "Seconds the TwiML's stream URL may be used.")
    var streamTokenTTL: Double = Settings.double("stream-token-ttl", 60)
    @Option(name: .customLong("call-token-ttl"), help: "Seconds a browser's call token may be used.")
    var callTokenTTL: Double = Settings.double("call-token-ttl", 300)
    @Option(name: .customLong("max-legs"), help: "Live legs at most; beyond, new streams are refused.")
    var maxLegs: Int = Settings.int("max-legs", 500)
    @Option(name: .customLong("drain-deadline"), help: "SIGTERM drains: seconds live legs may go on before their calls are ended.")
    var drainDeadline: Double = Settings.double("drain-deadline", 3600)
    @Option(name: .customLong("slow-reader-timeout"), help: "Seconds a caller's socket may take nothing while its queue is full before its leg is closed as a slow reader.")
    var slowReaderTimeout: Double = Settings.double("slow-reader-timeout", 5)
    @Option(help: "Region callers are placed in first (locality preferred).")
    var region: String = Settings.string("region", "")
    @Option(help: "Zone callers are placed in first (needs --region).")
    var zone: String = Settings.string("zone", "")

    @Option(help: "Where calls' timelines go: redis (the cluster's, --redis-url) or off (env SWITCHBOARD_TIMELINE).")
    var timeline: String = Settings.string("timeline", "redis")
    @OptionGroup var timelines: TimelineOptions
    @Option(name: .customLong("recordings-dir"), help: "Record the calls whose tenant's calls are recorded, here (a volume the routers share); none: no recordings.")
    var recordingsDir: String = Settings.string("recordings-dir", "")
    @Option(name: .customLong("recording-bitrate"), help: "Bits per second of a recording, both channels (32000 at least: 16000 each).")
    var recordingBitrate: Int = Settings.int("recording-bitrate", 32_000)
    @Option(name: .customLong("recording-max"), help: "Seconds a recording lasts at most; the call goes on unrecorded.")
    var recordingMax: Double = Settings.double("recording-max", 6 * 3600)
    @Option(name: .customLong("recording-retention"), help: "Seconds recordings are kept.")
    var recordingRetention: Double = Settings.double("recording-retention", 30 * 86_400)

    func run() async throws {
        Runtime.followParentIfAsked()
        let logger = Runtime.logger("switchboard.gateway", level: cluster.logLevel)
        var config: GatewayConfiguration
        let subjects = try cluster.subjects()
        do throws(SwitchboardError) {
            try WireCheck.identifier(id, "id")
            var secret: [UInt8]
            if tokenSecretFile.isEmpty {
                secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
                logger.warning("no --token-secret-file: tokens are signed with a random secret, so only this replica accepts them")
            } else {
                secret = Array(try readSecret(tokenSecretFile, "token secret").utf8)
                guard secret.count >= 32 else { throw SwitchboardError(.invalidArgument, "the token secret must be 32 bytes or more") }
            }
            config = GatewayConfiguration(id: id, subjects: subjects, keys: try RedisKeys(prefix: cluster.keyPrefix), tokenSecret: secret)
            secret.removeAll()
            config.publicURL = publicURL.isEmpty ? nil : publicURL
            if !twilioAuthTokenFile.isEmpty {
                config.twilioAuthToken = try readSecret(twilioAuthTokenFile, "Twilio auth token")
            } else if let token = Settings.environment["SWITCHBOARD_TWILIO_AUTH_TOKEN"], !token.isEmpty {
                config.twilioAuthToken = token
            }
            if !tenantKeysFile.isEmpty {
                config.tenantKeys = try pairs(readSecret(tenantKeysFile, "tenant keys").split(whereSeparator: \.isNewline).map(String.init), "tenant keys file")
            }
            config.numbers = try pairs(numbers, "--number")
            for tenant in config.numbers.values { try WireCheck.identifier(tenant, "tenant") }
            config.streamTokenTTL = try seconds(streamTokenTTL, "stream token ttl", max: 3600)
            config.callTokenTTL = try seconds(callTokenTTL, "call token ttl", max: 86_400)
            config.drainDeadline = try seconds(drainDeadline, "drain deadline", allowZero: true, max: 86_400)
            guard maxLegs > 0 else { throw SwitchboardError(.invalidArgument, "max-legs must be 1 or more") }
            config.maxLegs = maxLegs
            config.slowReaderPatience = try seconds(slowReaderTimeout, "slow reader timeout", max: 300)
            guard zone.isEmpty || !region.isEmpty else { throw SwitchboardError(.invalidArgument, "--zone needs --region") }
            config.region = region.isEmpty ? nil : region
            config.zone = zone.isEmpty ? nil : zone
            guard ["redis", "off"].contains(timeline) else { throw SwitchboardError(.invalidArgument, "--timeline must be redis or off, not '\(timeline)'") }
            (config.timelineRetention, config.timelineCap) = try timelines.checked()
            if !recordingsDir.isEmpty {
                var recording = RecordingOptions(directory: recordingsDir)
                guard (RecordingOptions.minBitrate...256_000).contains(recordingBitrate) else {
                    throw SwitchboardError(.invalidArgument, "recording bitrate must be \(RecordingOptions.minBitrate)-256000, not \(recordingBitrate)")
                }
                recording.bitrate = recordingBitrate
                recording.maxDuration = try seconds(recordingMax, "recording max", max: 24 * 3600)
                recording.retention = try seconds(recordingRetention, "recording retention", max: 3650 * 86_400)
                config.recording = recording
            }
            guard (0...65535).contains(httpPort) else { throw SwitchboardError(.invalidArgument, "http-port must be 0-65535, got \(httpPort)") }
        } catch {
            throw ExitCodes.fail(error)
        }
        let metrics = MetricsRegistry()
        // Not checked at start: a gateway carries calls without Redis; their timeline events wait for it.
        let redis: RedisClient?
        do {
            redis = timeline == "off" ? nil : try RedisClient(configuration: cluster.redisConfiguration(), logger: logger)
        } catch {
            throw ExitCodes.fail(error)
        }
        defer { redis?.close() }
        let tracer = try Runtime.tracer(service: "switchboard-gateway", metrics: metrics, logger: logger)
        try await Runtime.serve(cluster, name: id, role: .gateway, logger: logger) { nats in
            let gateway = Gateway(configuration: config, nats: nats, redis: redis, metrics: metrics, tracer: tracer, logger: logger)
            let (host, id) = (httpHost, id)
            let http = GatewayHTTP.application(for: gateway, host: host, port: httpPort) { port in
                say("gateway \(id) serving Twilio webhooks and streams, the browser page and /metrics on http://\(host):\(port)")
            }
            // Services stop in reverse order: the gateway drains its legs while the server still carries them.
            return [http, gateway]
        }
    }

    /// A file's text without its trailing newline.
    private func readSecret(_ path: String, _ what: String) throws(SwitchboardError) -> String {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 1 << 20 else {
            throw SwitchboardError(.invalidArgument, "cannot read the \(what) file \(path) (missing, unreadable or over 1 MiB)")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `name=value` items (blank and `#` lines skipped).
    private func pairs(_ items: [String], _ what: String) throws(SwitchboardError) -> [String: String] {
        var result: [String: String] = [:]
        for raw in items {
            let item = raw.trimmingCharacters(in: .whitespaces)
            if item.isEmpty || item.hasPrefix("#") { continue }
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex, item.index(after: eq) != item.endIndex else {
                throw SwitchboardError(.invalidArgument, "\(what): expected name=value, got '\(item.prefix(40))'")
            }
            result[String(item[..<eq])] = String(item[item.index(after: eq)...])
        }
        return result
    }
}
