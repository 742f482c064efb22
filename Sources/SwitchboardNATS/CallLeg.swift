import SwitchboardCore
import Synchronization

/// A caller's side of one call on the bus, as a gateway keeps it: sends the caller's packets to whichever worker
/// holds the call, following the call's events (`migrated` and `resumed` name the new worker), and holds them
/// back while the call moves (from `migrating` until the call is on its new worker, at most `maxHeld`), so
/// nothing sent in the switch is lost. The audio back is heard on `placement.media.out`, which names no worker.
/// See docs/protocol.md ("Callers across moves").
public final class CallLeg: Sendable {
    public let callID: String
    private let nats: NATSConnection
    private let subjects: Subjects
    private let maxHeld: Duration
    private let events: NATSSubscription

    private struct State {
        var worker: String
        /// Since when packets are held back (a move under way), nil when they go out at once.
        var holdingSince: ContinuousClock.Instant?
        var held: [[UInt8]] = []
    }
    /// Shared with the events' handler (a class: a `Mutex` cannot be captured by an escaping closure).
    private final class Shared: Sendable {
        let state: Mutex<State>
        init(_ state: State) { self.state = Mutex(state) }
    }
    private let shared: Shared

    /// Packets held in a move at most (1 s of 20 ms packets); beyond, they go to the worker the call was on.
    static let maxHeldPackets = 50

    /// Listens to the call's events at once (before the first packet), on `nats` (the call's own credential may
    /// publish its audio in and hear its events, on any worker).
    /// `onEvent` hears each of the call's events after the leg has followed it (a gateway closes the caller's
    /// stream on `ended`); it runs on the delivery thread and must not block.
    public init(_ nats: NATSConnection, placement: Placement, subjects: Subjects, maxHeld: Duration = .seconds(1),
                onEvent: (@Sendable (CallEvent) -> Void)? = nil) throws {
        callID = placement.callID
        self.nats = nats
        self.subjects = subjects
        self.maxHeld = maxHeld
        let shared = Shared(State(worker: placement.workerID))
        self.shared = shared
        let (callID, subjects) = (placement.callID, subjects)
        events = try nats.subscribe(to: subjects.events(worker: Subjects.anyWorker, call: callID)) { message in
            guard let event = try? CallEvent.decode(message.payload), event.callID == callID else { return }
            let flush = shared.state.withLock { state -> (String, [[UInt8]])? in
                switch event.event {
                case .migrating:
                    if state.holdingSince == nil { state.holdingSince = .now }
                    return nil
                case .migrated, .resumed:
                    state.worker = event.workerID
                    state.holdingSince = nil
                    defer { state.held.removeAll() }
                    return (event.workerID, state.held)
                case .placed, .ended:
                    return nil
                }
            }
            if let (worker, packets) = flush {
                // Audio, like every audio packet: one lost when the bus breaks is a frame the jitter buffer conceals.
                for packet in packets { try? nats.publish(subjects.mediaIn(worker: worker, call: callID), payload: packet) }
            }
            onEvent?(event)
        }
    }

    deinit { events.unsubscribe() }

    /// Asks the worker holding the call to end it (the caller hung up). Published without waiting: a call's own
    /// credential takes no replies. If it is lost, the worker ends the call when its caller's audio stops.
    public func end(_ reason: EndReason) throws {
        try nats.publish(subjects.end(worker: worker, call: callID), payload: CallEnd(callID: callID, reason: reason).encoded())
    }

    /// The worker the call is on, as far as its events have said.
    public var worker: String { shared.state.withLock { $0.worker } }

    /// Sends one encoded media packet (audio or a key) to the worker holding the call, or holds it while the
    /// call moves.
    public func send(_ packet: [UInt8]) throws {
        let now = ContinuousClock.now
        let (worker, out) = shared.state.withLock { state -> (String, [[UInt8]]) in
            if let since = state.holdingSince {
                if now - since < maxHeld && state.held.count < Self.maxHeldPackets {
                    state.held.append(packet)
                    return (state.worker, [])
                }
                // The move did not finish in time (or failed): the call is still where it was.
                state.holdingSince = nil
                defer { state.held.removeAll() }
                return (state.worker, state.held + [packet])
            }
            return (state.worker, [packet])
        }
        for packet in out { try nats.publish(subjects.mediaIn(worker: worker, call: callID), payload: packet) }
    }
}
