import Foundation

/// The pure parts of answering Twilio's voice webhook (for the gateway, issue 21): the form body it posts, its
/// `X-Twilio-Signature`, the TwiML that connects the call to a media stream, and the short-lived token the stream
/// URL carries. No I/O.
public enum TwilioWebhook {
    /// Largest form body taken (Twilio's voice webhook is a few hundred bytes).
    public static let maxBodyBytes = 16 * 1024

    /// The signature Twilio sends for a POST to `url` with `parameters`: base64 HMAC-SHA1, keyed with the account's
    /// auth token, of the URL followed by each parameter's name and value, sorted by name, with no separators.
    public static func signature(authToken: String, url: String, parameters: [(String, String)]) -> String {
        var message = Array(url.utf8)
        for (name, value) in parameters.sorted(by: { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }) {
            message += Array(name.utf8) + Array(value.utf8)
        }
        return Data(HMACSHA1.mac(key: Array(authToken.utf8), message: message)).base64EncodedString()
    }

    /// Whether `header` is Twilio's signature of this request (compared in constant time).
    public static func isSigned(_ header: String?, authToken: String, url: String, parameters: [(String, String)]) -> Bool {
        guard let header, !header.isEmpty else { return false }
        return ConstantTime.equal(header, signature(authToken: authToken, url: url, parameters: parameters))
    }

    /// Decodes an `application/x-www-form-urlencoded` body: `+` is a space, `%XX` a byte.
    /// - Throws: `tooLarge` over `maxBodyBytes`; `badMessage` for a malformed escape, text that is not UTF-8, or
    ///   more than 256 fields.
    public static func form(_ body: [UInt8]) throws(SwitchboardError) -> [(String, String)] {
        guard body.count <= maxBodyBytes else { throw SwitchboardError(.tooLarge, "form body of \(body.count) bytes is over \(maxBodyBytes)") }
        var fields: [(String, String)] = []
        for pair in body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            guard fields.count < 256 else { throw SwitchboardError(.badMessage, "more than 256 form fields") }
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            fields.append((try decodeComponent(parts[0]), try decodeComponent(parts.count > 1 ? parts[1] : [])))
        }
        return fields
    }

    private static func decodeComponent(_ bytes: ArraySlice<UInt8>) throws(SwitchboardError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            switch bytes[i] {
            case UInt8(ascii: "+"):
                out.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard bytes.distance(from: i, to: bytes.endIndex) >= 3, let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) else {
                    throw SwitchboardError(.badMessage, "malformed %-escape in a form body")
                }
                out.append(high << 4 | low)
                i += 2
            default:
                out.append(bytes[i])
            }
            i += 1
        }
        guard let text = String(validating: out, as: UTF8.self) else { throw SwitchboardError(.badMessage, "form field is not UTF-8") }
        return text
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// TwiML that connects the call to a bidirectional media stream at `url` (wss://), passing `parameters` as
    /// `<Parameter>`s (Twilio strips a stream URL's query string; they reach the stream's `start` event).
    public static func connectStream(url: String, parameters: [(String, String)] = []) -> String {
        var xml = #"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url=""# + escape(url) + #"">"#
        for (name, value) in parameters {
            xml += #"<Parameter name=""# + escape(name) + #"" value=""# + escape(value) + #""/>"#
        }
        return xml + "</Stream></Connect></Response>"
    }

    /// Text for an XML attribute value.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                // Control characters cannot appear in XML 1.0 at all: left out.
                if c.value < 0x20 && c != "\t" && c != "\n" && c != "\r" { continue }
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// A short-lived token for one media stream, carried in the stream URL's path: which tenant's call, until when,
/// signed with the gateway's secret (HMAC-SHA1). Twilio strips query strings from stream URLs, so it is a path
/// segment: `v1.<tenant>.<expiry ms>.<signature, base64url>`.
public struct StreamToken: Sendable, Equatable {
    public var tenant: String
    public var expiresAtMillis: Int64

    public init(tenant: String, expiresAtMillis: Int64) {
        self.tenant = tenant
        self.expiresAtMillis = expiresAtMillis
    }

    public func encoded(secret: [UInt8]) -> String {
        let body = "v1.\(tenant).\(expiresAtMillis)"
        return body + "." + Self.base64URL(HMACSHA1.mac(key: secret, message: Array(body.utf8)))
    }

