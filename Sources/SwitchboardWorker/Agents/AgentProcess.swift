import CSwitchboardSys
import Foundation
import Logging
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One agent process the worker started: its pid (also its process group's id), the loopback port it listens
/// on, and the pipe its output comes through.
final class AgentProcess: Sendable {
    let pid: pid_t
    let port: Int
    let startedAt: ContinuousClock.Instant
    /// The call it serves, for its log lines (nil while it waits in the pool).
    let callID = Mutex<String?>(nil)
    /// When its group was sent SIGTERM (SIGKILL follows after the grace time).
    let killedAt = Mutex<ContinuousClock.Instant?>(nil)
    /// Its CPU time when its call's run reached it (what it used warming up in the pool is not the call's).
    let cpuAtAssignment = Mutex<Duration?>(nil)

    /// The CPU time the process has used so far (user and system, its reaped children's included), from
    /// `/proc/<pid>/stat`; nil when it cannot be read (gone, not Linux).
    var cpuTime: Duration? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let ticks = ProcessCPU.ticks(statLine: text) else { return nil }
        return .milliseconds(ticks * 1000 / ProcessCPU.ticksPerSecond)
    }

    /// Marks the moment it takes its call (on the offer's path: nothing is read here).
    func assigned(to callID: String) {
        self.callID.withLock { $0 = callID }
    }

    /// From now on its CPU time is its call's: read once, when the call's run reaches it.
    func startMetering() {
        guard cpuAtAssignment.withLock({ $0 == nil }) else { return }
        let now = cpuTime  // read from /proc outside any lock
        cpuAtAssignment.withLock { if $0 == nil { $0 = now } }
    }

    /// CPU time used since it took its call; nil when unknown.
    var cpuSinceAssignment: Duration? {
        guard let start = cpuAtAssignment.withLock({ $0 }), let now = cpuTime else { return nil }
        return max(.zero, now - start)
    }

    init(pid: pid_t, port: Int) {
        self.pid = pid
        self.port = port
        startedAt = .now
    }

    /// Sends `signal` to the whole process group (the agent and everything it started).
    func signalGroup(_ signal: Int32) {
        _ = killpg(pid, signal)
    }
}

/// Starts agent processes from one thread that lives as long as the worker: each child asks the kernel for
/// SIGKILL when the thread that forked it exits (PR_SET_PDEATHSIG), so that thread must never end before the
/// process does, which a thread of the concurrency pool might. Starting a process takes well under a
/// millisecond; requests wait their turn.
final class AgentSpawner: @unchecked Sendable {
    // @unchecked: `requests` and `wake` are only touched under `lock`.
    private let lock = NSCondition()
    private var requests: [(@Sendable () -> Void)] = []

    static let shared = AgentSpawner()

    private init() {
        let thread = Thread { [self] in
            while true {
                lock.lock()
                while requests.isEmpty { lock.wait() }
                let next = requests.removeFirst()
                lock.unlock()
                next()
            }
        }
        thread.name = "agent-spawner"
        thread.stackSize = 256 * 1024
        thread.start()
    }

    /// Runs `sh -c "exec COMMAND"` with exactly `environment`, its output on a new pipe; returns the pid and the
    /// pipe's read end (the caller owns it).
    func spawn(command: String, environment: [String: String]) async throws(SwitchboardError) -> (pid: pid_t, output: Int32) {
        let result: Result<(pid_t, Int32), SwitchboardError> = await withCheckedContinuation { continuation in
            lock.lock()
            requests.append {
                continuation.resume(returning: Self.spawnNow(command: command, environment: environment))
            }
            lock.signal()
            lock.unlock()
        }
        return try result.get()
    }

    private static func spawnNow(command: String, environment: [String: String]) -> Result<(pid_t, Int32), SwitchboardError> {
        var fds: [Int32] = [0, 0]
        guard sb_pipe_cloexec(&fds) == 0 else {
            return .failure(SwitchboardError(.internalError, "cannot make a pipe for an agent: \(String(cString: strerror(errno)))"))
        }
        let argv = ["/bin/sh", "-c", "exec " + command]
        let envp = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let pid = withCStrings(argv) { argvPointers in
            withCStrings(envp) { envPointers in
                sb_spawn_agent("/bin/sh", argvPointers, envPointers, fds[1])
            }
        }
        close(fds[1])
        guard pid > 0 else {
            close(fds[0])
            return .failure(SwitchboardError(.internalError, "cannot start the agent: \(String(cString: strerror(errno)))"))
        }
        return .success((pid, fds[0]))
    }
}

/// `strings` as a NULL-terminated array of C strings, valid during `body`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

enum AgentSystem {
    /// A TCP port on the loopback that is free now (the kernel's pick), for an agent process to listen on.
    static func freeLoopbackPort() throws(SwitchboardError) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SwitchboardError(.internalError, "cannot open a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw SwitchboardError(.internalError, "cannot find a free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on `host:port` now (a loopback connect answers at once).
    static func accepts(host: String, port: Int) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0 {
                // Non-blocking, so a host that drops packets cannot hold this thread: at most 200 ms.
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                var ok = connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0
                if !ok && errno == EINPROGRESS {
                    var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    ok = poll(&poller, 1, 200) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0
                }
                close(fd)
                if ok { return true }
            }
            entry = info.pointee.ai_next
        }
        return false
    }

    /// Reaps `pid` if it has exited: its exit status (or -signal), nil while it runs.
    static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == 0 { return nil }
        if result < 0 { return errno == ECHILD ? -1 : nil }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }  // WIFEXITED: WEXITSTATUS
        return -(status & 0x7f)  // WTERMSIG
    }
}

/// A process's CPU time from Linux's `/proc/<pid>/stat`.
public enum ProcessCPU {
    static let ticksPerSecond = Int64(max(1, sysconf(Int32(_SC_CLK_TCK))))

    /// utime + stime + cutime + cstime (fields 14-17), in clock ticks; nil for a line that is not one. The
    /// command name (field 2) is in parentheses and may hold spaces and parentheses: fields are counted after
    /// its last `)`.
    public static func ticks(statLine: String) -> Int64? {
        guard let close = statLine.lastIndex(of: ")") else { return nil }
        let fields = statLine[statLine.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // After the name: state is field 3, so utime (14) is the 12th and cstime (17) the 15th.
        guard fields.count >= 15 else { return nil }
        var total: Int64 = 0
        for field in fields[11...14] {
            guard let value = Int64(field), value >= 0 else { return nil }
            total += value
        }
        return total
    }
}
