import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import SwitchboardCore
import SwitchboardOpus

/// Where a call's agent session is reached: `ws://host:port/path`.
public struct AgentAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var path: String

    public init(host: String, port: Int, path: String) {
        self.host = host
        self.port = port
        self.path = path
    }

    /// Reads a `ws://host[:port][/path]` URL (the default port is 80, the default path `/`).
    /// - Throws: `invalidArgument` for another scheme (`wss://` included: agents are reached in the cluster's
    ///   own network) or a malformed URL.
    public init(url: String) throws(SwitchboardError) {
        guard url.hasPrefix("ws://") else {
            throw SwitchboardError(.invalidArgument, "agent URL must start with ws:// (got '\(url.prefix(64))')")
        }
        let rest = url.dropFirst("ws://".count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        let hostPart: Substring, portPart: Substring?
        if authority.hasPrefix("[") {  // [::1]:8765
            guard let close = authority.firstIndex(of: "]") else { throw SwitchboardError(.invalidArgument, "agent URL has a bad IPv6 host") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            portPart = after.hasPrefix(":") ? after.dropFirst() : nil
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
            portPart = nil
        }
        guard !hostPart.isEmpty, hostPart.allSatisfy({ $0.isLetter || $0.isNumber || "-._:".contains($0) }) else {
            throw SwitchboardError(.invalidArgument, "agent URL has no valid host")
        }
        let port = portPart.map { Int($0) } ?? 80
        guard let port, (1...65535).contains(port) else { throw SwitchboardError(.invalidArgument, "agent URL has a bad port") }
        guard path.utf8.count <= 1024, !path.contains(where: { $0.isWhitespace || $0 == "#" }) else {
            throw SwitchboardError(.invalidArgument, "agent URL has a bad path")
        }
        self.init(host: String(hostPart), port: port, path: path.isEmpty ? "/" : String(path))
    }

    public var description: String {
        "ws://\(host.contains(":") ? "[\(host)]" : host):\(port)\(path)"
    }
}

/// A WebSocket connection to an agent, client side (every frame it sends is masked, as RFC 6455 requires).
/// Messages split into fragments arrive whole; a frame or a message over `maxMessageBytes` breaks the
/// connection (the decoder refuses it), which the bridge counts as the agent's failure.
enum AgentSocket {
    typealias Channel = NIOAsyncChannel<WebSocketFrame, WebSocketFrame>

    private enum Upgrade: Sendable {
        case websocket(Channel)
        case refused(HTTPResponseStatus?)
    }

    /// Connects and upgrades to WebSocket within `timeout`.
    static func connect(_ address: AgentAddress, timeout: Duration, maxMessageBytes: Int) async throws(SwitchboardError) -> Channel {
        let timeoutMillis = max(1, timeout.milliseconds)
        do {
            let upgrade: EventLoopFuture<Upgrade> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(timeoutMillis))
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: maxMessageBytes) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 256,
                                                                maxAccumulatedFrameSize: maxMessageBytes))
                                return Upgrade.websocket(try Channel(wrappingChannelSynchronously: channel))
                            }
                        }
                        var headers = HTTPHeaders()
                        headers.add(name: "Host", value: address.port == 80 ? address.host : "\(address.host):\(address.port)")
                        headers.add(name: "Content-Length", value: "0")
                        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: address.path, headers: headers)
                        let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in
                                channel.eventLoop.makeCompletedFuture { Upgrade.refused(nil) }
                            })
                        return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                            configuration: .init(upgradeConfiguration: configuration))
                    }
                }
            // A connection that upgrades after this gave up (the deadline, or the call ended) is closed, not leaked.
            let abandon = { upgrade.whenSuccess { if case .websocket(let channel) = $0 { channel.channel.close(promise: nil) } } }
            let result: Upgrade?
            do {
                result = try await withThrowingTaskGroup(of: Upgrade?.self) { group in
                    group.addTask { try await upgrade.get() }
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        return nil
                    }
                    defer { group.cancelAll() }
                    return try await group.next()!
                }
            } catch {
                abandon()
                throw error
            }
            switch result {
            case .websocket(let channel)?:
                return channel
            case .refused?:
                throw SwitchboardError(.connectionFailed, "agent at \(address) did not accept a WebSocket upgrade")
            case nil:
                abandon()
                throw SwitchboardError(.timeout, "agent at \(address) did not answer within \(timeout)")
            }
        } catch let error as SwitchboardError {
            throw error
        } catch {
            throw SwitchboardError(.connectionFailed, "cannot reach the agent at \(address): \(error)")
        }
    }

    /// A text frame as a client sends it.
    static func text(_ text: String) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: ByteBuffer(string: text))
    }

    static func control(_ opcode: WebSocketOpcode, _ data: ByteBuffer = ByteBuffer()) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }
}

