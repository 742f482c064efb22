import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardOpus
import SwitchboardTestSupport
import SwitchboardWorker
import Synchronization
import Testing

/// The agents the bridge is tested against: real processes from `agents/`, in the venv `scripts/agents-venv`
/// makes (the test command makes it first).
enum Agents {
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var python: URL { root.appendingPathComponent(".venv-agents/bin/python") }
    static var reference: String { root.appendingPathComponent("agents/reference_agent.py").path }
    static var pipecat: String { root.appendingPathComponent("agents/pipecat_echo_bot.py").path }

    /// Runs one of agents/'s headless-Chromium scripts and reads the JSON line it prints; records an issue (with
    /// its output) when it does not exit 0 within `timeout`.
    static func browser(_ script: String, _ arguments: [String], timeout: Duration = .seconds(90)) async throws -> [String: Any] {
        let process = try CLIProcess([root.appendingPathComponent("agents/\(script)").path] + arguments, executable: python)
        let status = await process.waitForExit(timeout: timeout)
        #expect(status == 0, "\(script): \(process.output)")
        let line = try #require(process.output.split(separator: "\n").last { $0.hasPrefix("{") }, "\(script): \(process.output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    static func requireVenv() throws {
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            throw TestServerError("no agent venv at \(python.path): run scripts/agents-venv (scripts/test does)")
        }
    }

    /// `--agent-command` for one of the agents, one process per call.
    static func command(_ script: String, _ arguments: String = "") -> String {
        "\(python.path) \(script) --port {port} --one-call \(arguments)"
    }

    /// An agent server of its own (the reference agent, or the Pipecat bot) on a free port.
    static func server(_ script: String) async throws -> (process: CLIProcess, address: AgentAddress) {
        try requireVenv()
        let port = try TestServer.freePort()
        let process = try CLIProcess([script, "--port", "\(port)"], executable: python)
        let deadline = ContinuousClock.now + .seconds(60)
        while !AgentProbe.accepts(port: port) {
            guard ContinuousClock.now < deadline, process.process.isRunning else {
                throw TestServerError("agent \(script) did not listen on \(port):\n\(process.output)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return (process, AgentAddress(host: "127.0.0.1", port: port, path: "/ws"))
    }

    static func isAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno != ESRCH }

    /// The agent's saved state in the call's record (its last checkpoint reached Redis within a second).
    static func savedState(_ record: [String: String]) -> [String: Any]? {
        guard case .success(let checkpoint)? = Checkpoint.parse(record["checkpoint"]), let text = checkpoint.state else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
    }
}

/// A caller on the bus, as a gateway is: speaks a paced tone (Opus, 20 ms a packet) to the worker holding the
/// call (following it when it moves: `CallLeg`), presses keys, and listens to what comes back on `out`.
final class ToneCaller: Sendable {
    let tap: AudioTap
    /// Where its audio goes: the worker holding the call, followed across moves.
    let leg: CallLeg
    private let speaker: Task<Void, Never>
    private final class Keys: Sendable { let pressed = Mutex<[Character]>([]) }
    private let keys = Keys()

    init(_ nats: NATSConnection, _ placement: Placement, subjects: Subjects, frequency: Double = 440) throws {
        tap = try AudioTap(nats, placement.media.out)
        let leg = try CallLeg(nats, placement: placement, subjects: subjects)
        self.leg = leg
        let keys = self.keys
        speaker = Task {
            guard let encoder = try? OpusEncoder() else { return }
            var tone = ToneGenerator(frequency: frequency)
            let clock = ContinuousClock()
            var next = clock.now
            var sequence: UInt32 = 0
            while !Task.isCancelled {
                guard let payload = try? encoder.encode(tone.next(960)) else { return }
                try? leg.send(MediaPacket(sequence: sequence, timestamp: sequence &* 960, payload: payload).encoded())
                if let digit = keys.pressed.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                    try? leg.send(MediaPacket.dtmf(digit, sequence: sequence, timestamp: sequence &* 960).encoded())
                }
                sequence &+= 1
                next += .milliseconds(20)
                try? await Task.sleep(until: next, clock: clock)
            }
        }
    }

    /// Presses `digits`, one with each of the next packets.
    func press(_ digits: String) { keys.pressed.withLock { $0.append(contentsOf: digits) } }

    func hangUp() { speaker.cancel() }

    deinit { speaker.cancel() }
}
