/// A worker's own count of its calls: the authority on whether it can take one more. Pure.
///
/// A slot is reserved the moment the worker says yes to an offer, so two offers racing for the last slot
/// cannot both be accepted (whatever the routers believed from the last heartbeat).
public struct WorkerSlots: Sendable, Equatable {
    public private(set) var state: WorkerState = .ready
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

    /// Decides on an offer and, on yes, reserves the slot.
    public mutating func offer(_ callID: String) -> Decision {
        switch state {
        case .draining: return .refuse(.draining)
        case .stopping: return .refuse(.stopping)
        case .ready: break
        }
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

    public var activeCalls: Int { calls.count }
}
