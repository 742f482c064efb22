/// What a worker can do right now, as it tells every router once a second and at once on any change.
public enum WorkerState: String, Codable, Sendable, CaseIterable {
    /// Takes new calls.
    case ready
    /// Its version takes no new calls under the deploy policy; it finishes the ones it has (and drains once
    /// the rollback window is over).
    case outdated
    /// Takes no new calls; finishes the ones it has.
    case draining
    /// Shutting down: takes nothing, about to leave.
    case stopping
}

/// `<prefix>.heartbeat`: a worker's identity and load.
public struct Heartbeat: WireMessage, Equatable {
    public static let wireVersion = 1
    public var v = Heartbeat.wireVersion
    public var workerID: String
    /// The worker's software version (what deploys select on).
    public var version: String
    public var region: String
    public var zone: String
    public var state: WorkerState
    /// Calls the worker accepts at most.
    public var capacity: Int
    public var activeCalls: Int
    /// CPU in use as a fraction of what the worker may use (its cgroup quota, else the machine): 0...1.
    public var cpu: Double
    public var memoryUsedBytes: Int64
    public var memoryLimitBytes: Int64
    /// Increases with every heartbeat a worker process sends; an older one than the last seen is stale.
    public var seq: UInt64
    /// Random per worker process start, so a restarted worker's seq starting over is not taken as stale.
    public var incarnation: String
    /// Offers this worker process has accepted in all. An accept reply carries the count after that accept,
    /// so a router knows when a heartbeat reflects a call it placed (and stops counting it itself).
    public var accepted: UInt64
    /// The worker's GPU, when it has one its agents use (`--gpu-source`): absent otherwise, and absent from the
    /// JSON (older routers read the rest as before).
    public var gpu: GPULoad?

    /// A GPU's load: utilisation (0...1) and memory.
    public struct GPULoad: Sendable, Equatable {
        public var utilization: Double
        public var memoryUsedBytes: Int64
        public var memoryTotalBytes: Int64

        public init(utilization: Double, memoryUsedBytes: Int64, memoryTotalBytes: Int64) {
            self.utilization = utilization
            self.memoryUsedBytes = memoryUsedBytes
            self.memoryTotalBytes = memoryTotalBytes
        }

        /// The busier of compute and memory, 0...1: what limits another call on it.
        public var busy: Double {
            let memory = memoryTotalBytes > 0 ? Double(memoryUsedBytes) / Double(memoryTotalBytes) : 0
            return min(1, max(utilization, memory))
        }
    }

    enum CodingKeys: String, CodingKey {
        case v, version, region, zone, state, capacity, cpu, seq, incarnation, accepted, gpu
        case workerID = "worker_id", activeCalls = "active_calls"
        case memoryUsedBytes = "memory_used_bytes", memoryLimitBytes = "memory_limit_bytes"
        case gpuMemoryUsedBytes = "gpu_memory_used_bytes", gpuMemoryTotalBytes = "gpu_memory_total_bytes"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(workerID: try c.decode(String.self, forKey: .workerID), version: try c.decode(String.self, forKey: .version),
                  region: try c.decode(String.self, forKey: .region), zone: try c.decode(String.self, forKey: .zone),
                  state: try c.decode(WorkerState.self, forKey: .state), capacity: try c.decode(Int.self, forKey: .capacity),
                  activeCalls: try c.decode(Int.self, forKey: .activeCalls), cpu: try c.decode(Double.self, forKey: .cpu),
                  memoryUsedBytes: try c.decode(Int64.self, forKey: .memoryUsedBytes),
                  memoryLimitBytes: try c.decode(Int64.self, forKey: .memoryLimitBytes), seq: try c.decode(UInt64.self, forKey: .seq),
                  incarnation: try c.decode(String.self, forKey: .incarnation), accepted: try c.decode(UInt64.self, forKey: .accepted))
        v = try c.decode(Int.self, forKey: .v)
        if let utilization = try c.decodeIfPresent(Double.self, forKey: .gpu) {
            gpu = GPULoad(utilization: utilization, memoryUsedBytes: try c.decode(Int64.self, forKey: .gpuMemoryUsedBytes),
                          memoryTotalBytes: try c.decode(Int64.self, forKey: .gpuMemoryTotalBytes))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(v, forKey: .v)
        try c.encode(workerID, forKey: .workerID)
        try c.encode(version, forKey: .version)
        try c.encode(region, forKey: .region)
        try c.encode(zone, forKey: .zone)
        try c.encode(state, forKey: .state)
        try c.encode(capacity, forKey: .capacity)
        try c.encode(activeCalls, forKey: .activeCalls)
        try c.encode(cpu, forKey: .cpu)
        try c.encode(memoryUsedBytes, forKey: .memoryUsedBytes)
        try c.encode(memoryLimitBytes, forKey: .memoryLimitBytes)
        try c.encode(seq, forKey: .seq)
        try c.encode(incarnation, forKey: .incarnation)
        try c.encode(accepted, forKey: .accepted)
        if let gpu {
            try c.encode(gpu.utilization, forKey: .gpu)
            try c.encode(gpu.memoryUsedBytes, forKey: .gpuMemoryUsedBytes)
            try c.encode(gpu.memoryTotalBytes, forKey: .gpuMemoryTotalBytes)
        }
    }

