import Testing
@testable import SwitchboardCore

@Suite struct TwilioWebhookTests {
    /// Twilio's documented example (checked against Python's hmac in this repository's history of the change).
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    let parameters = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"), ("From", "+12349013030"),
                      ("To", "+18005551212")]

    @Test func signatureMatchesTwiliosExample() {
        #expect(TwilioWebhook.signature(authToken: "12345", url: url, parameters: parameters) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        #expect(TwilioWebhook.isSigned("0/KCTR6DLpKmkAf8muzZqo1nDgQ=", authToken: "12345", url: url, parameters: parameters.reversed()),
                "parameters are sorted by name whatever their order")
    }

    @Test func aChangedParameterURLOrTokenFailsTheSignature() {
        let good = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        var changed = parameters
        changed[2].1 = "1235"
        #expect(!TwilioWebhook.isSigned(good, authToken: "12345", url: url, parameters: changed))
        #expect(!TwilioWebhook.isSigned(good, authToken: "12346", url: url, parameters: parameters))
        #expect(!TwilioWebhook.isSigned(good, authToken: "12345", url: url + "&x=1", parameters: parameters))
        #expect(!TwilioWebhook.isSigned(nil, authToken: "12345", url: url, parameters: parameters))
        #expect(!TwilioWebhook.isSigned("", authToken: "12345", url: url, parameters: parameters))
    }

    @Test func hmacSHA1MatchesRFC2202() {
        // RFC 2202 test case 2, and case 6 (a key longer than the block is hashed first).
        #expect(hex(HMACSHA1.mac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        #expect(hex(HMACSHA1.mac(key: [UInt8](repeating: 0xaa, count: 80),
                                 message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "aa4ae5e15272d00e95705637ce8a3b55ed402112")
    }

    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test func formBodiesDecodeAsBrowsersAndTwilioEncodeThem() throws {
        let fields = try TwilioWebhook.form(Array("CallSid=CA1&From=%2B1234&Caller+Name=A+B%26C&Empty=&Flag".utf8))
        #expect(fields.map(\.0) == ["CallSid", "From", "Caller Name", "Empty", "Flag"])
        #expect(fields.map(\.1) == ["CA1", "+1234", "A B&C", "", ""])
        for bad in ["a=%2", "a=%zz", "a=%", "a=%C3%28"] {
            #expect(throws: SwitchboardError.self, "\(bad)") { _ = try TwilioWebhook.form(Array(bad.utf8)) }
        }
        let huge = [UInt8](repeating: UInt8(ascii: "a"), count: TwilioWebhook.maxBodyBytes + 1)
        #expect((try? TwilioWebhook.form(huge)) == nil)
    }

    @Test func twimlConnectsAStreamAndEscapesWhatItCarries() {
        let xml = TwilioWebhook.connectStream(url: "wss://gw.example.com/twilio/stream/v1.acme.1.sig",
                                              parameters: [("tenant", "acme"), ("note", #"a<b&"c'"#)])
        #expect(xml == #"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://gw.example.com/twilio/stream/v1.acme.1.sig">"#
                + #"<Parameter name="tenant" value="acme"/><Parameter name="note" value="a&lt;b&amp;&quot;c&apos;"/></Stream></Connect></Response>"#)
        #expect(TwilioWebhook.escape("a\u{1}b") == "ab", "control characters cannot appear in XML")
    }

    @Test func streamTokensAreSignedShortLivedAndBoundToTheirTenant() throws {
        let secret = Array("s3cret".utf8)
        let token = StreamToken(tenant: "acme", expiresAtMillis: 10_000).encoded(secret: secret)
        #expect(!token.contains("/") && !token.contains("+") && !token.contains("="), "a path segment")
        #expect(try StreamToken.verify(token, secret: secret, nowMillis: 9_999) == StreamToken(tenant: "acme", expiresAtMillis: 10_000))
        #expect(throws: SwitchboardError.self, "expired") { _ = try StreamToken.verify(token, secret: secret, nowMillis: 10_000) }
        #expect(throws: SwitchboardError.self, "another secret") { _ = try StreamToken.verify(token, secret: Array("other".utf8), nowMillis: 0) }
        let otherTenant = token.replacingOccurrences(of: "acme", with: "evil")
        #expect(throws: SwitchboardError.self, "tenant changed") { _ = try StreamToken.verify(otherTenant, secret: secret, nowMillis: 0) }
        let later = token.replacingOccurrences(of: "10000", with: "99999")
        #expect(throws: SwitchboardError.self, "expiry changed") { _ = try StreamToken.verify(later, secret: secret, nowMillis: 0) }
        for bad in ["", "v1.acme.10000", "v2.acme.10000.x", "v1.acme.-5.x", "v1..10000.x"] {
            #expect(throws: SwitchboardError.self, "\(bad)") { _ = try StreamToken.verify(bad, secret: secret, nowMillis: 0) }
        }
    }

    @Test func constantTimeEqualityIsEquality() {
        #expect(ConstantTime.equal("abc", "abc"))
        #expect(!ConstantTime.equal("abc", "abd"))
        #expect(!ConstantTime.equal("abc", "abcd"))
        #expect(!ConstantTime.equal("", "a"))
        #expect(ConstantTime.equal("", ""))
    }
}

@Suite struct TwilioStreamTests {
    /// What the worker's bridge sends an agent is what Twilio sends a gateway: one decodes the other.
    @Test func decodesWhatTwilioSends() throws {
        let sid = JSONText.quoted("MZ1")
        let start = MediaStream.start(.init(accountSid: "AC1", streamSid: "MZ1", callSid: "CA1", customParameters: ["token": "v1.t.1.x"]))
        #expect(try TwilioStream.decode(Array(MediaStream.connected().utf8)) == .connected)
        #expect(try TwilioStream.decode(Array(start.utf8))
                == .start(.init(accountSid: "AC1", streamSid: "MZ1", callSid: "CA1", customParameters: ["token": "v1.t.1.x"])))
        let media = MediaStream.media(quotedStreamSid: sid, sequence: 3, chunk: 2, timestampMillis: 40, payload: [0xff, 0x7f, 0x00])
        #expect(try TwilioStream.decode(Array(media.utf8)) == .media(chunk: 2, payload: [0xff, 0x7f, 0x00]))
        #expect(try TwilioStream.decode(Array(MediaStream.dtmf(quotedStreamSid: sid, sequence: 4, digit: "#").utf8)) == .dtmf("#"))
        #expect(try TwilioStream.decode(Array(MediaStream.mark(quotedStreamSid: sid, sequence: 5, name: "turn-1").utf8)) == .mark("turn-1"))
        #expect(try TwilioStream.decode(Array(MediaStream.stop(quotedStreamSid: sid, sequence: 6, accountSid: "AC1", callSid: "CA1").utf8)) == .stop)
    }

    @Test(arguments: [
        "[]", "{}", #"{"event":7}"#, #"{"event":"start","start":{}}"#,
        #"{"event":"start","start":{"streamSid":"MZ","callSid":"CA","accountSid":"AC","mediaFormat":{"encoding":"audio/l16","sampleRate":16000}}}"#,
        #"{"event":"start","start":{"streamSid":"MZ","callSid":"CA","accountSid":"AC","customParameters":{"a":1}}}"#,
        #"{"event":"media","media":{"payload":"not base64!"}}"#, #"{"event":"media","media":{"track":"outbound","payload":"AA=="}}"#,
        #"{"event":"dtmf","dtmf":{"digit":"x"}}"#, #"{"event":"dtmf","dtmf":{"digit":"12"}}"#, #"{"event":"mark","mark":{}}"#,
        #"{"event":"hello"}"#,
    ])
    func refusesWhatIsNotAStreamMessage(_ text: String) {
        #expect(throws: SwitchboardError.self) { _ = try TwilioStream.decode(Array(text.utf8)) }
    }

    @Test func refusesOversizedMessagesAndAudio() {
        let big = [UInt8](repeating: UInt8(ascii: " "), count: TwilioStream.maxMessageBytes + 1)
        #expect((try? TwilioStream.decode(big)) == nil)
        let tooMuchAudio = MediaStream.media(quotedStreamSid: "\"MZ\"", sequence: 1, chunk: 1, timestampMillis: 0,
                                             payload: [UInt8](repeating: 0xff, count: TwilioStream.maxMediaBytes + 1))
        let error = try? #require(throws: SwitchboardError.self) { _ = try TwilioStream.decode(Array(tooMuchAudio.utf8)) }
        #expect(error?.code == .tooLarge)
    }
}
