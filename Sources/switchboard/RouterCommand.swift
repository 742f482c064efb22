import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardObservability
import SwitchboardNATS
import SwitchboardRouter

struct RouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Run a router: place calls on workers; serve the HTTP API and the NATS route subject.")

    @OptionGroup var cluster: ClusterOptions

    @Option(help: "Router id, unique in the cluster (env SWITCHBOARD_ID).")
    var id: String = Settings.string("id", "router-\(Identifiers.random(bytes: 3))")
    @Option(name: .customLong("http-host"), help: "HTTP API address.")
    var httpHost: String = Settings.string("http-host", "127.0.0.1")
    @Option(name: .customLong("http-port"), help: "HTTP API port (0 picks a free one).")
    var httpPort: Int = Settings.int("http-port", 8080)
    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between worker heartbeats.")
    var heartbeatInterval: Double = Settings.double("heartbeat-interval", 1)
    @Option(name: .customLong("route-deadline"), help: "Seconds allowed for one route request, all offers included.")
    var routeDeadline: Double = Settings.double("route-deadline", 2)
    @Option(name: .customLong("offer-timeout"), help: "Seconds one worker has to answer an offer.")
    var offerTimeout: Double = Settings.double("offer-timeout", 0.5)
    @Option(name: .customLong("max-offers"), help: "Workers offered one call at most.")
    var maxOffers: Int = Settings.int("max-offers", 3)
    @Option(help: "Placement strategy: spread (power of d choices) or binpack (fill the fullest worker that fits).")
    var strategy: String = Settings.string("strategy", "spread")
    @Option(help: "Workers sampled per decision under spread (the d of power of d choices).")
    var choices: Int = Settings.int("choices", 4)
    @Option(name: .customLong("cpu-ceiling"), help: "CPU share past which a worker's score drops steeply.")
    var cpuCeiling: Double = Settings.double("cpu-ceiling", 0.8)
    @Option(name: .customLong("weights"), help: "Score weights as cpu,memory,slots,locality[,gpu] (gpu: 1 when not given; it counts only for workers that report a GPU).")
    var weights: String = Settings.string("weights", "1,0.5,1,1")
    @Option(name: .customLong("suspect-after"), help: "Silent heartbeat intervals before a worker is suspect (and pinged).")
    var suspectAfter: Int = Settings.int("suspect-after", 2)
    @Option(name: .customLong("dead-after"), help: "The detection time in intervals: after a stall or a reconnection this router judges no worker for this long.")
    var deadAfter: Int = Settings.int("dead-after", 3)
    @Option(name: .customLong("unreachable-share"), help: "Share of the fleet silent at once past which silent workers are unreachable (kept, not failed over), 0-1.")
    var unreachableShare: Double = Settings.double("unreachable-share", 0.5)
    @Option(name: .customLong("failover-window"), help: "Seconds a dead worker's call is offered again while no worker has room, before it is lost.")
    var failoverWindow: Double = Settings.double("failover-window", 30)
    @Option(help: "on: callers need a tenant's API key and routes are held to the tenant's limits; off: no keys, no limits.")
    var tenancy: String = Settings.string("tenancy", "off")
    @Option(name: .customLong("admin-key"), help: "A key operator endpoints take, named 'admin' in the audit (or SWITCHBOARD_ADMIN_KEY).")
    var adminKey: String?
    @Option(name: .customLong("admin-key-file"), help: "Operator keys, one name:key per line; the audit names who acted (env SWITCHBOARD_ADMIN_KEY_FILE).")
    var adminKeyFileFlag: String?
    var adminKeyFile: String? { adminKeyFileFlag ?? Settings.value("admin-key-file") }
    @Option(name: .customLong("media-signing-key"), help: "On a closed bus: the media signing key file from switchboard nats-config; each placement then carries a credential for its call's media alone.")
    var mediaSigningKeyFlag: String?
    var mediaSigningKey: String? { mediaSigningKeyFlag ?? Settings.value("media-signing-key") }
    @Option(name: .customLong("media-credential-ttl"), help: "Seconds a call's media credential lasts.")
    var mediaCredentialTTL: Double = Settings.double("media-credential-ttl", 4 * 3600)
    @Flag(name: .customLong("insecure-no-auth"), help: "Leave operator endpoints open to anyone (never on a network).")
    var insecureNoAuth = Settings.value("insecure-no-auth") == "true"
    @Option(name: .customLong("lease-time"), help: "Seconds a tenant's live-call lease lasts unless the worker renews it.")
    var leaseTime: Double = Settings.double("lease-time", 30)
    @Option(name: .customLong("tenant-label-cap"), help: "Tenants named in metric labels at most; the rest count as 'other'.")
    var tenantLabelCap: Int = Settings.int("tenant-label-cap", 50)
    @OptionGroup var timelines: TimelineOptions
    @Flag(name: .customLong("record-calls"), help: "Record calls unless their tenant's policy says not to (by gateways with --recordings-dir).")
    var recordCalls = Settings.value("record-calls") == "true"
    @Option(name: .customLong("recordings-dir"), help: "The recordings volume the gateways write: the router serves and deletes recordings from it.")
    var recordingsDir: String = Settings.string("recordings-dir", "")
    @Option(name: .customLong("trace-link"), help: "Where traces are looked at, with {trace_id} (https://tempo.example/trace/{trace_id}): call pages link each call's trace.")
    var traceLink: String = Settings.string("trace-link", "")
    @Option(name: .customLong("autoscale-target"), help: "Share of slots in use the exported switchboard_workers_desired aims for (0-1].")
    var autoscaleTarget: Double = Settings.double("autoscale-target", 0.7)

    /// The scheduler and liveness settings, checked.
    func schedulerSettings() throws(SwitchboardError) -> (Scheduler.Configuration, WorkerRegistry.Configuration) {
        guard let strategy = Scheduler.Strategy(rawValue: strategy), [.spread, .binpack].contains(strategy) else {
            throw SwitchboardError(.invalidArgument, "strategy must be spread or binpack, not '\(strategy)'")
        }
        let w = weights.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard w.count == 4 || w.count == 5 else {
            throw SwitchboardError(.invalidArgument, "weights must be four or five numbers: cpu,memory,slots,locality[,gpu]")
        }
        let scheduler = Scheduler.Configuration(strategy: strategy, choices: choices,
                                                weights: .init(cpu: w[0], memory: w[1], slots: w[2], locality: w[3], gpu: w.count == 5 ? w[4] : 1),
                                                cpuCeiling: cpuCeiling)
        try scheduler.validate()
        let interval = try seconds(heartbeatInterval, "heartbeat interval", max: 3600)
        guard (1...1000).contains(suspectAfter), deadAfter > suspectAfter, deadAfter <= 1000 else {
            throw SwitchboardError(.invalidArgument, "need 1 <= suspect-after < dead-after <= 1000")
        }
        guard unreachableShare.isFinite, unreachableShare > 0, unreachableShare <= 1 else {
            throw SwitchboardError(.invalidArgument, "unreachable share must be above 0 and at most 1, not \(unreachableShare)")
        }
        return (scheduler, WorkerRegistry.Configuration(heartbeatInterval: interval,
                                                         suspectAfter: suspectAfter, deadAfter: deadAfter,
                                                         unreachableShare: unreachableShare))
    }

    func run() async throws {
        Runtime.followParentIfAsked()
        let logger = Runtime.logger("switchboard.router", level: cluster.logLevel)
        var config = RouterConfiguration(id: id, subjects: try cluster.subjects(), keys: try cluster.keys())
        config.httpHost = httpHost
        config.httpPort = httpPort
        do throws(SwitchboardError) {
            (config.scheduler, config.registry) = try schedulerSettings()
            guard tenancy == "on" || tenancy == "off" else { throw SwitchboardError(.invalidArgument, "tenancy must be on or off") }
            config.tenancy = tenancy == "on"
            (config.adminKeys, config.insecureNoAuth) = try AdminKeys.resolve(file: adminKeyFile, key: adminKey ?? Settings.value("admin-key"),
                                                                                insecure: insecureNoAuth,
                                                                                routerID: id, httpHost: httpHost)
            guard leaseTime >= 1 else { throw SwitchboardError(.invalidArgument, "lease time must be at least 1 second") }
            config.leaseTime = try seconds(leaseTime, "lease time", max: 3600)
            guard tenantLabelCap >= 0 else { throw SwitchboardError(.invalidArgument, "tenant label cap must be 0 or more") }
            config.tenantLabelCap = tenantLabelCap
            (config.timelineRetention, config.timelineCap) = try timelines.checked()
            config.recordCalls = recordCalls
            config.recordingsDirectory = recordingsDir.isEmpty ? nil : recordingsDir
            if !traceLink.isEmpty {
                guard traceLink.contains("{trace_id}"), let url = URL(string: traceLink.replacingOccurrences(of: "{trace_id}", with: "x")),
                      url.scheme == "http" || url.scheme == "https"
                else { throw SwitchboardError(.invalidArgument, "--trace-link must be an http(s) URL with {trace_id}") }
                config.traceLink = traceLink
            }
            guard autoscaleTarget.isFinite, autoscaleTarget > 0, autoscaleTarget <= 1 else {
                throw SwitchboardError(.invalidArgument, "autoscale target must be above 0 and at most 1, not \(autoscaleTarget)")
            }
            config.autoscaleTarget = autoscaleTarget
            config.failover.window = try seconds(failoverWindow, "failover window", allowZero: true, max: 3600)
            config.mediaSigning = try mediaSigningKey.map { path throws(SwitchboardError) in try SigningKey.read(path, expected: .call) }
            config.mediaCredentialTTL = try seconds(mediaCredentialTTL, "media credential ttl", max: 7 * 24 * 3600)
            config.routeDeadline = try seconds(routeDeadline, "route deadline", max: 600)
            config.offerTimeout = try seconds(offerTimeout, "offer timeout", max: 600)
            guard (1...100).contains(maxOffers) else { throw SwitchboardError(.invalidArgument, "max offers must be 1-100, got \(maxOffers)") }
        } catch {
            throw ExitCodes.fail(error)
        }
        config.maxOffers = maxOffers
        let metrics = MetricsRegistry()
        let tracer = try Runtime.tracer(service: "switchboard-router", metrics: metrics, logger: logger)
        try await Runtime.serve(cluster, name: id, role: .router, logger: logger) { nats, redis in
            let router = Router(configuration: config, nats: nats, redis: redis, metrics: metrics, tracer: tracer, logger: logger)
            let http = RouterHTTP.application(for: router) { port in
                say("router \(id) listening on http://\(httpHost):\(port)")
            }
            return [router, http]
        }
    }
}
