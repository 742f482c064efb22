import Foundation

/// Twilio Media Streams as a worker speaks it to an agent (docs/agents.md): the worker is the media server,
/// the agent (a Pipecat bot, say) the WebSocket server it connects to. JSON text frames; Twilio writes every
/// number as a string, and so do we.
///
/// Worker to agent: `connected`, `start`, then `media` (20 ms of mu-law 8 kHz each), `dtmf`, `mark` (the agent's
/// own marks, returned once the audio before them was played or dropped) and `stop`. Agent to worker: `media`
/// (any length), `mark`, `clear`, and Switchboard's one extension, `checkpoint` (the agent's state to resume from).
public enum MediaStream {
    /// The largest message an agent may send: a checkpoint's 64 KiB of state written as JSON, or a `media` blob
    /// (Pipecat sends 16 KB of mu-law as base64 at hang-up), with room for the envelope.
    public static let maxAgentMessageBytes = 160 * 1024
    /// Longest mark name taken from an agent.
    public static let maxMarkName = 256

    /// What `start` carries.
    public struct Start: Sendable, Equatable {
        public var accountSid: String
        public var streamSid: String
        public var callSid: String
        public var customParameters: [String: String]

        public init(accountSid: String, streamSid: String, callSid: String, customParameters: [String: String]) {
            self.accountSid = accountSid
            self.streamSid = streamSid
            self.callSid = callSid
            self.customParameters = customParameters
        }
    }

    // MARK: - Worker to agent

