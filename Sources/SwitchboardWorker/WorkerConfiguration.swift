import SwitchboardCore

/// A worker's settings. The executable fills them from flags, environment and a config file.
public struct WorkerConfiguration: Sendable {
    /// Unique in the cluster; used in subjects, so letters, digits, '-' and '_'.
    public var id: String
    /// The software version this worker runs (what deploys select on).
    public var version: String
    public var region: String
    public var zone: String
    /// Calls held at most at once.
    public var capacity: Int
    public var subjects: Subjects
    public var keys: RedisKeys
    public var heartbeatInterval: Duration = .seconds(1)
    /// Heartbeats go out on the interval and at once on a change routers place by (an accepted call, full or not
    /// full, a drain); never more than one per this spacing.
    public var heartbeatSpacing: Duration = .milliseconds(50)
    /// A call still running after this long is ended (reason `max_duration`).
    public var maxCallDuration: Duration = .seconds(3600)
    /// A call whose caller sends no audio for this long is ended (reason `no_media`), so a placement nobody
    /// uses (or a forged one) cannot hold a slot for the maximum duration. Time cut off from NATS or frozen
    /// does not count. Nil: never.
    public var mediaTimeout: Duration? = .seconds(60)
    /// How long an ended call's record stays in Redis.
    public var endedCallRetention: Duration = .seconds(24 * 3600)
    /// How long a call's timeline is kept after its last event, and how many events it holds at most.
    public var timelineRetention: Duration = .seconds(7 * 86_400)
    public var timelineCap = 2_000
    /// Sample rate of the audio handlers see and send.
    public var sampleRate = 48_000
    /// Opus bitrate of the audio the worker sends.
    public var bitrate = 24_000
    /// Tenants' live-call leases: renewed every third of this while the call runs (routers grant the same).
    public var leaseTime: Duration = .seconds(30)
    /// Tenants named in metric labels at most (metered call time); the rest count as `other`.
    public var tenantLabelCap = 50
    /// Whose CPU use heartbeats report (see `CPUSource`).
    public var cpuSource: CPUSource = .auto
    /// Where the GPU's load is read for heartbeats (none: no GPU in the score).
    public var gpuSource: GPUSource = .none
    /// For load tests: burn this share of one core in a background thread, so the worker looks busy.
    public var syntheticCPULoad = 0.0
    /// A graceful shutdown (SIGTERM) drains with this deadline; then calls still running are moved or ended.
    public var drainDeadline: Duration = .seconds(300)
    public var drainAtDeadline: AtDeadline = .migrate
    /// What a worker does when a drain that SIGTERM did not start (an operator's, a deploy's) has no calls
    /// left: exit, or stay up taking none (under a Deployment, where an exit is restarted: see `WhenDrained`).
    public var whenDrained: WhenDrained = .exit
    /// Where `/healthz`, `/readyz` and `/metrics` are served (nil: not served).
    public var httpHost = "127.0.0.1"
    public var httpPort: Int?
    /// `/healthz` fails when the heartbeat loop has not run for this long (a wedged process), and never
    /// sooner than three heartbeat intervals.
    public var livenessLimit: Duration = .seconds(30)
    var livenessAfter: Duration { Swift.max(livenessLimit, heartbeatInterval * 3) }
    /// How often a call's changed state is checkpointed to Redis.
    public var checkpointInterval: Duration = .seconds(1)
    /// Time a router has to move one call when this worker asks.
    public var migrateTimeout: Duration = .seconds(5)
    /// How often the worker confirms it still owns its calls and keeps their records, its set and the
    /// tenants' leases alive (and writes records Redis lost again), and re-reads its drain.
    public var refreshInterval: Duration = .seconds(3)
    /// A pause of this worker's own loop longer than this (a stall: SIGSTOP, a VM pause, CPU starvation) and
    /// it sends no audio until it has confirmed it still owns each call: routers may have given them to
    /// another worker meanwhile. Nil: the routers' suspect time, 2 heartbeat intervals.
    public var stallThreshold: Duration?
    var stallLimit: Duration { stallThreshold ?? heartbeatInterval * 2 }
    /// Where Unix time comes from: records, checkpoints, events, timelines and drain deadlines (waits and
    /// timeouts use `ContinuousClock`). A test may give a fixed one.
    public var wallClock: WallClock = .system

    public init(id: String, version: String, region: String, zone: String, capacity: Int, subjects: Subjects, keys: RedisKeys) {
        self.id = id
        self.version = version
        self.region = region
        self.zone = zone
        self.capacity = capacity
        self.subjects = subjects
        self.keys = keys
    }

    /// Refuses settings a worker cannot run with.
    public func validate() throws(SwitchboardError) {
        do {
            try WireCheck.identifier(id, "worker id")
            try WireCheck.text(version, "version", max: 64)
            try WireCheck.text(region, "region", max: 64)
            try WireCheck.text(zone, "zone", max: 64)
            try WireCheck.range(capacity, 0...100_000, "capacity")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        guard (0...1).contains(syntheticCPULoad) else {
            throw SwitchboardError(.invalidArgument, "synthetic CPU load must be between 0 and 1")
        }
        try DrainRequest.checkDeadline(seconds: Double(drainDeadline.milliseconds) / 1000)
        guard maxCallDuration > .zero, heartbeatInterval > .zero, checkpointInterval > .zero, migrateTimeout > .zero else {
            throw SwitchboardError(.invalidArgument, "durations must be positive")
        }
    }
}

/// What a drained worker does once its last call is gone (a drain SIGTERM started always exits).
public enum WhenDrained: String, Sendable, CaseIterable {
    /// Leave the cluster and exit 0: right where nothing restarts the process (systemd with `Restart=on-failure`,
    /// `switchboard dev`).
    case exit
    /// Stay up, not ready and taking no calls, until undrained (a rollback) or stopped: right under a
    /// Kubernetes Deployment, which would restart an exited worker into the same drain.
    case stay
}

/// Whose CPU use a worker reports, as a share of the CPU it may use.
public enum CPUSource: String, Sendable, CaseIterable {
    /// The cgroup's when it has a CPU quota (a container), else the machine's.
    case auto
    /// The whole machine's (/proc/stat): right when the worker has the machine to itself.
    case machine
    /// This process's own (several workers sharing one machine, as in `switchboard dev`), over the cores it
    /// may use (the cgroup quota, else the machine's cores).
    case process
}
