import Foundation
import SwitchboardCore
import SwitchboardNATS
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
final class CLIProcess: @unchecked Sendable {  // `output` is read only after the process exits or through the lock
    let process = Process()
    private let pipe = Pipe()
    private let lock = NSLock()
    private var buffer = Data()

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = try switchboardBinary()
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else {
                // End of output (or nobody left to read it): stop watching the pipe before it is closed. A
                // watch left on a closed descriptor crashes libdispatch's event loop later.
                handle.readabilityHandler = nil
                return
            }
            self.lock.withLock { self.buffer.append(data) }
        }
        try process.run()
    }

    var output: String { lock.withLock { String(decoding: buffer, as: UTF8.self) } }
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

    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        pipe.fileHandleForReading.readabilityHandler = nil
    }
}

@Suite("Failures")
struct FailureTests {
    @Test func aWorkerKilledWithSIGKILLLeavesTheTableWithinThreeIntervals() async throws {
        let cluster = try await TestCluster(heartbeat: .milliseconds(200), suspectAfter: 2, deadAfter: 3)
        let router = try await cluster.addRouter()
        let worker = try CLIProcess(["worker", "--id", "doomed", "--nats-url", cluster.natsURL, "--redis-url", cluster.redisURL,
                                     "--prefix", cluster.subjects.prefix, "--key-prefix", cluster.keys.prefix,
                                     "--heartbeat-interval", "0.2", "--log-level", "warning"])
        try await eventually(timeout: .seconds(10), "router sees the worker process") {
            router.router.workers().contains { $0.id == "doomed" }
        }
        _ = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t")).call)
        kill(worker.pid, SIGKILL)
        let killedAt = ContinuousClock.now
        try await eventually(timeout: .seconds(3), "worker dropped from the table") {
            !router.router.workers().contains { $0.id == "doomed" }
        }
        let gone = ContinuousClock.now - killedAt
        // 3 intervals (600 ms) plus the expiry tick (100 ms) and scheduling slack.
        #expect(gone <= .milliseconds(900), "gone after \(gone)")
        #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t")).error?.code == "no_capacity")
        await cluster.shutdown()
    }

    @Test func aGracefulShutdownDrainsTheWorkerAndItLeavesTheTableWhenItsLastCallEnds() async throws {
        let cluster = try await TestCluster(heartbeat: .seconds(1))
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
        // Its last heartbeat said "stopping, no calls": the router dropped it without waiting 3 intervals.
        try await eventually(timeout: .milliseconds(500), "router drops the stopped worker") { router.router.workers().isEmpty }
        await cluster.shutdown()
    }
}
