import Foundation
import Logging
import SwitchboardCore
import SwitchboardObservability
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a worker runs one agent process per call (`--agent-command`).
public struct AgentCommand: Sendable, Equatable {
    /// Run by `/bin/sh -c "exec …"`; `{port}` is replaced by the port the process must listen on, which is
    /// also in its environment as `SWITCHBOARD_AGENT_PORT` and `PORT`.
    public var command: String
    /// Processes started ahead and kept ready, so a call never waits for one to start (0: one is started
    /// when a call comes, with the call's id and tenant in its environment too).
    public var poolSize: Int
    /// The WebSocket path the worker asks for on the process's port.
    public var path: String
    /// The whole environment the process gets besides the port (and, without a pool, the call): what the
    /// executable built from `--agent-env-file` and `--agent-env-pass`; never the worker's own.
    public var environment: [String: String]
    /// How long a process may take to accept connections on its port.
    public var startTimeout: Duration
    /// How long a process has between SIGTERM and SIGKILL when its call ends.
    public var killGrace: Duration

    public init(command: String, poolSize: Int = 2, path: String = "/ws", environment: [String: String] = [:],
                startTimeout: Duration = .seconds(30), killGrace: Duration = .seconds(2)) {
        self.command = command
        self.poolSize = poolSize
        self.path = path
        self.environment = environment
        self.startTimeout = startTimeout
        self.killGrace = killGrace
    }

    public func validate() throws(SwitchboardError) {
        guard !command.trimmingCharacters(in: .whitespaces).isEmpty, command.utf8.count <= 8192 else {
            throw SwitchboardError(.invalidArgument, "agent command must be 1-8192 bytes")
        }
        guard (0...1000).contains(poolSize) else { throw SwitchboardError(.invalidArgument, "agent pool must be 0-1000") }
        guard path.hasPrefix("/"), path.utf8.count <= 1024 else { throw SwitchboardError(.invalidArgument, "agent path must start with /") }
        guard startTimeout > .zero, killGrace >= .zero else { throw SwitchboardError(.invalidArgument, "agent timeouts must be positive") }
    }
}

/// The agent processes of one worker: a warm pool of `poolSize` started ahead and refilled in the background,
/// one process per call, each in its own process group, killed with its whole group when its call ends
/// (SIGTERM, then SIGKILL after the grace time), reaped so none is left a zombie. Their output goes to the
/// worker's log, each line with its call's id.
///
/// An offer takes a ready process under the lock (`reserve`), so the worker says yes only to a call it can
/// serve at once; the refill starts a new one after it.
public final class AgentProcessPool: Sendable {
    public let settings: AgentCommand
    private let logger: Logger
    private let metrics: MetricsRegistry

    private struct State {
        var ready: [AgentProcess] = []
        var starting = 0
        /// The process serving each call (reserved at the offer, or started for it).
        var assigned: [String: AgentProcess] = [:]
        /// Every process not yet reaped.
        var alive: [pid_t: AgentProcess] = [:]
        /// Starts that failed in a row: the refill backs off.
        var failuresInARow = 0
        /// Ports picked for processes being spawned (not yet in `alive`).
        var pendingPorts: Set<Int> = []
        /// CPU time of processes a call has had and lost (restarted after a failure), until the call ends.
        var usedByEarlier: [String: Duration] = [:]
    }

    private let state = Mutex(State())
    private let refill: AsyncStream<Void>.Continuation
    private let refills: AsyncStream<Void>

