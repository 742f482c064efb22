/// One caller's leg on a gateway, from the socket's opening to its close, as a pure machine: events in (the
/// caller's messages, the route's answer, the call's end, the socket's close, a drain's deadline), actions out.
/// The shell holds it under one lock and runs the actions after.
///
/// - A Twilio stream waits for its `start`; a browser's leg routes at once.
/// - Audio before the call is placed is dropped (counted); audio before a Twilio `start` is out of order and
///   closes the leg.
/// - A caller who hangs up while the route is under way still ends the call once it is placed.
/// - Bad input closes the leg with its code, and ends the call if there was one.
public struct LegMachine: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        case awaitingStart, routing, live, closed
    }

    public enum Event: Sendable, Equatable {
        /// Twilio's `start` (a browser leg starts with the machine).
        case started
        /// Audio or a key from the caller.
        case media
        case routed
        case routeFailed(SwitchboardError)
        /// The caller hung up: Twilio's `stop`, the browser's `hangup`, or the socket closed.
        case hungUp
        /// The call ended on the cluster's side.
        case callEnded(EndReason)
        /// The caller sent what the gateway refuses, or could not keep up (a slow reader).
        case refused(SwitchboardError)
        /// The gateway's drain deadline passed.
        case deadline
    }

    public enum Action: Sendable, Equatable {
        /// Ask a router for a worker.
        case route
        /// Pass the caller's audio or key on to the call.
        case forward
        /// Drop the caller's audio: the call is not placed yet.
        case dropEarly
        /// The call is placed: start carrying its audio to the caller.
        case connect
        /// End the call on the cluster.
        case endCall(EndReason)
        /// Close the caller's socket: after the call ended (`reason`), or with an error.
        case closeEnded(EndReason)
        case closeWithError(SwitchboardError)
    }

    public private(set) var phase: Phase
    /// Set when the leg must end while its route is under way: the call is ended, for this reason, once placed.
    private var endWhenPlaced: EndReason?
    /// The caller's socket was already told to close (a refusal during the route).
    private var socketClosed = false

    /// `waitsForStart`: a Twilio stream (routes on its `start`); otherwise the leg routes at once (`.route` is
    /// the caller's first action to run).
    public init(waitsForStart: Bool) {
        phase = waitsForStart ? .awaitingStart : .routing
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (phase, event) {
        case (.closed, _):
            return []
        case (.awaitingStart, .started):
            phase = .routing
            return [.route]
        case (.awaitingStart, .media):
            return close(.closeWithError(SwitchboardError(.badMessage, "media before the stream's start")))
        case (.awaitingStart, .hungUp), (.awaitingStart, .deadline):
            return close()
        case (_, .started):
            return refuse(SwitchboardError(.badMessage, "a second start on one stream"))
        case (.routing, .media):
            return [.dropEarly]
        case (.routing, .routed):
            if let reason = endWhenPlaced { return close(.endCall(reason), socketClosed ? nil : .closeEnded(reason)) }
            phase = .live
            return [.connect]
        case (.routing, .routeFailed(let error)):
            return close(socketClosed ? nil : .closeWithError(error))
        case (.routing, .hungUp):
            if endWhenPlaced == nil { endWhenPlaced = .caller }
            return []
        case (.routing, .deadline):
            endWhenPlaced = .gatewayStopping
            return []
        case (.live, .media):
            return [.forward]
        case (.live, .hungUp):
            return close(.endCall(.caller), .closeEnded(.caller))
        case (.live, .callEnded(let reason)):
            return close(.closeEnded(reason))
        case (.live, .deadline):
            return close(.endCall(.gatewayStopping), .closeEnded(.gatewayStopping))
        case (_, .refused(let error)):
            return refuse(error)
        case (.awaitingStart, .routed), (.awaitingStart, .routeFailed), (.awaitingStart, .callEnded),
             (.routing, .callEnded), (.live, .routed), (.live, .routeFailed):
            return []  // cannot happen from a well-behaved shell; nothing to do
        }
    }

    private mutating func refuse(_ error: SwitchboardError) -> [Action] {
        switch phase {
        case .routing:
            guard !socketClosed else { return [] }
            endWhenPlaced = endWhenPlaced ?? .caller
            socketClosed = true
            return [.closeWithError(error)]
        case .live:
            return close(.endCall(.caller), .closeWithError(error))
        case .awaitingStart, .closed:
            return close(.closeWithError(error))
        }
    }

    private mutating func close(_ actions: Action?...) -> [Action] {
        phase = .closed
        return actions.compactMap { $0 }
    }
}
