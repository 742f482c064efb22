import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis

/// Where option defaults come from when a flag is not given: the environment (`SWITCHBOARD_<OPTION>`, e.g.
/// `SWITCHBOARD_NATS_URL`), then a JSON config file (`--config FILE` or `SWITCHBOARD_CONFIG`) whose keys are the
/// long option names (`{"nats-url": "nats://10.0.0.5:4222", "capacity": 50}`), then the built-in default.
/// A flag on the command line always wins.
enum Settings {
    static let environment = ProcessInfo.processInfo.environment

    /// The config file, read once. A file that cannot be read or parsed stops the program with one clear line.
    static let file: [String: String] = {
        let args = CommandLine.arguments
        var path = environment["SWITCHBOARD_CONFIG"]
        if let i = args.firstIndex(of: "--config"), i + 1 < args.count { path = args[i + 1] }
        if let arg = args.first(where: { $0.hasPrefix("--config=") }) { path = String(arg.dropFirst("--config=".count)) }
        guard let path, !path.isEmpty else { return [:] }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            fail("cannot read config file \(path): \(error.localizedDescription)")
        }
        do {
            return try ConfigFile.parse(data)
        } catch {
            fail("cannot read config file \(path): \((error as? SwitchboardError)?.message ?? "\(error)")")
        }
    }()

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        exit(64)
    }

    /// The value for option `name` from the environment or the config file, if either has it.
    static func value(_ name: String, alsoEnv: String? = nil) -> String? {
        let key = "SWITCHBOARD_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
        return environment[key] ?? alsoEnv.flatMap { environment[$0] } ?? file[name]
    }

    static func string(_ name: String, _ fallback: String, alsoEnv: String? = nil) -> String {
        value(name, alsoEnv: alsoEnv) ?? fallback
    }

    static func int(_ name: String, _ fallback: Int) -> Int { int(name) ?? fallback }

    /// The setting as a whole number; nil when it is not set.
    static func int(_ name: String) -> Int? {
        guard let text = value(name) else { return nil }
        guard let number = Int(text) else { fail("\(name) must be a whole number, got '\(text)'") }
        return number
    }

    static func double(_ name: String, _ fallback: Double) -> Double {
        guard let text = value(name) else { return fallback }
        guard let number = Double(text) else { fail("\(name) must be a number, got '\(text)'") }
        return number
    }
}

/// A number of seconds from a flag, the environment or a file, as a duration: finite, above 0 (or 0 with
/// `allowZero`), at most `max` (a duration from a NaN or an infinity would stop the process).
func seconds(_ value: Double, _ name: String, allowZero: Bool = false, max: Double = 10_000_000) throws(SwitchboardError) -> Duration {
    guard value.isFinite, allowZero ? value >= 0 : value > 0, value <= max else {
        throw SwitchboardError(.invalidArgument, "\(name) must be a number of seconds \(allowZero ? ">=" : ">") 0 and at most \(Int(max)), got \(value)")
    }
    return .milliseconds(Int64((value * 1000).rounded()))
}

/// Options every cluster command shares.
struct ClusterOptions: ParsableArguments {
    // The URLs may carry a password (from the environment or a config file): no default is shown in --help,
    // where the environment's value would appear; they are resolved when used.
    @Option(name: .customLong("nats-url"), help: "NATS server URL(s), comma-separated (default nats://127.0.0.1:4222; env SWITCHBOARD_NATS_URL or NATS_URL). A password in it: percent-encode '/' and '@'.")
    var natsURLOption: String?
    var natsURL: String { natsURLOption ?? Settings.string("nats-url", "nats://127.0.0.1:4222", alsoEnv: "NATS_URL") }

    @Option(name: .customLong("redis-url"), help: "Redis URL, redis://[:password@]host:port[/db], or redis-sentinel://host1:26379,host2:26379/<primary>[/db] (default redis://127.0.0.1:6379; env SWITCHBOARD_REDIS_URL or REDIS_URL).")
    var redisURLOption: String?
    var redisURL: String { redisURLOption ?? Settings.string("redis-url", "redis://127.0.0.1:6379", alsoEnv: "REDIS_URL") }

    @Option(help: "Subject prefix of the cluster (env SWITCHBOARD_PREFIX).")
    var prefix: String = Settings.string("prefix", "sb")

    @Option(name: .customLong("key-prefix"), help: "Redis key prefix of the cluster (env SWITCHBOARD_KEY_PREFIX).")
    var keyPrefix: String = Settings.string("key-prefix", "sb")

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = Settings.string("log-level", "info")