    public static func connected() -> String { #"{"event":"connected","protocol":"Call","version":"1.0.0"}"# }

    public static func start(_ start: Start) -> String {
        let parameters = start.customParameters.sorted { $0.key < $1.key }
            .map { "\(JSONText.quoted($0.key)):\(JSONText.quoted($0.value))" }.joined(separator: ",")
        let sid = JSONText.quoted(start.streamSid)
        return #"{"event":"start","sequenceNumber":"1","start":{"accountSid":\#(JSONText.quoted(start.accountSid)),"#
            + #""streamSid":\#(sid),"callSid":\#(JSONText.quoted(start.callSid)),"tracks":["inbound"],"#
            + #""mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"#
            + #""customParameters":{\#(parameters)}},"streamSid":\#(sid)}"#
    }

    /// One 20 ms chunk of the caller's audio. `streamSid` is already quoted (`JSONText.quoted`): it is the same for
    /// every chunk of a call, and this is the hot path.
    public static func media(quotedStreamSid sid: String, sequence: Int, chunk: Int, timestampMillis: Int64, payload: [UInt8]) -> String {
        #"{"event":"media","sequenceNumber":"\#(sequence)","media":{"track":"inbound","chunk":"\#(chunk)","#
            + #""timestamp":"\#(timestampMillis)","payload":"\#(Data(payload).base64EncodedString())"},"streamSid":\#(sid)}"#
    }

    public static func dtmf(quotedStreamSid sid: String, sequence: Int, digit: Character) -> String {
        #"{"event":"dtmf","streamSid":\#(sid),"sequenceNumber":"\#(sequence)","dtmf":{"track":"inbound_track","digit":\#(JSONText.quoted(String(digit)))}}"#
    }

    public static func mark(quotedStreamSid sid: String, sequence: Int, name: String) -> String {
        #"{"event":"mark","sequenceNumber":"\#(sequence)","streamSid":\#(sid),"mark":{"name":\#(JSONText.quoted(name))}}"#
    }

    public static func stop(quotedStreamSid sid: String, sequence: Int, accountSid: String, callSid: String) -> String {
        #"{"event":"stop","sequenceNumber":"\#(sequence)","stop":{"accountSid":\#(JSONText.quoted(accountSid)),"#
            + #""callSid":\#(JSONText.quoted(callSid))},"streamSid":\#(sid)}"#
    }

    /// The DTMF digits a call may carry.
    public static let dtmfDigits = Set("0123456789*#ABCD")

    /// `value` as one DTMF digit, or nil when it is not a one-character string of `dtmfDigits`.
    public static func digit(_ value: Any?) -> Character? {
        guard let text = value as? String, text.count == 1, let key = text.first, dtmfDigits.contains(key) else { return nil }
        return key
    }

    /// A JSON object with a string `event`, at most `maxBytes` (what callers' streams send: Twilio's, a browser's).
    /// - Throws: `tooLarge` over `maxBytes`, `badMessage` for anything else.
    public static func eventObject(_ bytes: [UInt8], maxBytes: Int, what: String) throws(SwitchboardError) -> (event: String, object: [String: Any]) {
        guard bytes.count <= maxBytes else {
            throw SwitchboardError(.tooLarge, "\(what) of \(bytes.count) bytes is over \(maxBytes)")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any],
              let event = object["event"] as? String else {
            throw SwitchboardError(.badMessage, "\(what) is not a JSON object with a string 'event'")
        }
        return (event, object)
    }

    // MARK: - Agent to worker

    /// One message from an agent, decoded.
    public enum AgentEvent: Equatable, Sendable {
        /// Audio for the caller: mu-law 8 kHz bytes, any length.
        case media([UInt8])
        /// Send `mark` back with this name once the audio queued before it has played (or was cleared).
        case mark(String)
        /// Drop the audio queued for the caller now (barge-in), returning the marks waiting behind it.
        case clear
        /// Save this state (JSON text, at most `Checkpoint.maxStateBytes`) to resume the agent from elsewhere.
        case checkpoint(String)
        /// A well-formed event this protocol does not define (counted and ignored).
        case other(String)
    }

    /// Decodes one text frame from an agent.
    /// - Throws: `tooLarge` over `maxAgentMessageBytes` or for a state over 64 KiB; `badMessage` for anything that
    ///   is not a JSON object with a string `event`, or an event whose fields are missing or malformed.
    public static func decodeAgentMessage(_ bytes: [UInt8]) throws(SwitchboardError) -> AgentEvent {
        guard bytes.count <= maxAgentMessageBytes else {
            throw SwitchboardError(.tooLarge, "agent message of \(bytes.count) bytes is over \(maxAgentMessageBytes)")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw SwitchboardError(.badMessage, "agent message is not a JSON object")
        }
        guard let event = object["event"] as? String, !event.isEmpty, event.utf8.count <= 64 else {
            throw SwitchboardError(.badMessage, "agent message has no string 'event' of 1-64 bytes")
        }
        switch event {
        case "media":
            guard let media = object["media"] as? [String: Any], let text = media["payload"] as? String else {
                throw SwitchboardError(.badMessage, "agent media lacks 'media.payload'")
            }
            guard let payload = Data(base64Encoded: text) else {
                throw SwitchboardError(.badMessage, "agent media payload is not base64")
            }
            return .media([UInt8](payload))
        case "mark":
            guard let mark = object["mark"] as? [String: Any], let name = mark["name"] as? String,
                  name.utf8.count <= maxMarkName else {
                throw SwitchboardError(.badMessage, "agent mark lacks a 'mark.name' of at most \(maxMarkName) bytes")
            }
            return .mark(name)
        case "clear":
            return .clear
        case "checkpoint":
            guard let state = object["state"] else { throw SwitchboardError(.badMessage, "agent checkpoint lacks 'state'") }
            guard let data = try? JSONSerialization.data(withJSONObject: state, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]) else {
                throw SwitchboardError(.badMessage, "agent checkpoint state does not encode as JSON")
            }
            guard data.count <= Checkpoint.maxStateBytes else {
                throw SwitchboardError(.tooLarge, "agent checkpoint state of \(data.count) bytes is over \(Checkpoint.maxStateBytes)")
            }
            return .checkpoint(String(decoding: data, as: UTF8.self))
        default:
            return .other(event)
        }
    }
}

/// Writing JSON strings by hand on hot paths.
public enum JSONText {
    /// `text` as a JSON string literal, quotes included, escaped as JSON requires.
    public static func quoted(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
        return out
    }
}
