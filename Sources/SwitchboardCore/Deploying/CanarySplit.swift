/// Which version a new call tries first under a deploy policy, and where it goes when that one has no room.
/// Pure; one per router.
///
/// - By call (default): a running credit, as smooth weighted round robin does, so over any `n` calls a router
///   sends `floor(n × share)` or one more to the canary: the share is exact, not only in expectation (a hash
///   of random call ids would wander by a binomial ±2 points over 2,000 calls). The call keeps the version it
///   got for its whole life: its record names it, and moves prefer it.
/// - By tenant: a hash of the tenant (salted with the canary version, so each canary picks its own tenants)
///   against the share, the same on every router; raising the share only adds tenants.
/// A call that finds no room in the canary falls back to the active version (counted by the router), so a
/// canary never costs a call while the active version has room.
public struct CanarySplit: Sendable, Equatable {
    /// Credit toward the next canary call, in hundredths of a percent (0..<10_000).
    private var credit = 0

    public init() {}

    public struct Choice: Equatable, Sendable {
        /// Versions to choose among first; nil: any (no policy yet).
        public var versions: Set<String>?
        /// Tried in order when the first choice has no room.
        public var fallback: [Set<String>]
        /// The first choice is the canary.
        public var isCanary: Bool
        /// The version counted for the call's first choice (nil: no policy).
        public var version: String?

        /// No policy: any version whose workers say they are ready.
        public static let any = Choice(versions: nil, fallback: [], isCanary: false, version: nil)
    }

    public mutating func choose(_ policy: DeployPolicy, tenant: String) -> Choice {
        guard !policy.isNone, let active = policy.active else { return .any }
        guard let canary = policy.canary, canary.basisPoints > 0 else {
            return Choice(versions: [active], fallback: [], isCanary: false, version: active)
        }
        let toCanary: Bool
        switch canary.by {
        case .call:
            credit += canary.basisPoints
            toCanary = credit >= 10_000
            if toCanary { credit -= 10_000 }
        case .tenant:
            toCanary = Self.bucket(canary.version + "/" + tenant) < canary.basisPoints
        }
        return toCanary ? Choice(versions: [canary.version], fallback: [[active]], isCanary: true, version: canary.version)
                        : Choice(versions: [active], fallback: [], isCanary: false, version: active)
    }

    /// A stable bucket 0..<10_000 for `key` (FNV-1a, 64 bits, then MurmurHash3's finaliser to spread keys that
    /// differ only at the end): the same in every process and build.
    static func bucket(_ key: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash = hash &* 0xc4ce_b9fe_1a85_ec53
        hash ^= hash >> 33
        return Int(hash % 10_000)
    }
}