    public init(workerID: String, version: String, region: String, zone: String, state: WorkerState, capacity: Int,
                activeCalls: Int, cpu: Double, memoryUsedBytes: Int64, memoryLimitBytes: Int64, seq: UInt64,
                incarnation: String, accepted: UInt64 = 0, gpu: GPULoad? = nil) {
        self.gpu = gpu
        self.workerID = workerID
        self.version = version
        self.region = region
        self.zone = zone
        self.state = state
        self.capacity = capacity
        self.activeCalls = activeCalls
        self.cpu = cpu
        self.memoryUsedBytes = memoryUsedBytes
        self.memoryLimitBytes = memoryLimitBytes
        self.seq = seq
        self.incarnation = incarnation
        self.accepted = accepted
    }

    public func validate() throws(SwitchboardError) {
        try WireCheck.identifier(workerID, "worker_id")
        try WireCheck.text(version, "version", max: 64)
        try WireCheck.text(region, "region", max: 64)
        try WireCheck.text(zone, "zone", max: 64)
        try WireCheck.range(capacity, 0...100_000, "capacity")
        try WireCheck.range(activeCalls, 0...100_000, "active_calls")
        guard cpu.isFinite else { throw SwitchboardError(.badMessage, "'cpu' is not a number") }
        try WireCheck.range(cpu, 0...1, "cpu")
        try WireCheck.range(memoryUsedBytes, 0...Int64.max, "memory_used_bytes")
        try WireCheck.range(memoryLimitBytes, 0...Int64.max, "memory_limit_bytes")
        try WireCheck.text(incarnation, "incarnation", max: 64)
        if let gpu {
            guard gpu.utilization.isFinite else { throw SwitchboardError(.badMessage, "'gpu' is not a number") }
            try WireCheck.range(gpu.utilization, 0...1, "gpu")
            try WireCheck.range(gpu.memoryUsedBytes, 0...Int64.max, "gpu_memory_used_bytes")
            try WireCheck.range(gpu.memoryTotalBytes, 0...Int64.max, "gpu_memory_total_bytes")
        }
    }

    /// Routers take 10,000 a second at 10,000 workers: a heartbeat as our encoder writes it is read by the
    /// fast flat-object reader; anything else goes through the full decoder, which decides and names the error.
    public static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> Heartbeat {
        if bytes.count <= maxBytes, let heartbeat = Heartbeat(flat: bytes) {
            try heartbeat.validate()
            return heartbeat
        }
        let heartbeat = try WireCodec.decode(Heartbeat.self, from: bytes, version: wireVersion, maxBytes: maxBytes)
        try heartbeat.validate()
        return heartbeat
    }

    /// A flat object with every field once, of the right JSON type, and this build's version; else nil.
    init?(flat bytes: [UInt8]) {
        var v: Int?, workerID: String?, version: String?, region: String?, zone: String?, state: WorkerState?
        var capacity: Int?, activeCalls: Int?, cpu: Double?, memoryUsed: Int64?, memoryLimit: Int64?
        var seq: UInt64?, incarnation: String?, accepted: UInt64?
        var gpu: Double?, gpuMemoryUsed: Int64?, gpuMemoryTotal: Int64?
        var seen = 0, repeated = false
        func take<T>(_ slot: inout T?, _ value: T?) {
            repeated = repeated || slot != nil
            slot = value
            seen += 1
        }
        let flat = FlatJSON.visit(bytes) { key, value in
            switch String(decoding: key, as: UTF8.self) {
            case "v": take(&v, value.integer())
            case "worker_id": take(&workerID, value.string)
            case "version": take(&version, value.string)
            case "region": take(&region, value.string)
            case "zone": take(&zone, value.string)
            case "state": take(&state, value.string.flatMap(WorkerState.init(rawValue:)))
            case "capacity": take(&capacity, value.integer())
            case "active_calls": take(&activeCalls, value.integer())
            case "cpu": take(&cpu, value.double)
            case "memory_used_bytes": take(&memoryUsed, value.integer())
            case "memory_limit_bytes": take(&memoryLimit, value.integer())
            case "seq": take(&seq, value.integer())
            case "incarnation": take(&incarnation, value.string)
            case "accepted": take(&accepted, value.integer())
            case "gpu": take(&gpu, value.double)
            case "gpu_memory_used_bytes": take(&gpuMemoryUsed, value.integer())
            case "gpu_memory_total_bytes": take(&gpuMemoryTotal, value.integer())
            default: repeated = true  // a key we do not know: the full decoder's to judge
            }
        }
        // The GPU's three fields come together or not at all.
        let gpuFields = [gpu != nil, gpuMemoryUsed != nil, gpuMemoryTotal != nil].filter { $0 }.count
        guard flat, !repeated, gpuFields == 0 || gpuFields == 3, seen == 14 + gpuFields, v == Heartbeat.wireVersion,
              let workerID, let version, let region, let zone, let state, let capacity, let activeCalls, let cpu,
              let memoryUsed, let memoryLimit, let seq, let incarnation, let accepted
        else { return nil }
        self.init(workerID: workerID, version: version, region: region, zone: zone, state: state, capacity: capacity,
                  activeCalls: activeCalls, cpu: cpu, memoryUsedBytes: memoryUsed, memoryLimitBytes: memoryLimit, seq: seq,
                  incarnation: incarnation, accepted: accepted,
                  gpu: gpu.map { GPULoad(utilization: $0, memoryUsedBytes: gpuMemoryUsed ?? 0, memoryTotalBytes: gpuMemoryTotal ?? 0) })
    }

    /// Calls the worker could still take by its own report.
    public var freeSlots: Int { max(0, capacity - activeCalls) }
}