/// Reaching an agent from outside a call: whether it listens, and how fast it echoes (for benchmarks and
/// checks by hand).
public enum AgentProbe {
    public static func accepts(host: String = "127.0.0.1", port: Int) -> Bool { AgentSystem.accepts(host: host, port: port) }

    public static func freePort() throws(SwitchboardError) -> Int { try AgentSystem.freeLoopbackPort() }

    /// Starts `command` as agent processes are started (its own process group, SIGKILL when this process dies),
    /// with this process's environment; returns its pid. For benchmarks: the caller kills it (`killpg`).
    public static func spawn(_ command: String) async throws(SwitchboardError) -> Int32 {
        let (pid, output) = try await AgentSpawner.shared.spawn(command: command, environment: ProcessInfo.processInfo.environment)
        close(output)  // not read: the command sends its output elsewhere (`>/dev/null`), or its writes fail
        return pid
    }

    /// Opens a session as a worker does (`connected`, `start` with `metadata` `{"agent":"echo"}`), then sends
    /// `count` 20 ms `media` messages one at a time, timing each until the agent's `media` comes back.
    public static func echoTimes(_ address: AgentAddress, count: Int) async throws -> [Duration] {
        let channel = try await AgentSocket.connect(address, timeout: .seconds(5), maxMessageBytes: MediaStream.maxAgentMessageBytes)
        let sid = JSONText.quoted("MZprobe")
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(AgentSocket.text(MediaStream.connected()))
            try await outbound.write(AgentSocket.text(MediaStream.start(.init(
                accountSid: "AC0", streamSid: "MZprobe", callSid: "probe",
                customParameters: ["call_id": "probe", "metadata": #"{"agent":"echo"}"#, "resumed": "false"]))))
            var frames = inbound.makeAsyncIterator()
            var times: [Duration] = []
            let payload = [UInt8](repeating: 0xFF, count: 160)
            for i in 0..<count {
                let sent = ContinuousClock.now
                try await outbound.write(AgentSocket.text(MediaStream.media(quotedStreamSid: sid, sequence: i + 2, chunk: i + 1,
                                                                            timestampMillis: Int64(i) * 20, payload: payload)))
                while let frame = try await frames.next() {
                    if frame.opcode == .text, case .media? = try? MediaStream.decodeAgentMessage(Array(buffer: frame.unmaskedData)) { break }
                }
                times.append(ContinuousClock.now - sent)
            }
            try await outbound.write(AgentSocket.control(.connectionClose))
            return times
        }
    }

    /// Plays Twilio's side of a media stream at `address` (a gateway's stream URL): `connected`, `start`, then a
    /// 20 ms frame of `tone` every 20 ms for `seconds`, then `stop`. Each `media` that comes back is handed to
    /// `heard` with its arrival time, decoded from mu-law. Returns once the stream is closed (or 2 s after `stop`).
    public static func twilioCall(_ address: AgentAddress, seconds: Double, tone frequency: Double = 440,
                                  heard: @escaping @Sendable (ContinuousClock.Instant, [Int16]) -> Void) async throws {
        let channel = try await AgentSocket.connect(address, timeout: .seconds(5), maxMessageBytes: 1 << 20)
        let streamSid = "MZ" + Identifiers.random(bytes: 16)
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(AgentSocket.text(MediaStream.connected()))
            try await outbound.write(AgentSocket.text(MediaStream.start(.init(accountSid: "AC0", streamSid: streamSid,
                                                                              callSid: "CA" + Identifiers.random(bytes: 16), customParameters: [:]))))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var tone = ToneGenerator(frequency: frequency, sampleRate: 8_000)
                    let sid = JSONText.quoted(streamSid)
                    let clock = ContinuousClock()
                    var next = clock.now
                    for i in 0..<Int(seconds * 50) {
                        try await outbound.write(AgentSocket.text(MediaStream.media(quotedStreamSid: sid, sequence: i + 2, chunk: i + 1,
                                                                                    timestampMillis: Int64(i * 20), payload: MuLaw.encode(tone.next(160)))))
                        next += .milliseconds(20)
                        try await Task.sleep(until: next, clock: clock)
                    }
                    try await outbound.write(AgentSocket.text(#"{"event":"stop","streamSid":"\#(streamSid)"}"#))
                    try await Task.sleep(for: .seconds(2))
                    throw CancellationError()  // the gateway did not close the stream: stop reading it
                }
                group.addTask {
                    for try await frame in inbound {
                        if frame.opcode == .connectionClose { return }
                        guard frame.opcode == .text, case .media(let payload) = try MediaStream.decodeAgentMessage(Array(buffer: frame.unmaskedData))
                        else { continue }
                        heard(.now, MuLaw.decode(payload))
                    }
                }
                defer { group.cancelAll() }
                do {
                    try await group.next()
                } catch is CancellationError {}
            }
        }
    }
}