    public init(_ settings: AgentCommand, metrics: MetricsRegistry, logger: Logger) {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        (refills, refill) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Processes ready to take a call now.
    public var readyCount: Int { state.withLock { $0.ready.count } }
    /// Processes not yet reaped (ready, starting to serve, serving, or being killed).
    public var aliveCount: Int { state.withLock { $0.alive.count } }
    /// The pids of processes not yet reaped (for tests and `/metrics`).
    public var alivePIDs: [pid_t] { state.withLock { Array($0.alive.keys) } }

    /// Takes a ready process for `callID`. False with a pool and none ready (the worker refuses the offer);
    /// always true without a pool (a process is started when the call starts).
    func reserve(callID: String) -> Bool {
        guard settings.poolSize > 0 else { return true }
        return takeReady(for: callID) != nil
    }

    /// A ready process, now `callID`'s; the refill starts another.
    private func takeReady(for callID: String) -> AgentProcess? {
        let (taken, ready) = state.withLock { state -> (AgentProcess?, Int) in
            guard let process = state.ready.popLast() else { return (nil, 0) }
            process.assigned(to: callID)
            state.assigned[callID] = process
            return (process, state.ready.count)
        }
        guard let taken else { return nil }
        metrics.set(MetricNames.agentPoolReady, to: Double(ready), help: "Agent processes ready to take a call")
        refill.yield()
        return taken
    }

    /// The call is over (or never started): its process is killed with its group. Returns the CPU time its
    /// processes used for it (those it lost to a failure included), when it could be read.
    @discardableResult
    func release(callID: String) -> Duration? {
        let (process, earlier) = state.withLock { ($0.assigned.removeValue(forKey: callID), $0.usedByEarlier.removeValue(forKey: callID)) }
        guard let process else { return earlier }
        let used = process.cpuSinceAssignment  // read before the kill: a reaped process has no /proc entry
        terminate(process)
        switch (used, earlier) {
        case let (a?, b?): return a + b
        case let (a, b): return a ?? b
        }
    }

    /// The address of the process serving `callID`, ready for a connection: the one reserved for it, else (no
    /// pool, or a restart after its process failed) a ready one from the pool or a new one started now.
    func address(for callID: String, tenant: String, fresh: Bool) async throws(SwitchboardError) -> AgentAddress {
        if fresh, let used = release(callID: callID) {
            state.withLock { $0.usedByEarlier[callID, default: .zero] += used }  // the call's, until it ends
        }
        if let process = state.withLock({ $0.assigned[callID] }) ?? takeReady(for: callID) {
            process.startMetering()
            return AgentAddress(host: "127.0.0.1", port: process.port, path: settings.path)
        }
        let process = try await start(callID: callID, tenant: tenant)
        let stillWanted = state.withLock { state -> Bool in
            guard state.alive[process.pid] != nil else { return false }
            state.assigned[callID] = process
            return true
        }
        guard stillWanted else { throw SwitchboardError(.unavailable, "the agent process exited as it started") }
        process.cpuAtAssignment.withLock { $0 = .zero }  // started for this call: all its CPU is the call's
        return AgentAddress(host: "127.0.0.1", port: process.port, path: settings.path)
    }

    /// Keeps the pool full and reaps processes, until cancelled; then kills every process left.
    func run() async {
        refill.yield()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.reapLoop() }
            group.addTask {
                await withDiscardingTaskGroup { starts in
                    for await _ in self.refills {
                        let (wanted, backoff) = self.state.withLock { state -> (Int, Int) in
                            let wanted = max(0, self.settings.poolSize - state.ready.count - state.starting)
                            state.starting += wanted
                            return (wanted, state.failuresInARow)
                        }
                        for _ in 0..<wanted {
                            starts.addTask {
                                // After failures, wait a little (up to 5 s) so a broken command does not spin.
                                if backoff > 0 { try? await Task.sleep(for: .milliseconds(min(5_000, 100 << min(backoff, 6)))) }
                                await self.startPooled()
                            }
                        }
                    }
                }
            }
            await withTaskCancellationHandler {
                await group.next()
            } onCancel: {
                self.refill.finish()
            }
            group.cancelAll()
        }
        shutDown()
    }

    private func startPooled() async {
        do {
            let process = try await start(callID: nil, tenant: nil)
            state.withLock { state in
                state.starting -= 1
                state.failuresInARow = 0
                if state.alive[process.pid] != nil { state.ready.append(process) }
            }
            metrics.set(MetricNames.agentPoolReady, to: Double(readyCount), help: "Agent processes ready to take a call")
        } catch {
            state.withLock { state in
                state.starting -= 1
                state.failuresInARow += 1
            }
            if error.code != .cancelled { logger.error("agent process did not start", metadata: [LogKey.error: "\(error)"]) }
        }
        refill.yield()
    }

    /// Starts one process and waits until it accepts connections on its port.
    private func start(callID: String?, tenant: String?) async throws(SwitchboardError) -> AgentProcess {
        // A port the kernel just handed out is free again once probed, so two starts at once can be given the
        // same one: never one a process of this pool was given and still holds.
        var port = try AgentSystem.freeLoopbackPort()
        for _ in 0..<20 where state.withLock({ state in state.alive.values.contains { $0.port == port } || state.pendingPorts.contains(port) }) {
            port = try AgentSystem.freeLoopbackPort()
        }
        state.withLock { _ = $0.pendingPorts.insert(port) }
        defer { state.withLock { _ = $0.pendingPorts.remove(port) } }
        var environment = settings.environment
        environment["SWITCHBOARD_AGENT_PORT"] = "\(port)"
        environment["PORT"] = "\(port)"
        if let callID { environment["SWITCHBOARD_CALL_ID"] = callID }
        if let tenant { environment["SWITCHBOARD_TENANT"] = tenant }
        let command = settings.command.replacingOccurrences(of: "{port}", with: "\(port)")
        let clock = ContinuousClock()
        let began = clock.now
        let (pid, output) = try await AgentSpawner.shared.spawn(command: command, environment: environment)
        let process = AgentProcess(pid: pid, port: port)
        process.callID.withLock { $0 = callID }
        state.withLock { $0.alive[pid] = process }
        metrics.increment(MetricNames.agentProcessesStarted, help: "Agent processes started")
        forwardOutput(of: process, from: output)
        let deadline = began + settings.startTimeout
        while clock.now < deadline {
            guard state.withLock({ $0.alive[pid] != nil }) else {
                throw SwitchboardError(.unavailable, "the agent process exited before it listened on port \(port)")
            }
            if AgentSystem.accepts(host: "127.0.0.1", port: port) {
                metrics.observe(MetricNames.agentStartSeconds, [:], (clock.now - began).microseconds / 1e6, buckets: MetricNames.latencyBuckets, help: "Time from starting an agent process to its port accepting connections")
                return process
            }
            do {
                try await Task.sleep(for: .milliseconds(20))
            } catch {
                terminate(process)
                throw SwitchboardError(.cancelled, "the worker stopped while an agent process started")
            }
        }
        terminate(process)
        throw SwitchboardError(.timeout, "the agent process did not listen on port \(port) within \(settings.startTimeout)")
    }

    /// SIGTERM to the process's group now, SIGKILL after the grace time (`reapLoop`).
    private func terminate(_ process: AgentProcess) {
        state.withLock { state in state.ready.removeAll { $0 === process } }
        let first = process.killedAt.withLock { killedAt -> Bool in
            defer { if killedAt == nil { killedAt = .now } }
            return killedAt == nil
        }
        if first { process.signalGroup(SIGTERM) }
    }

    /// Every 50 ms: reaps exited processes (and kills what is left of their groups), escalates to SIGKILL.
    private func reapLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            reapOnce()
        }
    }

    private func reapOnce() {
        let processes = state.withLock { Array($0.alive.values) }
        var exited: [(AgentProcess, Int32)] = []
        for process in processes {
            if let status = AgentSystem.reap(process.pid) {
                process.signalGroup(SIGKILL)  // whatever it started and left behind in its group
                exited.append((process, status))
            } else if let killedAt = process.killedAt.withLock({ $0 }), ContinuousClock.now - killedAt >= settings.killGrace {
                process.signalGroup(SIGKILL)
            }
        }
        guard !exited.isEmpty else { return }
        state.withLock { state in
            for (process, _) in exited {
                state.alive[process.pid] = nil
                state.ready.removeAll { $0 === process }
            }
        }
        for (process, status) in exited {
            let callID = process.callID.withLock { $0 }
            let killed = process.killedAt.withLock { $0 } != nil
            var metadata: Logger.Metadata = ["pid": "\(process.pid)", "status": "\(status)"]
            if let callID { metadata[LogKey.callID] = "\(callID)" }
            if killed {
                logger.debug("agent process ended", metadata: metadata)
            } else {
                metrics.increment(MetricNames.agentProcessesCrashed, help: "Agent processes that exited before their call ended")
                logger.warning("agent process exited by itself", metadata: metadata)
            }
        }
        refill.yield()
    }

    /// Kills every process left and waits (up to the grace time, then SIGKILL) until all are reaped.
    private func shutDown() {
        let processes = state.withLock { state -> [AgentProcess] in
            state.ready.removeAll()
            state.assigned.removeAll()
            return Array(state.alive.values)
        }
        for process in processes { terminate(process) }
        let deadline = ContinuousClock.now + settings.killGrace + .seconds(1)
        while aliveCount > 0 && ContinuousClock.now < deadline {
            reapOnce()
            usleep(20_000)
        }
        for process in state.withLock({ Array($0.alive.values) }) {
            process.signalGroup(SIGKILL)
            var status: Int32 = 0
            _ = waitpid(process.pid, &status, 0)
        }
        state.withLock { $0.alive.removeAll() }
    }

    /// Each line the process writes, to the worker's log with its call's id (a thread per process, ending when
    /// the last holder of the pipe closes it).
    private func forwardOutput(of process: AgentProcess, from fd: Int32) {
        let logger = logger
        let thread = Thread {
            var pending = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 4096)
            func emit(_ line: ArraySlice<UInt8>) {
                var metadata: Logger.Metadata = ["pid": "\(process.pid)"]
                if let callID = process.callID.withLock({ $0 }) { metadata[LogKey.callID] = "\(callID)" }
                logger.info("agent: \(String(decoding: line.prefix(4096), as: UTF8.self))", metadata: metadata)
            }
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending.append(contentsOf: buffer[0..<n])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    emit(pending[..<newline])
                    pending.removeSubrange(...newline)
                }
                if pending.count > 16_384 {  // a line without end: logged in pieces
                    emit(pending[...])
                    pending.removeAll()
                }
            }
            if !pending.isEmpty { emit(pending[...]) }
            close(fd)
        }
        thread.name = "agent-output"
        thread.stackSize = 128 * 1024
        thread.start()
    }
}
