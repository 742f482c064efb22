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

/// A gateway in the test process, on a free port, on the cluster's bus: `TestCluster.addGateway` starts one, and
/// the cluster stops it.
final class RunningGateway: Sendable {
    let gateway: Gateway
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    static let authToken = "test-twilio-auth-token"

    var url: String { "http://127.0.0.1:\(port)" }

    init(_ cluster: TestCluster, tracer: Tracer? = nil, _ configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws {
        var config = GatewayConfiguration(id: "gw-\(Identifiers.random(bytes: 2))", subjects: cluster.subjects, keys: cluster.keys,
                                          tokenSecret: Array("a-test-token-secret-of-32-bytes-or-more".utf8))
        config.twilioAuthToken = Self.authToken
        config.numbers = ["+15550001111": "acme"]
        config.drainDeadline = .milliseconds(500)  // a test that leaves a leg open ends it soon
        configure(&config)
        let nats = try await NATSConnection.connect(NATSConfiguration(servers: [cluster.natsURL], name: config.id), logger: quiet)
        let gateway = Gateway(configuration: config, nats: nats, redis: cluster.redis, tracer: tracer, logger: quiet)
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
        /// Media messages that named another stream than this one.
        let foreign = Mutex<Int>(0)
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
        let (store, sid) = (store, streamSid)
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
                            if object["streamSid"] as? String != sid { store.foreign.withLock { $0 += 1 } }
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
        try await speak(seconds: seconds, chord: [frequency])
    }

    /// Speaks the sum of tones at `chord`'s frequencies for `seconds`, one 20 ms frame every 20 ms.
    func speak(seconds: Double, chord: [Double]) async throws {
        var tones = chord.map { ToneGenerator(frequency: $0, sampleRate: 8_000, amplitude: 8_000 / Double(chord.count)) }
        let sid = JSONText.quoted(streamSid)
        let clock = ContinuousClock()
        var next = clock.now
        for i in 0..<Int(seconds * 50) {
            try await send(MediaStream.media(quotedStreamSid: sid, sequence: i + 2, chunk: i + 1, timestampMillis: Int64(i * 20),
                                             payload: MuLaw.encode(mix(tones.indices.map { tones[$0].next(160) }))))
            next += .milliseconds(20)
            try await Task.sleep(until: next, clock: clock)
        }
    }

    func stop() async throws { try await send(#"{"event":"stop","streamSid":"\#(streamSid)"}"#) }

    /// A key the caller pressed.
    func press(_ digit: Character) async throws {
        try await send(#"{"event":"dtmf","streamSid":"\#(streamSid)","sequenceNumber":"99","dtmf":{"track":"inbound_track","digit":"\#(digit)"}}"#)
    }

    private func mix(_ parts: [[Int16]]) -> [Int16] {
        (0..<160).map { i in Int16(parts.reduce(0) { $0 + Int($1[i]) }) }
    }

    var heard: [Heard] { store.heard.withLock { $0 } }
    /// Media messages that came back naming another stream.
    var foreignMessages: Int { store.foreign.withLock { $0 } }
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

/// Twilio's side of a media stream that speaks and never reads: a plain socket with a small receive buffer, on a
/// thread of its own, that upgrades to WebSocket, sends `connected`, `start` and a 440 Hz tone every 20 ms, and
/// reads nothing after the handshake. What a stuck or overloaded media server does to the gateway.
final class DeafTwilio: Sendable {
    private final class Flags: Sendable {
        let stopping = Atomic<Bool>(false)
        let broken = Atomic<Bool>(false)
    }
    private let flags = Flags()
    private let finished = AsyncStream<Void>.makeStream()

    init(port: Int, path: String) async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestServerError("socket: \(errno)") }
        // Set before connecting, so the window the gateway sees is small from the start.
        var size: Int32 = 4_096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); throw TestServerError("connect: errno \(errno)") }
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let upgrade = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        guard Self.send(fd, Array(upgrade.utf8)) else { close(fd); throw TestServerError("cannot send the upgrade") }
        var response: [UInt8] = []
        var byte: UInt8 = 0
        while !response.ends(with: Array("\r\n\r\n".utf8)) {
            guard recv(fd, &byte, 1, 0) == 1 else { close(fd); throw TestServerError("no upgrade answer: \(String(decoding: response, as: UTF8.self))") }
            response.append(byte)
        }
        guard String(decoding: response, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            close(fd)
            throw TestServerError("not upgraded: \(String(decoding: response, as: UTF8.self))")
        }
        let (flags, finished) = (flags, finished.continuation)
        let sid = "MZ" + Identifiers.random(bytes: 16)
        Thread {
            defer { close(fd); finished.finish() }
            let quoted = JSONText.quoted(sid)
            let opening = [MediaStream.connected(), MediaStream.start(.init(accountSid: "AC0123", streamSid: sid, callSid: "CA" + Identifiers.random(bytes: 16),
                                                                            customParameters: [:]))]
            for text in opening where !Self.send(fd, Self.maskedText(text)) { flags.broken.store(true, ordering: .relaxed); return }
            var tone = ToneGenerator(frequency: 440, sampleRate: 8_000)
            var i = 0
            while !flags.stopping.load(ordering: .relaxed) {
                let text = MediaStream.media(quotedStreamSid: quoted, sequence: i + 2, chunk: i + 1, timestampMillis: Int64(i * 20),
                                             payload: MuLaw.encode(tone.next(160)))
                guard Self.send(fd, Self.maskedText(text)) else { flags.broken.store(true, ordering: .relaxed); return }
                i += 1
                usleep(20_000)
            }
        }.start()
    }

    /// The gateway has closed the connection: a write to it failed.
    var isBroken: Bool { flags.broken.load(ordering: .relaxed) }

    /// Stops speaking and closes the socket.
    func stop() async {
        flags.stopping.store(true, ordering: .relaxed)
        for await _ in finished.stream {}
    }

    private static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    /// One text frame as a client sends it: final, masked.
    private static func maskedText(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        switch payload.count {
        case ..<126: frame.append(0x80 | UInt8(payload.count))
        case ..<65_536: frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: frame += [0x80 | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $1 ^ mask[$0 % 4] }
        return frame
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

/// An agent that takes turns, as a voice agent does: once the caller has spoken and then been quiet for 300 ms,
/// it answers with half a second of 660 Hz, one 20 ms frame every 20 ms.
struct TurnTakingHandler: CallHandler {
    func run(_ call: CallContext) async throws {
        var (heardSpeech, quiet) = (false, 0)
        var replies: [Task<Void, any Error>] = []
        defer { replies.forEach { $0.cancel() } }
        for await frame in call.audio {
            if SignalAnalysis.rms(frame.samples) > 500 {
                (heardSpeech, quiet) = (true, 0)
                continue
            }
            quiet += 1
            guard heardSpeech, quiet == 15 else { continue }
            heardSpeech = false
            replies.append(Task {
                var tone = ToneGenerator(frequency: 660, sampleRate: call.sampleRate)
                let clock = ContinuousClock()
                var next = clock.now
                for _ in 0..<25 {
                    try call.send(tone.next(call.frameSamples))
                    next += .milliseconds(20)
                    try await Task.sleep(until: next, clock: clock)
                }
            })
        }
    }
}
