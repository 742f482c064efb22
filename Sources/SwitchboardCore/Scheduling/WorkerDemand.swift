/// How many workers each version needs in each region, for an autoscaler (the routers export it as
/// `switchboard_workers_desired{version,region}`). Pure: the shell passes the workers it knows and the deploy
/// policy.
///
/// - A version that takes new calls (active or canary; every version with no policy) needs the workers that
///   bring its slots in use to `target` of its capacity: `ceil(in use / (target × mean capacity))`. No calls,
///   no need: the autoscaler's minimum keeps the floor.
/// - A version that takes none (outdated) needs exactly its workers that still hold calls, so it shrinks as
///   they end and reaches zero with the last. Which pods go is the autoscaler's choice (see docs/kubernetes.md
///   on pod-deletion-cost); a worker asked to stop drains first.
public enum WorkerDemand {
    public struct Key: Hashable, Sendable, Comparable {
        public var version: String
        public var region: String

        public init(version: String, region: String) {
            self.version = version
            self.region = region
        }

        public static func < (a: Key, b: Key) -> Bool { (a.version, a.region) < (b.version, b.region) }
    }

    public struct Need: Equatable, Sendable {
        /// Calls on the version's workers in the region.
        public var inUse: Int
        /// Slots of the workers counted (all states: a draining worker's slots are still there until it goes).
        public var capacity: Int
        public var workers: Int
        public var desired: Int

        public init(inUse: Int, capacity: Int, workers: Int, desired: Int) {
            self.inUse = inUse
            self.capacity = capacity
            self.workers = workers
            self.desired = desired
        }
    }

    /// One worker as the router sees it.
    public struct Worker: Sendable {
        public var version: String
        public var region: String
        public var calls: Int
        public var capacity: Int

        public init(version: String, region: String, calls: Int, capacity: Int) {
            self.version = version
            self.region = region
            self.calls = calls
            self.capacity = capacity
        }
    }

    /// `target`: the share of slots in use to aim for, in (0, 1].
    public static func needs(_ workers: [Worker], policy: DeployPolicy, target: Double) -> [Key: Need] {
        var groups: [Key: [Worker]] = [:]
        for worker in workers { groups[Key(version: worker.version, region: worker.region), default: []].append(worker) }
        var needs: [Key: Need] = [:]
        for (key, group) in groups {
            let inUse = group.reduce(0) { $0 + max(0, $1.calls) }
            let capacity = group.reduce(0) { $0 + max(0, $1.capacity) }
            let desired: Int
            if policy.isEligible(key.version) {
                let perWorker = Double(capacity) / Double(group.count) * min(1, max(0.01, target))
                desired = inUse == 0 ? 0 : perWorker > 0 ? Int((Double(inUse) / perWorker).rounded(.up)) : group.count
            } else {
                desired = group.filter { $0.calls > 0 }.count
            }
            needs[key] = Need(inUse: inUse, capacity: capacity, workers: group.count, desired: desired)
        }
        return needs
    }
}
