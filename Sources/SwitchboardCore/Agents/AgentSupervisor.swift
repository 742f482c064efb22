/// Decides what follows when one agent session of a call ends (docs/agents.md): the agent hanging up ends the
/// call; a failure (the agent could not be reached or started, its socket broke, its process died, it sent
/// what the worker refuses) starts one fresh session resumed from the saved state; a second failure within
/// `window` ends the call with `agent_failed`. Never a silent call: every path either restarts or ends.
///
/// Time is an input (milliseconds on any monotonic clock), so a test can run a day of failures at once.
public struct AgentSupervisor: Sendable, Equatable {
    public enum SessionEnd: Equatable, Sendable {
        /// The agent closed its socket normally: its hang-up.
        case hungUp
        /// The session failed, with what went wrong.
        case failed(String)
        /// The call ended (or moved away) for another reason and the worker closed the session.
        case closedByCall
    }

    public enum Decision: Equatable, Sendable {
        /// Start a fresh agent session, resumed from the call's saved state.
        case restart
        /// End the call with this reason.
        case endCall(EndReason)
        /// Nothing to do: the call is ending anyway.
        case none
    }

    /// Restarts allowed within `windowMillis` of each other.
    public let maxRestarts: Int
    public let windowMillis: Int64
    /// When the restarts still counted took place.
    public private(set) var restarts: [Int64] = []

    public init(maxRestarts: Int = 1, windowMillis: Int64 = 60_000) {
        self.maxRestarts = maxRestarts
        self.windowMillis = windowMillis
    }

    public mutating func sessionEnded(_ end: SessionEnd, nowMillis: Int64) -> Decision {
        switch end {
        case .closedByCall:
            return .none
        case .hungUp:
            return .endCall(.agentHangup)
        case .failed:
            restarts.removeAll { nowMillis - $0 >= windowMillis }
            guard restarts.count < maxRestarts else { return .endCall(.agentFailed) }
            restarts.append(nowMillis)
            return .restart
        }
    }
}
