import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardObservability
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
    @Option(help: "Built-in call handler when no agent is set: \(BuiltinHandlers.names.joined(separator: ", ")).")
    var handler: String = Settings.string("handler", "echo")
    @Option(name: .customLong("agent-url"), help: "Host each call on this agent server (ws://host:port/path), e.g. a Pipecat FastAPI app speaking Twilio Media Streams (docs/agents.md).")
    var agentURL: String = Settings.string("agent-url", "")
    @Option(name: .customLong("agent-command"), help: "Host each call on its own agent process, started with this command ({port} and $SWITCHBOARD_AGENT_PORT: the port it must listen on).")
    var agentCommand: String = Settings.string("agent-command", "")
    @Option(name: .customLong("agent-pool"), help: "Agent processes kept started and ready ahead of calls (0: start one when a call comes).")
    var agentPool: Int = Settings.int("agent-pool", 2)
    @Option(name: .customLong("agent-path"), help: "WebSocket path asked for on an agent process's port.")
    var agentPath: String = Settings.string("agent-path", "/ws")
    @Option(name: .customLong("agent-env-file"), help: "KEY=VALUE lines given to every agent process (its API keys, TWILIO_* dummies): agents get this, the variables of --agent-env-pass and PATH, HOME, LANG, TZ, never the worker's own environment.")
    var agentEnvFile: String = Settings.string("agent-env-file", "")
    @Option(name: .customLong("agent-env-pass"), help: "Names of the worker's environment variables passed on to agent processes, comma-separated.")
    var agentEnvPass: String = Settings.string("agent-env-pass", "")
    @Option(name: .customLong("agent-start-timeout"), help: "Seconds an agent process has to listen on its port.")
    var agentStartTimeout: Double = Settings.double("agent-start-timeout", 30)
    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between heartbeats.")
    var heartbeatInterval: Double = Settings.double("heartbeat-interval", 1)
    @Option(name: .customLong("max-call-duration"), help: "Seconds after which a call is ended.")
    var maxCallDuration: Double = Settings.double("max-call-duration", 3600)
    @Option(name: .customLong("media-timeout"), help: "End a call whose caller sends no audio for this many seconds (0: never).")
    var mediaTimeout: Double = Settings.double("media-timeout", 60)
    @Option(name: .customLong("cpu-source"),
            help: "Whose CPU heartbeats report: auto (the cgroup quota's, else the machine's), machine, or process (this process alone, for several workers on one machine).")
    var cpuSource: String = Settings.string("cpu-source", "auto")
    @Option(name: .customLong("gpu-source"),
            help: "Where heartbeats read the GPU's load (the scheduler weighs free GPU like free CPU): none, nvml (NVIDIA's library, loaded at run time), file:PATH or command:CMD (JSON {\"utilization\",\"memory_used_bytes\",\"memory_total_bytes\"} or nvidia-smi's csv,noheader,nounits of utilization.gpu,memory.used,memory.total).")
    var gpuSource: String = Settings.string("gpu-source", "none")
    @Option(name: .customLong("synthetic-cpu-load"), help: "For load tests: burn this share of one core (0-1).")
    var syntheticCPULoad: Double = Settings.double("synthetic-cpu-load", 0)
    @Option(name: .customLong("lease-time"), help: "Seconds a tenant's live-call lease lasts (the routers' setting); renewed every third of it.")
    var leaseTime: Double = Settings.double("lease-time", 30)
    @Option(name: .customLong("tenant-label-cap"), help: "Tenants named in metric labels at most; the rest count as 'other'.")
    var tenantLabelCap: Int = Settings.int("tenant-label-cap", 50)
    @OptionGroup var timelines: TimelineOptions

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
    var httpPortFlag: Int?
    var httpPort: Int? { httpPortFlag ?? Settings.int("http-port") }

    func run() async throws {
        Runtime.followParentIfAsked()
        let logger = Runtime.logger("switchboard.worker", level: cluster.logLevel)
        var config = WorkerConfiguration(id: id, version: version, region: region, zone: zone, capacity: capacity,
                                         subjects: try cluster.subjects(), keys: try cluster.keys())
        config.syntheticCPULoad = syntheticCPULoad
        let callHandler: any CallHandler
        let metrics = MetricsRegistry()
        do throws(SwitchboardError) {
            config.heartbeatInterval = try seconds(heartbeatInterval, "heartbeat interval", max: 3600)
            config.maxCallDuration = try seconds(maxCallDuration, "max call duration")
            config.mediaTimeout = mediaTimeout == 0 ? nil : try seconds(mediaTimeout, "media timeout")
            config.leaseTime = try seconds(Swift.max(1, leaseTime), "lease time", max: 3600)
            guard tenantLabelCap >= 0 else { throw SwitchboardError(.invalidArgument, "tenant label cap must be 0 or more") }
            config.tenantLabelCap = tenantLabelCap
            (config.timelineRetention, config.timelineCap) = try timelines.checked()
            guard let source = CPUSource(rawValue: cpuSource) else {
                throw SwitchboardError(.invalidArgument, "cpu source must be one of \(CPUSource.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            config.cpuSource = source
            config.gpuSource = try GPUSource(parsing: gpuSource)
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
            if let agent = try agentSettings() {
                callHandler = AgentBridge(settings: agent, metrics: metrics, logger: logger)
            } else {
                callHandler = try BuiltinHandlers.named(handler)
            }
        } catch {
            throw ExitCodes.fail(error)
        }
        let tracer = try Runtime.tracer(service: "switchboard-worker", metrics: metrics, logger: logger)
        try await Runtime.serve(cluster, name: id, role: .worker, logger: logger) { nats, redis in
            let worker = try Worker(configuration: config, nats: nats, redis: redis, handler: callHandler, metrics: metrics,
                                    tracer: tracer, logger: logger)
            say("worker \(id) running (version \(version), \(region)/\(zone), capacity \(capacity), \(agentDescription))")
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

    private var agentDescription: String {
        if !agentURL.isEmpty { return "agent server \(agentURL)" }
        if !agentCommand.isEmpty { return "an agent process per call, \(agentPool) kept warm" }
        return "handler \(handler)"
    }

    /// The agent settings the flags ask for; nil for a built-in handler.
    private func agentSettings() throws(SwitchboardError) -> AgentSettings? {
        // Empty: not set (an option with no default is an optional, which argument-parser deprecates with one).
        switch (agentURL.isEmpty ? nil : agentURL, agentCommand.isEmpty ? nil : agentCommand) {
        case (nil, nil):
            return nil
        case (let url?, nil):
            return AgentSettings(source: .server(try AgentAddress(url: url)))
        case (nil, let command?):
            var environment: [String: String] = [:]
            let inherited = ProcessInfo.processInfo.environment
            for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] { environment[name] = inherited[name] }
            for name in agentEnvPass.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
                guard let value = inherited[name] else { throw SwitchboardError(.invalidArgument, "--agent-env-pass names \(name), which is not set") }
                environment[name] = value
            }
            if !agentEnvFile.isEmpty { environment.merge(try EnvFile.read(agentEnvFile)) { _, fromFile in fromFile } }
            let settings = AgentCommand(command: command, poolSize: agentPool, path: agentPath, environment: environment,
                                        startTimeout: try seconds(agentStartTimeout, "agent start timeout", max: 600))
            try settings.validate()
            return AgentSettings(source: .processes(settings))
        case (_?, _?):
            throw SwitchboardError(.invalidArgument, "give --agent-url or --agent-command, not both")
        }
    }
}

/// A file of `KEY=VALUE` lines (blank lines and `#` comments skipped; a value may be quoted).
enum EnvFile {
    static func read(_ path: String) throws(SwitchboardError) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 1 << 20 else {
            throw SwitchboardError(.invalidArgument, "cannot read agent env file \(path) (missing, unreadable or over 1 MiB)")
        }
        var result: [String: String] = [:]
        for (number, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let body = line.hasPrefix("export ") ? String(line.dropFirst(7)) : line
            guard let equals = body.firstIndex(of: "=") else {
                throw SwitchboardError(.invalidArgument, "agent env file \(path) line \(number + 1) has no '='")
            }
            let key = body[..<equals].trimmingCharacters(in: .whitespaces)
            var value = body[body.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty, key.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }) else {
                throw SwitchboardError(.invalidArgument, "agent env file \(path) line \(number + 1) has a bad name")
            }
            if value.count >= 2, let first = value.first, first == value.last, first == "\"" || first == "'" {
                value = String(value.dropFirst().dropLast())
            }
            result[key] = value
        }
        return result
    }
}