    @Option(help: "JSON config file whose keys are option names (env SWITCHBOARD_CONFIG).")
    var config: String?

    @OptionGroup var nats: NATSAuthOptions
    @OptionGroup var redis: RedisAuthOptions

    /// How to reach Redis: the URL with the password and Sentinel options applied.
    func redisConfiguration() throws(SwitchboardError) -> RedisConfiguration { try redis.configuration(url: redisURL) }

    var natsServers: [String] { natsURL.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    /// How to reach NATS as `role`: servers, credentials, TLS, and the role's reply inbox.
    func natsConfiguration(name: String, role: BusRole) throws(SwitchboardError) -> NATSConfiguration {
        var config = NATSConfiguration(servers: natsServers, name: name)
        config.inboxPrefix = role.inboxPrefix(member: name)  // a worker's replies under its own id
        try nats.apply(to: &config)
        return config
    }

    func subjects() throws -> Subjects { try Subjects(prefix: prefix) }
    func keys() throws -> RedisKeys { try RedisKeys(prefix: keyPrefix) }
}

/// NATS credentials and TLS, each from a flag, the environment (`SWITCHBOARD_NATS_CREDS`...) or the config file.
/// (Each `xFlag` is the flag alone; `x` adds the environment and the config file, read when asked.)
/// Secrets come from files or the environment; none is shown in `--help` or written to a log.
struct NATSAuthOptions: ParsableArguments {
    @Option(name: .customLong("nats-creds"), help: "NATS credentials file (user JWT and NKey seed), e.g. from switchboard nats-config.")
    var credsFlag: String?
    var creds: String? { credsFlag ?? Settings.value("nats-creds") }
    @Option(name: .customLong("nats-nkey"), help: "File with an NKey seed (SU...), for servers that list users by NKey.")
    var nkeyFlag: String?
    var nkey: String? { nkeyFlag ?? Settings.value("nats-nkey") }
    @Option(name: .customLong("nats-user"), help: "NATS user name (its password from --nats-password-file or SWITCHBOARD_NATS_PASSWORD).")
    var userFlag: String?
    var user: String? { userFlag ?? Settings.value("nats-user") }
    @Option(name: .customLong("nats-password-file"), help: "File holding the NATS password.")
    var passwordFileFlag: String?
    var passwordFile: String? { passwordFileFlag ?? Settings.value("nats-password-file") }
    @Option(name: .customLong("nats-token-file"), help: "File holding a NATS token (or SWITCHBOARD_NATS_TOKEN).")
    var tokenFileFlag: String?
    var tokenFile: String? { tokenFileFlag ?? Settings.value("nats-token-file") }
    @Option(name: .customLong("nats-tls-ca"), help: "CA bundle that signed the NATS server's certificate (turns TLS on).")
    var tlsCAFlag: String?
    var tlsCA: String? { tlsCAFlag ?? Settings.value("nats-tls-ca") }
    @Option(name: .customLong("nats-tls-cert"), help: "Client certificate for NATS servers that verify clients (with --nats-tls-key).")
    var tlsCertFlag: String?
    var tlsCert: String? { tlsCertFlag ?? Settings.value("nats-tls-cert") }
    @Option(name: .customLong("nats-tls-key"), help: "The client certificate's key.")
    var tlsKeyFlag: String?
    var tlsKey: String? { tlsKeyFlag ?? Settings.value("nats-tls-key") }

    func apply(to config: inout NATSConfiguration) throws(SwitchboardError) {
        config.credentialsFile = creds
        config.nkeySeedFile = nkey
        config.user = user
        config.password = try secret(file: passwordFile, env: "SWITCHBOARD_NATS_PASSWORD", "NATS password")
        config.token = try secret(file: tokenFile, env: "SWITCHBOARD_NATS_TOKEN", "NATS token")
        if tlsCA != nil || tlsCert != nil || tlsKey != nil || config.servers.contains(where: { $0.hasPrefix("tls://") }) {
            config.tls = .init(caFile: tlsCA, certificateFile: tlsCert, keyFile: tlsKey)
        }
    }
}

/// Redis credentials and Sentinel settings. The password may be in the URL, but a file or the environment
/// keeps it out of process listings and manifests.
struct RedisAuthOptions: ParsableArguments {
    @Option(name: .customLong("redis-password-file"), help: "File holding the Redis password (or SWITCHBOARD_REDIS_PASSWORD); wins over one in the URL.")
    var passwordFileFlag: String?
    var passwordFile: String? { passwordFileFlag ?? Settings.value("redis-password-file") }
    @Option(name: .customLong("redis-sentinel-password-file"), help: "File holding the Sentinels' own password (or SWITCHBOARD_REDIS_SENTINEL_PASSWORD).")
    var sentinelPasswordFileFlag: String?
    var sentinelPasswordFile: String? { sentinelPasswordFileFlag ?? Settings.value("redis-sentinel-password-file") }
    @Option(name: .customLong("redis-replicas-to-ack"),
            help: "Replicas that must hold a write before it is done (WAIT); default 1 behind Sentinels (a failover loses no write that was confirmed), else 0.")
    var replicasToAckFlag: Int?
    var replicasToAck: Int? { replicasToAckFlag ?? Settings.int("redis-replicas-to-ack") }

