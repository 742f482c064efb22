import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardRedis

/// Tenants, kept in the cluster's Redis (so this needs the operator's Redis URL, not a router).
struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Create, list, show, change, delete tenants and rotate their API keys (in the cluster's Redis).",
        subcommands: [Create.self, List.self, Show.self, SetLimits.self, Delete.self, RotateKey.self, Apply.self])

    struct Limits: ParsableArguments {
        @Option(name: .customLong("calls-per-second"), help: "New calls per second, sustained.")
        var callsPerSecond: Double?
        @Option(help: "New calls allowed at once after a quiet spell.")
        var burst: Int?
        @Option(name: .customLong("max-live-calls"), help: "Live calls at most, across every router.")
        var maxLiveCalls: Int?
        @Option(name: .customLong("region"), help: "A region the tenant's calls may use (repeatable; none: any).")
        var regions: [String] = []
        @Option(name: .customLong("when-redis-down"), help: "open (admit up to --local-cap per router) or closed (refuse).")
        var whenRedisDown: String?
        @Option(name: .customLong("local-cap"), help: "With --when-redis-down open: calls each router admits while Redis is down.")
        var localCap: Int?

        /// `base` with the options given applied.
        func apply(to base: TenantPolicy) throws(SwitchboardError) -> TenantPolicy {
            var policy = base
            if let callsPerSecond { policy.callsPerSecond = callsPerSecond }
            if let burst { policy.burst = burst }
            if let maxLiveCalls { policy.maxLiveCalls = maxLiveCalls }
            if !regions.isEmpty { policy.regions = regions }
            switch whenRedisDown {
            case nil: break
            case "closed": policy.whenRedisDown = .closed
            case "open": policy.whenRedisDown = .open(localCap: localCap ?? 0)
            case let other?: throw SwitchboardError(.invalidArgument, "--when-redis-down must be open or closed, not '\(other)'")
            }
            try policy.validate()
            return policy
        }
    }

    static func store(_ cluster: ClusterOptions) throws -> TenantStore {
        let redis = try RedisClient(configuration: cluster.redisConfiguration(),
                                    logger: Runtime.logger("switchboard.tenant", level: "warning"))
        return TenantStore(redis: redis, keys: try cluster.keys())
    }

    /// Runs `body` against the store; errors become one line and an exit code.
    static func run(_ cluster: ClusterOptions, _ body: (TenantStore) async throws -> Void) async throws {
        do {
            let store = try store(cluster)
            defer { store.redis.close() }
            try await body(store)
        } catch let error as SwitchboardError {
            throw ExitCodes.fail(error)
        }
    }

    static func describe(_ p: TenantPolicy) -> String {
        let down: String
        switch p.whenRedisDown {
        case .closed: down = "closed"
        case .open(let cap): down = "open (local cap \(cap))"
        }
        return "\(p.id): \(p.callsPerSecond) calls/s, burst \(p.burst), at most \(p.maxLiveCalls) live calls, regions "
            + (p.regions.isEmpty ? "any" : p.regions.joined(separator: ",")) + ", when Redis is down: \(down)"
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant and print its API key (shown once).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id: letters, digits, '-', '_'.") var id: String
        @OptionGroup var limits: Limits
        @Option(help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                let policy = try limits.apply(to: TenantPolicy(id: id, callsPerSecond: 10, burst: 20, maxLiveCalls: 100))
                let key = try await store.create(policy)
                print(output == .json ? jsonString(["id": id, "api_key": key]) : "\(TenantCommand.describe(policy))\napi key: \(key)  (shown once; only its hash is kept)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var cluster: ClusterOptions
        @Option(help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                let records = try await store.list()
                print(output == .json ? jsonString(records.map(\.policy)) : records.map { TenantCommand.describe($0.policy) }.joined(separator: "\n"))
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant's limits and how many keys it has.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id.") var id: String
        @Option(help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                let record = try await store.get(id)
                print(output == .json ? jsonString(record.policy) : "\(TenantCommand.describe(record.policy)); \(record.keyHashes.count) key(s)")
            }
        }
    }

    struct SetLimits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Change a tenant's limits (options not given stay as they are).")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id.") var id: String
        @OptionGroup var limits: Limits

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                let policy = try limits.apply(to: try await store.get(id).policy)
                try await store.update(policy)
                print(TenantCommand.describe(policy))
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a tenant; its keys stop working at once.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id.") var id: String

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                try await store.delete(id)
                print("deleted \(id)")
            }
        }
    }

    struct RotateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rotate-key", abstract: "Issue a new API key; the old ones stop working unless --keep-old.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id.") var id: String
        @Flag(name: .customLong("keep-old"), help: "Keep the old keys working (a handover); rotate again to retire them.")
        var keepOld = false

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                print("api key: \(try await store.rotateKey(id, keepOld: keepOld))  (shown once)")
            }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update tenants from a JSON file: an array of {id, calls_per_second, burst, max_live_calls, regions, when_redis_down, local_cap}.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "The file.") var file: String

        func run() async throws {
            let policies: [TenantPolicy]
            do {
                policies = try JSONDecoder().decode([TenantPolicy].self, from: Data(contentsOf: URL(fileURLWithPath: file)))
                for policy in policies { try policy.validate() }
            } catch let error as SwitchboardError {
                throw ExitCodes.fail(error)
            } catch {
                throw ExitCodes.fail(SwitchboardError(.invalidArgument, "cannot read tenants from \(file): \(error)"))
            }
            try await TenantCommand.run(cluster) { store in
                for policy in policies {
                    do {
                        let key = try await store.create(policy)
                        print("created \(policy.id): api key \(key)  (shown once)")
                    } catch let error as SwitchboardError where error.code == .conflict {
                        try await store.update(policy)
                        print("updated \(policy.id)")
                    }
                }
            }
        }
    }
}
