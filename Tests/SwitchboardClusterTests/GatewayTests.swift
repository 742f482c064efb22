import Foundation
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardGateway
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardTestSupport
@testable import SwitchboardWorker
import Testing

/// The gateway as Twilio and browsers meet it: webhook, media stream, the call's audio both ways, moves, bad
/// input and draining, against a real cluster (NATS, Redis, a router, workers).
@Suite(.serialized) struct GatewayTests {
    /// Webhook, TwiML, stream: a call to the echo worker hears its own 440 Hz tone back, and `stop` ends it.
    @Test func aTwilioCallThroughWebhookAndStreamHearsItsToneBackAndStopEndsIt() async throws {
        let cluster = try await TestCluster()
        try await cluster.addRouter()
        try await cluster.addWorker()
        try await cluster.waitForWorkers(1)
        let gw = try await RunningGateway(cluster)

        let answer = try await gw.webhook()
        #expect(answer.status == 200)
        let twiml = String(decoding: answer.body, as: UTF8.self)
        #expect(twiml.contains("<Connect><Stream url=\"ws://127.0.0.1:\(gw.port)/twilio/stream/"))
        let (path, parameters) = try RunningGateway.stream(in: twiml)
        #expect(parameters["to"] == "+15550001111" && parameters["from"] == "+15559990000")

        let twilio = try await FakeTwilio(port: gw.port, path: path)
        try await twilio.start(parameters: parameters)
        let began = ContinuousClock.now
        try await twilio.speak(seconds: 2)
        let frequency = twilio.frequency(after: began + .milliseconds(500))
        #expect(frequency.map { abs($0 - 440) <= 5 } == true, "heard \(String(describing: frequency)) Hz")
        #expect(gw.gateway.legCounts[.twilio] == 1)

        let callID = try #require(gw.gateway.liveCalls.first)
        try await twilio.stop()
        try await eventually(timeout: .seconds(10), "the call ended by its caller") {
            let record = try await cluster.record(callID)
            return record["state"] == "ended" && record["end_reason"] == "caller"
        }
        try await eventually(timeout: .seconds(5), "the leg gone") { gw.gateway.legCounts[.twilio] == 0 }
        #expect(gw.metric("switchboard_gateway_legs_total", ["kind": "twilio", "result": "caller"]) == 1)
        await gw.stop()
        await cluster.shutdown()
    }

    /// The call ending on the cluster's side closes the caller's stream.
    @Test func aCallEndedThroughTheAPIClosesItsStream() async throws {
        let cluster = try await TestCluster()
        try await cluster.addRouter()
        try await cluster.addWorker()
        try await cluster.waitForWorkers(1)
        let gw = try await RunningGateway(cluster)
        let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
        let twilio = try await FakeTwilio(port: gw.port, path: path)
        try await twilio.start()
        try await twilio.speak(seconds: 0.5)
        let callID = try #require(gw.gateway.liveCalls.first)
        let ended = try await cluster.http("DELETE", "/v1/calls/\(callID)")
        #expect(ended.status == 200)
        try await eventually(timeout: .seconds(5), "the stream closed") { twilio.isClosed }
        #expect(twilio.closeReason?.contains("api") == true, "close reason: \(twilio.closeReason ?? "none")")
        try await eventually(timeout: .seconds(5), "the leg gone") { gw.gateway.legCounts[.twilio] == 0 }
        await gw.stop()
        await cluster.shutdown()
    }

    /// Only Twilio's signature opens the webhook; an unknown number is rejected; a stream needs a token of
    /// this gateway's, unexpired.
    @Test func webhooksAndStreamsAreRefusedWithoutTheRightSignatureOrToken() async throws {
        let cluster = try await TestCluster()
        let gw = try await RunningGateway(cluster) { $0.streamTokenTTL = .seconds(1) }

        let forged = try await gw.webhook(authToken: "not-the-token")
        #expect(forged.status == 401)
        #expect(String(decoding: forged.body, as: UTF8.self).contains("unauthorized"))
        let unsigned = try await PlainHTTP.request("POST", gw.url + "/twilio/voice", headers: ["Content-Type": "application/x-www-form-urlencoded"],
                                                   body: Data("To=%2B15550001111".utf8))
        #expect(unsigned.status == 401)
        #expect(gw.metric("switchboard_gateway_refusals_total", ["reason": "bad_signature"]) == 2)

        let unknown = try await gw.webhook(to: "+15550009999")
        #expect(String(decoding: unknown.body, as: UTF8.self).contains("<Reject/>"))
        let byPath = try await gw.webhook(to: "+15550009999", path: "/twilio/voice/globex")
        #expect(byPath.status == 200 && String(decoding: byPath.body, as: UTF8.self).contains("/twilio/stream/v1.globex."))
        let badTenant = try await gw.webhook(path: "/twilio/voice/a.b")
        #expect(badTenant.status == 400)

        // A forged token, a token for browsers, an expired one: no upgrade.
        await #expect(throws: SwitchboardError.self) { _ = try await FakeTwilio(port: gw.port, path: "/twilio/stream/v1.acme.99999999999999.AAAA") }
        let browser = StreamToken(tenant: "acme", expiresAtMillis: unixMillisNow() + 60_000)
            .encoded(secret: HMACSHA1.mac(key: gw.gateway.configuration.tokenSecret, message: Array("switchboard-browser-stream".utf8)))
        await #expect(throws: SwitchboardError.self) { _ = try await FakeTwilio(port: gw.port, path: "/twilio/stream/\(browser)") }
        let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
        try await Task.sleep(for: .milliseconds(1_100))
        await #expect(throws: SwitchboardError.self) { _ = try await FakeTwilio(port: gw.port, path: path) }
        #expect(gw.metric("switchboard_gateway_refusals_total", ["reason": "bad_token"]) >= 3)

        let noTwilio = try await RunningGateway(cluster) { $0.twilioAuthToken = nil }
        #expect(try await noTwilio.webhook().status == 503)
        await noTwilio.stop()
        await gw.stop()
        await cluster.shutdown()
    }
}

