import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardWorker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: hold calls, carry their audio through a handler, report load by heartbeat.")

    @OptionGroup var cluster: ClusterOptions

    @Option(help: "Worker id, unique in the cluster: letters, digits, '-', '_' (env SWITCHBOARD_ID).")
    var id: String = Settings.string("id", "worker-\(Identifiers.random(bytes: 3))")
    @Option(help: "Region this worker runs in.")
    var region: String = Settings.string("region", "local")
    @Option(help: "Zone this worker runs in.")
    var zone: String = Settings.string("zone", "local-a")
    @Option(help: "Software version of this worker (what deploys select on).")
    var version: String = Settings.string("version", SwitchboardVersion.current)
    @Option(help: "Calls held at most at once.")
    var capacity: Int = Settings.int("capacity", 10)
    @Option(help: "Call handler: \(BuiltinHandlers.names.joined(separator: ", ")).")
    var handler: String = Settings.string("handler", "echo")
    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between heartbeats.")
    var heartbeatInterval: Double = Settings.double("heartbeat-interval", 1)
    @Option(name: .customLong("max-call-duration"), help: "Seconds after which a call is ended.")
    var maxCallDuration: Double = Settings.double("max-call-duration", 3600)
    @Option(name: .customLong("media-timeout"), help: "End a call whose caller sends no audio for this many seconds (0: never).")
    var mediaTimeout: Double = Settings.double("media-timeout", 60)
    @Option(name: .customLong("cpu-source"),
            help: "Whose CPU heartbeats report: auto (the cgroup quota's, else the machine's), machine, or process (this process alone, for several workers on one machine).")
    var cpuSource: String = Settings.string("cpu-source", "auto")
    @Option(name: .customLong("synthetic-cpu-load"), help: "For load tests: burn this share of one core (0-1).")
    var syntheticCPULoad: Double = Settings.double("synthetic-cpu-load", 0)
    @Option(name: .customLong("lease-time"), help: "Seconds a tenant's live-call lease lasts (the routers' setting); renewed every third of it.")
    var leaseTime: Double = Settings.double("lease-time", 30)

    @Option(name: .customLong("drain-deadline"), help: "SIGTERM drains the worker: seconds its calls have to end by themselves before the rest move.")
    var drainDeadline: Double = Settings.double("drain-deadline", 300)
    @Option(name: .customLong("drain-at-deadline"), help: "What happens to calls still running at the drain deadline: migrate or end.")
    var drainAtDeadline: String = Settings.string("drain-at-deadline", "migrate")
    @Option(name: .customLong("checkpoint-interval"), help: "Seconds between checkpoints of a call's changed state.")
    var checkpointInterval: Double = Settings.double("checkpoint-interval", 1)
    @Option(name: .customLong("when-drained"),
            help: "When a drain SIGTERM did not start has no calls left: exit, or stay up taking none (under a Kubernetes Deployment, which would restart an exit).")
    var whenDrained: String = Settings.string("when-drained", "exit")
    @Option(name: .customLong("http-host"), help: "Address of /healthz, /readyz and /metrics.")
    var httpHost: String = Settings.string("http-host", "127.0.0.1")
    @Option(name: .customLong("http-port"), help: "Port of /healthz, /readyz and /metrics (0 picks a free one; not served unless set; the container image sets 8080).")
    var httpPort: Int? = Settings.int("http-port")

    func run() async throws {
        Runtime.followParentIfAsked()
        let logger = Runtime.logger("switchboard.worker", level: cluster.logLevel)
        var config = WorkerConfiguration(id: id, version: version, region: region, zone: zone, capacity: capacity,
                                         subjects: try cluster.subjects(), keys: try cluster.keys())
        config.syntheticCPULoad = syntheticCPULoad
        let callHandler: any CallHandler
        do throws(SwitchboardError) {
            config.heartbeatInterval = try seconds(heartbeatInterval, "heartbeat interval", max: 3600)
            config.maxCallDuration = try seconds(maxCallDuration, "max call duration")
            config.mediaTimeout = mediaTimeout == 0 ? nil : try seconds(mediaTimeout, "media timeout")
            config.leaseTime = try seconds(Swift.max(1, leaseTime), "lease time", max: 3600)
            guard let source = CPUSource(rawValue: cpuSource) else {
                throw SwitchboardError(.invalidArgument, "cpu source must be one of \(CPUSource.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            config.cpuSource = source
            try DrainRequest.checkDeadline(seconds: drainDeadline)
            config.drainDeadline = try seconds(drainDeadline, "drain deadline", allowZero: true)
            guard let atDeadline = AtDeadline(rawValue: drainAtDeadline) else {
                throw SwitchboardError(.invalidArgument, "drain-at-deadline must be migrate or end, got '\(drainAtDeadline)'")
            }
            config.drainAtDeadline = atDeadline
            config.checkpointInterval = try seconds(checkpointInterval, "checkpoint interval", max: 3600)
            guard let whenDrained = WhenDrained(rawValue: whenDrained) else {
                throw SwitchboardError(.invalidArgument, "when-drained must be exit or stay, got '\(whenDrained)'")
            }
            config.whenDrained = whenDrained
            if let httpPort {
                guard (0...65535).contains(httpPort) else { throw SwitchboardError(.invalidArgument, "http-port must be 0-65535, got \(httpPort)") }
            }
            config.httpHost = httpHost
            config.httpPort = httpPort
            try config.validate()
            callHandler = try BuiltinHandlers.named(handler)
        } catch {
            throw ExitCodes.fail(error)
        }
        try await Runtime.serve(cluster, name: id, role: .worker, logger: logger) { nats, redis in
            let worker = try Worker(configuration: config, nats: nats, redis: redis, handler: callHandler, logger: logger)
            say("worker \(id) running (version \(version), \(region)/\(zone), capacity \(capacity), handler \(handler))")
            guard let port = config.httpPort else { return [worker] }
            let host = config.httpHost
            let http = WorkerHTTP.application(for: worker, host: host, port: port) { port in
                say("worker \(id) serving /healthz, /readyz and /metrics on http://\(host):\(port)")
            }
            // Services stop in reverse order: the worker drains first while probes and metrics still answer;
            // the HTTP server stops once the worker is done.
            return [http, worker]
        }
    }
}
