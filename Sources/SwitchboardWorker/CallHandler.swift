import Foundation
import SwitchboardCore

/// One 20 ms frame of decoded mono audio.
public struct AudioFrame: Sendable {
    public var samples: [Int16]
    /// The packet never came; these samples are the codec's concealment.
    public var concealed: Bool

    public init(samples: [Int16], concealed: Bool = false) {
        self.samples = samples
        self.concealed = concealed
    }
}

/// What a user of Switchboard implements: the agent behind one call. `run` is called once per call on the
/// worker that holds it and returns (or throws) when the agent is done; the call then ends with reason
/// `handler`. When the call ends for another reason (the caller hung up, the maximum duration), the task
/// running `run` is cancelled.
public protocol CallHandler: Sendable {
    func run(_ call: CallContext) async throws

    /// Asked on the offer path (fast, no I/O): whether this handler can serve the call at once, reserving what it
    /// needs for it (a warm agent process). False: the worker refuses the offer (`agent_unavailable`) and the
    /// router tries another worker.
    func reserve(callID: String) -> Bool
    /// The call ended, or was accepted but never started: free what `reserve` took.
    func release(callID: String)
    /// The call is over on this worker (ended, or moved away): `release` it, and say how much CPU time its
    /// agent used here, when known (an agent process of its own), for the tenant's usage.
    func finish(callID: String) -> Duration?
    /// Work the handler needs for as long as the worker runs (an agent pool's refill), in the worker's task group.
    func runBackground() async
    /// The processes it runs for its calls (agent processes), whose CPU and memory count as the worker's load.
    var processIDs: [Int32] { get }
    /// Whether it can take a call now (an agent process warm, its agent server answering): the worker joins the
    /// cluster only once it can (`/readyz` says `starting` until then).
    var isReady: Bool { get }
    /// True if it says when each call's agent has started (`CallContext.started()`): until then the call is
    /// `starting`, and the caller's silence does not count. False: started as soon as `run` is called.
    var announcesStart: Bool { get }
}

extension CallHandler {
    public func reserve(callID: String) -> Bool { true }
    public func release(callID: String) {}
    public func finish(callID: String) -> Duration? {
        release(callID: callID)
        return nil
    }
    public func runBackground() async {}
    public var processIDs: [Int32] { [] }
    public var isReady: Bool { true }
    public var announcesStart: Bool { false }
}

/// A handler's view of its call: who, decoded audio in, a way to speak and to hang up, and its saved state.
///
/// State: a handler that keeps state the call cannot do without (a conversation so far, where a prompt
/// stands) saves it with `send(_:saving:)` or `save(_:)`. The worker checkpoints it to Redis every
/// `checkpointInterval` when it changed (and at once on `checkpoint()`); when the call moves to another
/// worker (a drain, `call migrate`, its worker dying) the handler there starts with `restoredState`. A call
/// whose handler never saved state cannot be resumed after its worker dies: it ends with `worker_lost`.
public struct CallContext: Sendable {
    public let callID: String
    public let tenant: String
    public let metadata: [String: String]
    /// The call's trace context here (W3C `traceparent`) when the worker traces: an agent's own spans join it.
    public let traceparent: String?
    /// Samples per second of the frames in and out (48 kHz).
    public let sampleRate: Int
    /// Samples in one 20 ms frame.
    public var frameSamples: Int { sampleRate / 50 }
    /// Audio from the caller, one frame per packet; a lost packet arrives as a concealed frame.
    public let audio: AsyncStream<AudioFrame>
    /// Keys the caller pressed (DTMF: 0-9, *, #, A-D), in order.
    public let dtmf: AsyncStream<Character>
    let session: CallSession
    let hangUp: @Sendable (EndReason) -> Void
    let announceStart: @Sendable () -> Void
    let checkpointNow: @Sendable () async throws -> Void
    let noteEvent: @Sendable (String, [String: String]) -> Void

