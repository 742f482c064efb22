import Foundation

/// The gateway's WebSocket protocol with its browser page (docs/gateway.md): 20 ms frames of 16-bit
/// little-endian PCM at 16 kHz as binary messages both ways, and a few JSON events as text. Every message from
/// the browser is validated: size, shape, values.
public enum BrowserStream {
    public static let sampleRate = 16_000
    public static let frameSamples = sampleRate / 50
    /// One frame: 20 ms of 16-bit samples.
    public static let frameBytes = frameSamples * 2
    /// Largest text message taken from a browser.
    public static let maxTextBytes = 1024

    public enum Event: Sendable, Equatable {
        case dtmf(Character)
        case hangup
    }

    /// One frame of the caller's audio.
    /// - Throws: `badMessage` for anything but exactly one frame.
    public static func audio(_ bytes: [UInt8]) throws(SwitchboardError) -> [Int16] {
        guard bytes.count == frameBytes else {
            throw SwitchboardError(bytes.count > frameBytes ? .tooLarge : .badMessage,
                                   "audio frame of \(bytes.count) bytes; one frame is \(frameBytes) (20 ms of 16-bit PCM at 16 kHz)")
        }
        return (0..<frameSamples).map { Int16(bitPattern: UInt16(bytes[2 * $0]) | UInt16(bytes[2 * $0 + 1]) << 8) }
    }

    /// One frame toward the browser.
    public static func encode(_ samples: [Int16]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: samples.count * 2)
        for (i, sample) in samples.enumerated() {
            let value = UInt16(bitPattern: sample)
            bytes[2 * i] = UInt8(truncatingIfNeeded: value)
            bytes[2 * i + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        return bytes
    }

    /// A text message from the browser.
    public static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> Event {
        let (event, object) = try MediaStream.eventObject(bytes, maxBytes: maxTextBytes, what: "text message")
        switch event {
        case "dtmf":
            guard let key = MediaStream.digit(object["digit"]) else {
                throw SwitchboardError(.badMessage, "dtmf lacks a 'digit' of 0-9, *, #, A-D")
            }
            return .dtmf(key)
        case "hangup":
            return .hangup
        default:
            throw SwitchboardError(.badMessage, "unknown event '\(event.prefix(32))'")
        }
    }

    public static func started(callID: String) -> String {
        #"{"event":"started","call_id":\#(JSONText.quoted(callID)),"sample_rate":\#(sampleRate)}"#
    }

    public static let clear = #"{"event":"clear"}"#

    public static func ended(_ reason: EndReason) -> String {
        #"{"event":"ended","reason":"\#(reason.rawValue)"}"#
    }

    public static func error(_ error: SwitchboardError) -> String {
        #"{"event":"error","code":"\#(error.code.rawValue)","message":\#(JSONText.quoted(error.message))}"#
    }
}
