import Foundation
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardTestSupport
@testable import SwitchboardWorker  // AgentSocket: a WebSocket client, here on Twilio's side of a stream
import Synchronization
import Testing

/// A gateway in the test process, on a free port, on the cluster's bus.
final class RunningGateway: Sendable {
    let gateway: Gateway
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    static let authToken = "test-twilio-auth-token"

    var url: String { "http://127.0.0.1:\(port)" }

    init(_ cluster: TestCluster, _ configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws {
        var config = GatewayConfiguration(id: "gw-\(Identifiers.random(bytes: 2))", subjects: cluster.subjects,
                                          tokenSecret: Array("a-test-token-secret-of-32-bytes-or-more".utf8))
        config.twilioAuthToken = Self.authToken
        config.numbers = ["+15550001111": "acme"]
        config.drainDeadline = .milliseconds(500)  // a test that leaves a leg open ends it soon
        configure(&config)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [cluster.natsURL], name: config.id), logger: quiet)
        let gateway = Gateway(configuration: config, nats: nats, logger: quiet)
        let box = PortBox()
        let http = GatewayHTTP.application(for: gateway, host: "127.0.0.1", port: 0) { box.set($0) }
        let group = ServiceGroup(configuration: .init(services: [.init(service: http), .init(service: gateway)], logger: quiet))
        self.gateway = gateway
        self.group = group
        task = Task {
            defer { nats.close() }
            try await group.run()
        }
        port = try await box.wait()
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    /// Twilio's voice webhook for a call to `to`, signed with `authToken`.
    func webhook(to: String = "+15550001111", path: String = "/twilio/voice", authToken: String = RunningGateway.authToken,
                 callSid: String = "CA" + Identifiers.random(bytes: 16)) async throws -> PlainHTTP.Response {
        let form = [("AccountSid", "AC0123"), ("CallSid", callSid), ("From", "+15559990000"), ("To", to)]
        let signature = TwilioWebhook.signature(authToken: authToken, url: url + path, parameters: form)
        let body = form.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
        return try await PlainHTTP.request("POST", url + path, headers: ["Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature],
                                           body: Data(body.utf8))
    }

    /// The stream URL and parameters in the TwiML a webhook answered.
    static func stream(in twiml: String) throws -> (path: String, parameters: [String: String]) {
        guard let start = twiml.range(of: "url=\""), let end = twiml[start.upperBound...].firstIndex(of: "\"") else {
            throw TestServerError("no stream url in \(twiml)")
        }
        let url = URL(string: String(twiml[start.upperBound..<end]).replacingOccurrences(of: "&amp;", with: "&"))!
        var parameters: [String: String] = [:]
        let pattern = try NSRegularExpression(pattern: #"<Parameter name="([^"]*)" value="([^"]*)"/>"#)
        for match in pattern.matches(in: twiml, range: NSRange(twiml.startIndex..., in: twiml)) {
            parameters[String(twiml[Range(match.range(at: 1), in: twiml)!])] = String(twiml[Range(match.range(at: 2), in: twiml)!])
        }
        return (url.path, parameters)
    }

    func metric(_ name: String, _ labels: [String: String] = [:]) -> Double { gateway.metrics.value(name, labels) ?? 0 }
}

/// Twilio's side of one media stream: connects to the gateway, sends `connected` and `start`, speaks mu-law
/// 8 kHz in 20 ms `media` messages, and records what comes back (the agent's audio, with its arrival times).
final class FakeTwilio: Sendable {
    struct Heard: Sendable {
        var at: ContinuousClock.Instant
        var samples: [Int16]
    }
    private final class Store: Sendable {
        let heard = Mutex<[Heard]>([])
        let texts = Mutex<[String]>([])
        let closed = Mutex<Bool>(false)
        let closeReason = Mutex<String?>(nil)
        let writer = Mutex<NIOAsyncChannelOutboundWriter<WebSocketFrame>?>(nil)
    }
    private let store = Store()
    let streamSid = "MZ" + Identifiers.random(bytes: 16)
    private let channel: AgentSocket.Channel
    private let reader: Task<Void, Never>

    init(port: Int, path: String) async throws {
        let channel = try await AgentSocket.connect(AgentAddress(host: "127.0.0.1", port: port, path: path), timeout: .seconds(5),
                                                    maxMessageBytes: 1 << 20)
        self.channel = channel
        let store = store
        let ready = AsyncStream<Void>.makeStream()
        reader = Task {
            try? await channel.executeThenClose { inbound, outbound in
                store.writer.withLock { $0 = outbound }
                ready.continuation.finish()
                for try await frame in inbound {
                    switch frame.opcode {
                    case .text:
                        let text = String(buffer: frame.unmaskedData)
                        if let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                           object["event"] as? String == "media", let media = object["media"] as? [String: Any],
                           let payload = (media["payload"] as? String).flatMap({ Data(base64Encoded: $0) }) {
                            store.heard.withLock { $0.append(Heard(at: .now, samples: MuLaw.decode(payload))) }
                        } else {
                            store.texts.withLock { $0.append(text) }
                        }
                    case .connectionClose:
                        store.closeReason.withLock { $0 = String(buffer: frame.unmaskedData).dropFirst(2).description }
                        store.closed.withLock { $0 = true }
                        return
                    default:
                        break
                    }
                }
            }
            ready.continuation.finish()
            store.closed.withLock { $0 = true }
        }
        for await _ in ready.stream {}
    }

    deinit { reader.cancel(); channel.channel.close(promise: nil) }

    func send(_ text: String) async throws {
        guard let outbound = store.writer.withLock({ $0 }) else { throw TestServerError("the stream is closed") }
        try await outbound.write(AgentSocket.text(text))
    }

    func send(frame: WebSocketFrame) async throws {
        guard let outbound = store.writer.withLock({ $0 }) else { throw TestServerError("the stream is closed") }
        try await outbound.write(frame)
    }

    func start(parameters: [String: String] = [:]) async throws {
        try await send(MediaStream.connected())
        try await send(MediaStream.start(.init(accountSid: "AC0123", streamSid: streamSid, callSid: "CA" + Identifiers.random(bytes: 16),
                                               customParameters: parameters)))
    }

    /// Speaks a tone for `seconds`, one 20 ms frame every 20 ms.
    func speak(seconds: Double, frequency: Double = 440) async throws {
        var tone = ToneGenerator(frequency: frequency, sampleRate: 8_000)
        let sid = JSONText.quoted(streamSid)
        let clock = ContinuousClock()
        var next = clock.now
        for i in 0..<Int(seconds * 50) {
            try await send(MediaStream.media(quotedStreamSid: sid, sequence: i + 2, chunk: i + 1, timestampMillis: Int64(i * 20),
                                             payload: MuLaw.encode(tone.next(160))))
            next += .milliseconds(20)
            try await Task.sleep(until: next, clock: clock)
        }
    }

    func stop() async throws { try await send(#"{"event":"stop","streamSid":"\#(streamSid)"}"#) }

    var heard: [Heard] { store.heard.withLock { $0 } }
    var texts: [String] { store.texts.withLock { $0 } }
    var isClosed: Bool { store.closed.withLock { $0 } }
    /// The reason in the gateway's close frame.
    var closeReason: String? { store.closeReason.withLock { $0 } }

    /// The frequency of what came back after `instant` (at least 0.2 s of it), or nil.
    func frequency(after instant: ContinuousClock.Instant) -> Double? {
        let samples = heard.filter { $0.at > instant }.flatMap(\.samples)
        guard samples.count >= 1_600 else { return nil }
        return SignalAnalysis.dominantFrequency(Array(samples.suffix(4_000)), sampleRate: 8_000, from: 300, to: 600, step: 1)
    }

    /// The longest time between two frames that carry sound, among those heard in `window`.
    func longestGap(in window: ClosedRange<ContinuousClock.Instant>) -> Duration {
        let loud = heard.filter { window.contains($0.at) && SignalAnalysis.rms($0.samples) > 300 }.map(\.at)
        return zip(loud, loud.dropFirst()).map { $1 - $0 }.max() ?? .zero
    }
}
