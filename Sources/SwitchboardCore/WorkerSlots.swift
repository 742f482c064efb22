/// A worker's own count of its calls: the authority on whether it can take one more. Pure.
///
/// A slot is reserved the moment the worker says yes to an offer, so two offers racing for the last slot
/// cannot both be accepted (whatever the routers believed from the last heartbeat).
public struct WorkerSlots: Sendable, Equatable {
    /// Ready, draining or stopping (the drain's doing); `reportedState` adds the deploy's `outdated`.
    public private(set) var state: WorkerState = .ready
    /// Set while this worker's version takes no new calls: the deploy policy revision that said so.
    public private(set) var outdatedAt: Int64?
    public let capacity: Int
    public private(set) var calls: Set<String> = []
    /// Offers accepted in all; each accept answers with the count after it (`OfferReply.acceptSeq`).
    public private(set) var accepted: UInt64 = 0

    public init(capacity: Int) {
        self.capacity = capacity
    }

    public enum Decision: Equatable, Sendable {
        case accept
        case refuse(RefusalReason)
    }

    /// Decides on an offer and, on yes, reserves the slot. An outdated worker still takes calls that move
    /// (`resume`), and new ones a router chose under a newer deploy policy than its own (`deployRevision`).
    public mutating func offer(_ callID: String, resume: Bool = false, deployRevision: Int64? = nil) -> Decision {
        switch state {
        case .draining: return .refuse(.draining)
        case .stopping: return .refuse(.stopping)
        case .ready, .outdated: break
        }
        if let outdatedAt, !resume, (deployRevision ?? -1) <= outdatedAt { return .refuse(.outdated) }
        if calls.contains(callID) { return .refuse(.duplicate) }
        guard calls.count < capacity else { return .refuse(.full) }
        calls.insert(callID)
        accepted += 1
        return .accept
    }

    /// Frees the call's slot; false if the worker did not hold it.
    @discardableResult
    public mutating func end(_ callID: String) -> Bool { calls.remove(callID) != nil }

    /// Changes state; returns whether it changed (a change is worth a heartbeat at once).
    @discardableResult
    public mutating func setState(_ newState: WorkerState) -> Bool {
        guard newState != state else { return false }
        state = newState
        return true
    }

    /// Marks this worker's version outdated under deploy policy `revision` (nil: current again); returns
    /// whether the reported state changed.
    @discardableResult
    public mutating func setOutdated(_ revision: Int64?) -> Bool {
        let before = reportedState
        outdatedAt = revision
        return reportedState != before
    }

    /// What heartbeats say: the drain's state, or `outdated` while ready but outdated.
    public var reportedState: WorkerState { state == .ready && outdatedAt != nil ? .outdated : state }

    public var activeCalls: Int { calls.count }
}