    /// Notes an event on the call's timeline (`GET /v1/calls/{id}/timeline`), source this worker: a type of
    /// letters, digits, `-`, `_`, and at most 16 short attributes (an event that is not is left out and counted).
    public func note(_ type: String, _ attributes: [String: String] = [:]) { noteEvent(type, attributes) }

    /// Encodes one frame (exactly `frameSamples` samples) and sends it to the caller.
    public func send(_ samples: [Int16]) throws { try session.send(samples) }

    /// The handler was interrupted (its agent sent `clear`): the caller's side drops the audio it has queued.
    public func clear() { session.sendClear() }

    /// Sends one frame and saves the state the handler is in after it, together: a checkpoint never holds a
    /// state ahead of (or behind) the audio the caller got.
    public func send(_ samples: [Int16], saving state: some Encodable & Sendable) throws {
        try session.send(samples, state: state)
    }

    /// Saves the handler's state (at most 64 KiB as JSON); checkpointed within `checkpointInterval`.
    public func save(_ state: some Encodable & Sendable) { session.save(state) }

    /// Writes the saved state to Redis now (e.g. after a turn the call must not lose).
    public func checkpoint() async throws { try await checkpointNow() }

    /// True when this call was running on another worker and was taken on here.
    public var isResumed: Bool { session.restored != nil }

    /// The state saved before the call moved here, nil on a new call (or one whose handler saved none).
    public func restoredState<State: Decodable>(as type: State.Type) throws -> State? {
        guard let text = session.restored?.state else { return nil }
        do {
            return try JSONDecoder().decode(State.self, from: Data(text.utf8))
        } catch {
            throw SwitchboardError(.badMessage, "the call's saved state does not decode as \(State.self): \(error)")
        }
    }

    /// Says the agent has started (for a handler whose `announcesStart` is true): the call is live from now.
    public func started() { announceStart() }

    /// Ends the call (reason `handler`).
    public func end() { hangUp(.handler) }

    /// Ends the call with `reason` (the agent bridge's `agent_hangup` and `agent_failed`).
    func end(_ reason: EndReason) { hangUp(reason) }

    /// Saves state that is JSON text already (an agent's checkpoint), as `save(_:)` does a value.
    func save(json: String) { session.save(PreEncodedState(json: json)) }

    /// The saved state the call resumed with, as JSON text; nil on a new call.
    var restoredStateJSON: String? { session.restored?.state }
}

/// Handler state that arrives as JSON text (an agent's checkpoint): checkpointed as it is, not encoded again.
struct PreEncodedState: Encodable, Sendable {
    let json: String
    func encode(to encoder: any Encoder) throws {
        // Only reached if someone encodes it with a JSONEncoder; `CallSession.checkpoint` takes `json` directly.
        var container = encoder.singleValueContainer()
        try container.encode(json)
    }
}

/// The handlers that ship with Switchboard, by name, for `switchboard worker --handler`.
public enum BuiltinHandlers {
    public static let names = ["echo", "tone"]

    public static func named(_ name: String) throws(SwitchboardError) -> any CallHandler {
        switch name {
        case "echo": return EchoHandler()
        case "tone": return ToneHandler()
        default: throw SwitchboardError(.invalidArgument, "unknown handler '\(name)' (have: \(names.joined(separator: ", ")))")
        }
    }
}

/// Sends back what it hears: each frame is decoded and re-encoded, a real codec round trip per packet. Its
/// state is the count of frames echoed, carried across a move to another worker.
public struct EchoHandler: CallHandler {
    public struct State: Codable, Sendable, Equatable {
        public var echoed: Int
    }

    public init() {}
    public func run(_ call: CallContext) async throws {
        var state = try call.restoredState(as: State.self) ?? State(echoed: 0)
        call.save(state)
        for await frame in call.audio where !frame.concealed {
            state.echoed += 1
            try call.send(frame.samples, saving: state)
        }
    }
}
