import Foundation
import Synchronization
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

/// The `switchboard` executable built beside the test bundle.
func switchboardBinary() throws -> URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("switchboard")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    throw TestServerError("switchboard executable not found near \(CommandLine.arguments[0]); build it first (swift build)")
}

/// A `switchboard` subcommand running as a process of its own, with its output captured.
final class CLIProcess: @unchecked Sendable {  // `process` and `pipe` are set once; the output is behind a lock
    let process = Process()
    private let pipe = Pipe()
    private let captured = CapturedOutput()

    /// `switchboard` with `arguments`, or another program (`executable`: an agent in tests of the bridge).
    init(_ arguments: [String], environment: [String: String] = [:], executable: URL? = nil) throws {
        process.executableURL = try executable ?? switchboardBinary()
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read by a thread of its own with plain read(2), until the end of the output. Not a FileHandle
        // readabilityHandler: that is a libdispatch source on the descriptor, and one left on a closed
        // descriptor crashed libdispatch's event loop, in whatever test ran then (once in a few full runs).
        let fd = pipe.fileHandleForReading.fileDescriptor
        let reader = Thread { [captured] in
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { captured.ended.store(true, ordering: .releasing); return }
                captured.data.withLock { $0.append(contentsOf: chunk[0..<n]) }
            }
        }
        reader.name = "cli-output"
        reader.start()
    }

    var output: String { captured.data.withLock { String(decoding: $0, as: UTF8.self) } }
    var pid: Int32 { process.processIdentifier }

    func waitForOutput(_ text: String, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while !output.contains(text) {
            guard ContinuousClock.now < deadline, process.isRunning else {
                throw TestServerError("no '\(text)' in output of switchboard \(process.arguments ?? []):\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The exit status, once the process has exited and its output has been read to the end (or, should a
    /// child of its own hold the pipe open, a moment later).
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let drained = ContinuousClock.now + .seconds(2)
        while !captured.ended.load(ordering: .acquiring) && ContinuousClock.now < drained {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        // The pipe stays open: its reader thread may still be reading what the process wrote last.
        CLIProcess.keptPipes.withLock { $0.append(pipe) }
    }

    private static let keptPipes = Mutex<[Pipe]>([])
}

/// What a `CLIProcess` wrote, and whether its reader has seen the end of it.
private final class CapturedOutput: Sendable {
    let data = Mutex(Data())
    let ended = Atomic<Bool>(false)
}

@Suite("Failures")
struct FailureTests {
    @Test func aWorkerKilledWithSIGKILLLeavesTheTableOnceItFailsItsPing() async throws {
        // Production liveness (1 s heartbeats, probed at 1.25, suspect after 2, detection time 3): the exact
        // timing is the pure registry's (WorkerRegistryLivenessTests, injected clock); here the real path is
        // checked: the late process is probed, the server answers that nobody listens on its ping subject (its
        // connection closed with the process), and it is dropped on that evidence before it is even suspect.
        let interval = Duration.seconds(1)
        try await withTestCluster(heartbeat: interval, suspectAfter: 2, deadAfter: 3) { cluster in
            let router = try await cluster.addRouter()
            let worker = try CLIProcess(["worker", "--id", "doomed", "--nats-url", cluster.natsURL, "--redis-url", cluster.redisURL,
                                         "--prefix", cluster.subjects.prefix, "--key-prefix", cluster.keys.prefix,
                                         "--heartbeat-interval", "1", "--log-level", "warning"])
            try await eventually(timeout: .seconds(10), "router sees the worker process") {
                router.router.workers().contains { $0.id == "doomed" }
            }
            _ = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            kill(worker.pid, SIGKILL)
            let killedAt = ContinuousClock.now
            try await eventually(timeout: .seconds(15), "worker dropped from the table") {
                !router.router.workers().contains { $0.id == "doomed" }
            }
            let gone = ContinuousClock.now - killedAt
            let metrics = router.router.metrics
            // Pinged on the probe (at 1.25 intervals), or, when this process ticks too late for that, on suspicion.
            let pinged = (metrics.value(MetricNames.workerLiveness, ["event": "probe"]) ?? 0) + (metrics.value(MetricNames.workerLiveness, ["event": "suspect"]) ?? 0)
            #expect(pinged >= 1)
            #expect(metrics.value(MetricNames.workerLiveness, ["event": "dead"]) == 1, "dropped on a failed ping")
            // At most 1.25 intervals after its last heartbeat, plus a tick (100 ms): under the 2 s suspect time when
            // the test process keeps up; a starved one is allowed the suspect path's time.
            #expect(gone < interval * 5, "gone after \(gone)")
            print("SIGKILL to dropped from the table: \(gone.milliseconds) ms")
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).error?.code == "no_capacity")
        }
    }

    @Test func aGracefulShutdownDrainsTheWorkerAndItLeavesTheTableWhenItsLastCallEnds() async throws {
        try await withTestCluster(heartbeat: .seconds(1)) { cluster in
            let router = try await cluster.addRouter()
            let worker = try await cluster.addWorker()
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
            try await eventually("active") { try await cluster.record(call.callID)["state"] == "active" }
            await worker.group.triggerGracefulShutdown()  // as SIGTERM does
            try await eventually("draining") { worker.worker.workerState == .draining }
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).error?.code == "no_capacity")
            #expect(try await cluster.record(call.callID)["state"] == "active", "the call goes on")
            // The drain a signal started is audited like one asked through a router.
            try await eventually(timeout: .seconds(10), "audited") {
                let entries = try decodeJSON(AuditEntries.self, try await cluster.http("GET", "/v1/audit").body).entries
                return entries.contains { $0.action == "drain" && $0.actor == "signal (worker \(worker.id))" && $0.outcome == "ok" }
            }
            #expect(try await cluster.http("DELETE", "/v1/calls/\(call.callID)").status == 200)
            try await worker.task.value
            #expect(try await cluster.record(call.callID)["end_reason"] == "api")
            // Its last heartbeat said "stopping, no calls": the router drops it at once, not after a suspect time (8 s).
            try await eventually(timeout: .seconds(6), "router drops the stopped worker") { router.router.workers().isEmpty }
        }
    }
}