    func configuration(url: String) throws(SwitchboardError) -> RedisConfiguration {
        var config = try RedisConfiguration(url: url)
        if let password = try secret(file: passwordFile, env: "SWITCHBOARD_REDIS_PASSWORD", "Redis password") { config.password = password }
        if let password = try secret(file: sentinelPasswordFile, env: "SWITCHBOARD_REDIS_SENTINEL_PASSWORD", "Redis Sentinel password") {
            guard config.sentinel != nil else {
                throw SwitchboardError(.invalidArgument, "a Sentinel password needs a redis-sentinel:// URL")
            }
            config.sentinel?.password = password
        }
        if let replicasToAck { config.replicasToAck = replicasToAck }  // its range: RedisClient.init validates
        return config
    }
}

/// A secret from a file (trimmed), else from the environment variable; nil when neither has one.
func secret(file: String?, env: String, _ what: String) throws(SwitchboardError) -> String? {
    if let file {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw SwitchboardError(.invalidArgument, "cannot read the \(what) file \(file)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    return Settings.environment[env].flatMap { $0.isEmpty ? nil : $0 }
}

/// Where the HTTP API of a router is, for the operator commands.
struct RouterAddress: ParsableArguments {
    @Option(name: .customLong("router-url"), help: "A router's HTTP API (env SWITCHBOARD_ROUTER_URL).")
    var routerURL: String = Settings.string("router-url", "http://127.0.0.1:8080")

    @Option(name: .customLong("api-key"), help: "An admin key for operator commands, or a tenant's key for calls (or SWITCHBOARD_API_KEY).")
    var apiKey: String?

    @Option(name: .customLong("api-key-file"), help: "A file with the key (a router's name:key admin key file: its first key) (env SWITCHBOARD_API_KEY_FILE).")
    var apiKeyFileFlag: String?
    var apiKeyFile: String? { apiKeyFileFlag ?? Settings.value("api-key-file") }

    @Option(help: "Output format: text or json.")
    var output: OutputFormat = .text

    var client: APIClient {
        // The key from the environment is read here, not as the option's default: a default shows in --help.
        APIClient(base: routerURL, key: (apiKey ?? Settings.value("api-key")).flatMap { $0.isEmpty ? nil : $0 }
                  ?? apiKeyFile.flatMap(Self.firstKey))
    }

    /// The key in a key file: its first `name:key` line's key, or its first line as it is.
    static func firstKey(inFile path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { Settings.fail("cannot read the key file \(path)") }
        let line = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty && !$0.hasPrefix("#") }
        guard let line else { Settings.fail("the key file \(path) holds no key") }
        if let colon = line.firstIndex(of: ":"), !line.hasPrefix("sbk_") { return String(line[line.index(after: colon)...]) }
        return line
    }
}

/// How long calls' timelines are kept and how many events each holds: routers, workers and gateways take the same.
struct TimelineOptions: ParsableArguments {
    @Option(name: .customLong("timeline-retention"), help: "Seconds a call's timeline is kept after its last event.")
    var retention: Double = Settings.double("timeline-retention", 7 * 86_400)
    @Option(name: .customLong("timeline-cap"), help: "Events a call's timeline holds at most (its end always gets in); the rest are counted.")
    var cap: Int = Settings.int("timeline-cap", 2_000)

    /// The retention and the cap, checked.
    func checked() throws(SwitchboardError) -> (retention: Duration, cap: Int) {
        guard (10...1_000_000).contains(cap) else { throw SwitchboardError(.invalidArgument, "timeline cap must be 10-1000000, not \(cap)") }
        return (try seconds(retention, "timeline retention", max: 400 * 86_400), cap)
    }
}
