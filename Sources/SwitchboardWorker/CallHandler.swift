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
}

/// A handler's view of its call: who, decoded audio in, a way to speak and to hang up.
public struct CallContext: Sendable {
    public let callID: String
    public let tenant: String
    public let metadata: [String: String]
    /// Samples per second of the frames in and out (48 kHz).
    public let sampleRate: Int
    /// Samples in one 20 ms frame.
    public var frameSamples: Int { sampleRate / 50 }
    /// Audio from the caller, one frame per packet; a lost packet arrives as a concealed frame.
    public let audio: AsyncStream<AudioFrame>
    let sender: AudioSender
    let hangUp: @Sendable () -> Void

    /// Encodes one frame (exactly `frameSamples` samples) and sends it to the caller.
    public func send(_ samples: [Int16]) throws { try sender.send(samples) }

    /// Ends the call (reason `handler`).
    public func end() { hangUp() }
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

/// Sends back what it hears: each frame is decoded and re-encoded, a real codec round trip per packet.
public struct EchoHandler: CallHandler {
    public init() {}
    public func run(_ call: CallContext) async throws {
        for await frame in call.audio where !frame.concealed {
            try call.send(frame.samples)
        }
    }
}