    /// - Throws: `badMessage` for a token not in the form or with a wrong signature, `authenticationFailed` for
    ///   one that expired.
    public static func verify(_ token: String, secret: [UInt8], nowMillis: Int64) throws(SwitchboardError) -> StreamToken {
        guard token.utf8.count <= 256 else { throw SwitchboardError(.badMessage, "stream token too long") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "v1", let expires = Int64(parts[2]), expires > 0 else {
            throw SwitchboardError(.badMessage, "not a stream token")
        }
        let body = parts[0..<3].joined(separator: ".")
        guard ConstantTime.equal(String(parts[3]), base64URL(HMACSHA1.mac(key: secret, message: Array(body.utf8)))) else {
            throw SwitchboardError(.badMessage, "stream token signature does not match")
        }
        let tenant = String(parts[1])
        do {
            try WireCheck.identifier(tenant, "tenant")
        } catch {
            throw SwitchboardError(.badMessage, "stream token names no valid tenant")
        }
        guard nowMillis < expires else { throw SwitchboardError(.authenticationFailed, "stream token expired") }
        return StreamToken(tenant: tenant, expiresAtMillis: expires)
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// What Twilio sends on a media stream (the gateway's side of Media Streams; `MediaStream` is the worker's side
/// toward an agent). Every message is validated: size, JSON shape, field types and lengths.
public enum TwilioStream {
    /// Largest message taken: a 20 ms mu-law frame is about 300 bytes of JSON; `start` with parameters more.
    public static let maxMessageBytes = 64 * 1024
    /// Largest audio chunk taken from one `media` message (1 s of 8 kHz mu-law).
    public static let maxMediaBytes = 8_000

    public enum Event: Sendable, Equatable {
        case connected
        /// The stream began; its format is mu-law at 8 kHz (anything else is refused).
        case start(MediaStream.Start)
        /// Audio from the caller (mu-law bytes, as the `start`'s format says), with Twilio's chunk number.
        case media(chunk: Int, payload: [UInt8])
        case dtmf(Character)
        /// A mark this side sent came back: the audio before it was played.
        case mark(String)
        case stop
    }

    /// The agent's audio toward the caller (mu-law at 8 kHz), played by Twilio in order. `sid` is quoted
    /// (`JSONText.quoted`) once per stream: this is the hot path.
    public static func media(quotedStreamSid sid: String, payload: [UInt8]) -> String {
        #"{"event":"media","streamSid":\#(sid),"media":{"payload":"\#(Data(payload).base64EncodedString())"}}"#
    }

    /// Drop the audio Twilio has queued for the caller (the agent was interrupted).
    public static func clear(quotedStreamSid sid: String) -> String {
        #"{"event":"clear","streamSid":\#(sid)}"#
    }

    public static func decode(_ bytes: [UInt8]) throws(SwitchboardError) -> Event {
        let (event, object) = try MediaStream.eventObject(bytes, maxBytes: maxMessageBytes, what: "stream message")
        switch event {
        case "connected":
            return .connected
        case "start":
            guard let start = object["start"] as? [String: Any],
                  let streamSid = start["streamSid"] as? String ?? object["streamSid"] as? String,
                  let callSid = start["callSid"] as? String, let accountSid = start["accountSid"] as? String,
                  [streamSid, callSid, accountSid].allSatisfy({ !$0.isEmpty && $0.utf8.count <= 64 }) else {
                throw SwitchboardError(.badMessage, "stream start lacks streamSid, callSid or accountSid of 1-64 bytes")
            }
            let format = start["mediaFormat"] as? [String: Any] ?? [:]
            let encoding = format["encoding"] as? String ?? "audio/x-mulaw"
            let rate = (format["sampleRate"] as? NSNumber)?.intValue ?? 8000
            guard encoding == "audio/x-mulaw", rate == 8000 else {
                throw SwitchboardError(.badMessage, "stream format \(encoding.prefix(32)) at \(rate) Hz is not audio/x-mulaw at 8000 Hz")
            }
            var parameters: [String: String] = [:]
            if let given = start["customParameters"] {
                guard let given = given as? [String: Any], given.count <= 32 else {
                    throw SwitchboardError(.badMessage, "stream customParameters is not an object of at most 32 entries")
                }
                for (name, value) in given {
                    guard let value = value as? String, name.utf8.count <= 64, value.utf8.count <= 1024 else {
                        throw SwitchboardError(.badMessage, "stream custom parameter '\(name.prefix(64))' is not a string of at most 1,024 bytes")
                    }
                    parameters[name] = value
                }
            }
            return .start(MediaStream.Start(accountSid: accountSid, streamSid: streamSid, callSid: callSid, customParameters: parameters))
        case "media":
            guard let media = object["media"] as? [String: Any], let text = media["payload"] as? String,
                  let payload = Data(base64Encoded: text) else {
                throw SwitchboardError(.badMessage, "stream media lacks a base64 'media.payload'")
            }
            guard payload.count <= maxMediaBytes else {
                throw SwitchboardError(.tooLarge, "stream media of \(payload.count) bytes is over \(maxMediaBytes)")
            }
            if let track = media["track"] as? String, track != "inbound" {
                throw SwitchboardError(.badMessage, "stream media on track '\(track.prefix(32))', not inbound")
            }
            let chunk = (media["chunk"] as? String).flatMap { Int($0) } ?? 0
            return .media(chunk: chunk, payload: [UInt8](payload))
        case "dtmf":
            guard let key = MediaStream.digit((object["dtmf"] as? [String: Any])?["digit"]) else {
                throw SwitchboardError(.badMessage, "stream dtmf lacks a 'dtmf.digit' of 0-9, *, #, A-D")
            }
            return .dtmf(key)
        case "mark":
            guard let mark = object["mark"] as? [String: Any], let name = mark["name"] as? String, name.utf8.count <= MediaStream.maxMarkName else {
                throw SwitchboardError(.badMessage, "stream mark lacks a 'mark.name' of at most \(MediaStream.maxMarkName) bytes")
            }
            return .mark(name)
        case "stop":
            return .stop
        default:
            throw SwitchboardError(.badMessage, "unknown stream event '\(event.prefix(32))'")
        }
    }
}
