/// What a worker's `/healthz` and `/readyz` say, decided from what the worker knows (pure: the shell passes
/// its state in). The two differ on purpose: Kubernetes restarts a container whose liveness fails, and a
/// restart ends every call on it, so liveness fails only when the process itself is wedged; readiness says
/// whether it takes new calls, and a draining worker must fail it (rollouts wait for ready pods) without
/// failing liveness.
public struct WorkerProbe: Codable, Sendable, Equatable {
    /// `ok` or `not_ready`/`unhealthy`.
    public var status: String
    /// Why not (nil when ok): `starting`, `draining`, `outdated`, `stopping`, `nats_disconnected`,
    /// `nats_closed`, `stalled`.
    public var reason: String?
    public var state: WorkerState
    public var calls: Int
    public var capacity: Int
    public var natsConnected: Bool

    public var ok: Bool { reason == nil }

    enum CodingKeys: String, CodingKey {
        case status, reason, state, calls, capacity
        case natsConnected = "nats_connected"
    }

    /// What the shell reads under its lock.
    public struct Inputs: Sendable {
        public var state: WorkerState
        public var calls: Int
        public var capacity: Int
        /// The worker has read its drain and the deploy policy and sent its first heartbeat.
        public var started: Bool
        public var natsConnected: Bool
        /// The NATS client gave up for good (it reconnects forever unless closed).
        public var natsClosed: Bool
        /// Since the heartbeat loop last ran.
        public var sinceHeartbeat: Duration

        public init(state: WorkerState, calls: Int, capacity: Int, started: Bool, natsConnected: Bool,
                    natsClosed: Bool, sinceHeartbeat: Duration) {
            self.state = state
            self.calls = calls
            self.capacity = capacity
            self.started = started
            self.natsConnected = natsConnected
            self.natsClosed = natsClosed
            self.sinceHeartbeat = sinceHeartbeat
        }
    }

    /// Alive unless the NATS client is closed for good or the heartbeat loop has not run for `limit`.
    /// Draining, outdated, full or cut off from NATS for a while are all alive: each goes away by itself,
    /// and a restart would end the calls.
    public static func liveness(_ inputs: Inputs, limit: Duration) -> WorkerProbe {
        let reason: String? = inputs.natsClosed ? "nats_closed" : inputs.sinceHeartbeat > limit ? "stalled" : nil
        return WorkerProbe(reason == nil ? "ok" : "unhealthy", reason, inputs)
    }

    /// Ready when it takes new calls: started, connected to NATS, and neither draining, outdated nor stopping.
    /// A full worker is ready (it is healthy, and takes calls again as soon as one ends).
    public static func readiness(_ inputs: Inputs) -> WorkerProbe {
        let reason: String?
        switch inputs.state {
        case _ where !inputs.started: reason = "starting"
        case .draining: reason = "draining"
        case .outdated: reason = "outdated"
        case .stopping: reason = "stopping"
        case .ready: reason = inputs.natsConnected ? nil : "nats_disconnected"
        }
        return WorkerProbe(reason == nil ? "ok" : "not_ready", reason, inputs)
    }

    init(_ status: String, _ reason: String?, _ inputs: Inputs) {
        self.status = status
        self.reason = reason
        state = inputs.state
        calls = inputs.calls
        capacity = inputs.capacity
        natsConnected = inputs.natsConnected
    }
}
