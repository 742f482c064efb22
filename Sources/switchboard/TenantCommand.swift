import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardRedis

/// Tenants, kept in the cluster's Redis (so this needs the operator's Redis URL, not a router).
struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Create, list, show, change, delete tenants, rotate their API keys and show their usage (in the cluster's Redis).",
        subcommands: [Create.self, List.self, Show.self, SetLimits.self, Delete.self, RotateKey.self, Apply.self, Usage.self, Purge.self])

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
        @Option(name: .customLong("price-per-minute"), help: "Price of a call minute, for the cost shown with usage (0: free; negative: none).")
        var pricePerMinute: Double?
        @Option(name: .customLong("monthly-minutes"), help: "Call minutes a month (UTC) at most; new calls are refused beyond (0: no limit).")
        var monthlyMinutes: Int?
        @Option(name: .customLong("monthly-spend"), help: "Spending a month at most, at --price-per-minute (0: no limit).")
        var monthlySpend: Double?
        @Option(help: "Record the tenant's calls: on, off, or default (the router's --record-calls).")
        var record: String?

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
            if let pricePerMinute { policy.pricePerMinute = pricePerMinute < 0 ? nil : pricePerMinute }
            if let monthlyMinutes { policy.monthlyMinutes = monthlyMinutes == 0 ? nil : monthlyMinutes }
            if let monthlySpend { policy.monthlySpend = monthlySpend == 0 ? nil : monthlySpend }
            switch record {
            case nil: break
            case "on": policy.record = true
            case "off": policy.record = false
            case "default": policy.record = nil
            case let other?: throw SwitchboardError(.invalidArgument, "--record must be on, off or default, not '\(other)'")
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
        var usage = ""
        if let price = p.pricePerMinute { usage += ", \(price) a minute" }
        if let minutes = p.monthlyMinutes { usage += ", at most \(minutes) minutes a month" }
        if let spend = p.monthlySpend { usage += ", at most \(spend) spent a month" }
        if let record = p.record { usage += record ? ", calls recorded" : ", calls not recorded" }
        return "\(p.id): \(p.callsPerSecond) calls/s, burst \(p.burst), at most \(p.maxLiveCalls) live calls, regions "
            + (p.regions.isEmpty ? "any" : p.regions.joined(separator: ",")) + ", when Redis is down: \(down)" + usage
    }

    /// A month's usage as lines of text.
    static func describe(_ r: UsageReport) -> String {
        func number(_ x: Double) -> String { String(format: "%.2f", x) }
        var lines = ["\(r.tenant), \(r.month) (UTC): \(r.calls) calls, \(number(r.minutes)) minutes (\(number(r.callSeconds)) s)"
                     + (r.cost.map { ", cost \(number($0))" } ?? "")
                     + (r.agentCPUSeconds > 0 ? ", agent CPU \(number(r.agentCPUSeconds)) s" : "")]
        if let limit = r.monthlyMinutes { lines.append("limit: \(limit) minutes a month") }
        if let spend = r.monthlySpend { lines.append("limit: \(number(spend)) spent a month") }
        if r.limitReached { lines.append("the limit is reached: new calls are refused (usage_limit) until the month turns or it is raised") }
        for day in r.days { lines.append("  \(day.day)  \(number(day.callSeconds / 60)) minutes") }
        return lines.joined(separator: "\n")
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

    struct Usage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a tenant's call minutes, calls and cost in a month (UTC), by day.")
        @OptionGroup var cluster: ClusterOptions
        @Argument(help: "Tenant id.") var id: String
        @Option(help: "The month, YYYY-MM (default: this one).") var month: String?
        @Option(help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            try await TenantCommand.run(cluster) { store in
                let month = try month.map { text throws(SwitchboardError) in try UsagePeriod.validMonth(text) } ?? UsagePeriod.month(WallClock.system.unixMillis)
                let policy = try? await store.get(id).policy  // a deleted tenant's months can still be read
                let limits = TenantLimits(redis: store.redis, keys: store.keys)
                let report = UsageReport(try await limits.usage(id, month: month), policy: policy)
                print(output == .json ? jsonString(report) : TenantCommand.describe(report))
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every recording of a tenant, through a router (admin key; audited).")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Tenant id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.delete("/v1/tenants/\(id)/recordings")
                let gone = try JSONDecoder().decode(RecordingsDeletedView.self, from: data)
                return (data, "deleted the recordings of \(gone.calls.count) calls of \(gone.tenant) (\(gone.bytes) bytes)")
            }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update tenants from a JSON file: an array of {id, calls_per_second, burst, max_live_calls, regions, when_redis_down, local_cap, price_per_minute, monthly_minutes, monthly_spend, record}.")
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
