import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real `nats-server` or `redis-server` on a free loopback port, started and stopped by this process: for
/// tests, benchmarks and the local development cluster.
///
/// Every process gets a marker (`<label>-...`, e.g. `sbtest-`) in its arguments and working directory, so the
/// test command can kill any that a crashed run left behind (`scripts/test`).
public final class LocalServer: @unchecked Sendable {  // mutable state is guarded by `lock`
    public enum Kind: String, Sendable {
        case nats = "nats-server", redis = "redis-server"
        /// A Redis Sentinel (`redis-server --sentinel`), its `sentinel monitor ...` lines in `configLines`.
        case sentinel = "redis-sentinel"

        var executable: String { self == .sentinel ? "redis-server" : rawValue }
    }

    public let kind: Kind
    /// Chosen once, at start (another is taken if a free port was grabbed by someone else before the server bound it).
    public private(set) var port: Int
    public let extraArguments: [String]
    /// Lines of a config file the server is started with (Redis and Sentinel; a Sentinel rewrites it).
    public let configLines: [String]
    public let workDirectory: URL
    private let lock = NSLock()
    private var process: Process?
    private var logHandle: FileHandle?

    /// Starts a server of `kind` on a free port (or on `port`), with extra command-line arguments.
    public init(_ kind: Kind, port: Int? = nil, arguments: [String] = [], configLines: [String] = [],
                label: String = "sbtest") async throws {
        self.kind = kind
        self.port = try port ?? LocalServer.freePort()
        self.extraArguments = arguments
        self.configLines = configLines
        self.workDirectory = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(kind.rawValue)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: workDirectory, withIntermediateDirectories: true)
        // A free port is free when the kernel names it, not necessarily when the server binds it a moment later
        // (another test's server may take it between): then another one, a few times.
        var attempt = 0
        while true {
            do {
                try await start()
                return
            } catch let error as LocalServerError where port == nil && attempt < 4 && error.isAddressInUse {
                attempt += 1
                self.port = try LocalServer.freePort()
            }
        }
    }

    /// A server still running when its owner goes is killed at once (no waiting in deinit), and its files go.
    deinit {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        try? logHandle?.close()
        try? FileManager.default.removeItem(at: workDirectory)  // a temporary folder: nothing to do if it is gone
    }

    public var url: String {
        switch kind {
        case .nats: return "nats://127.0.0.1:\(port)"
        case .redis, .sentinel: return "redis://127.0.0.1:\(port)"
        }
    }

    /// The running server's process id (nil when stopped), for tests that freeze it with SIGSTOP.
    public var pid: Int32? { lock.withLock { process.map(\.processIdentifier) } }

    public var logPath: URL { workDirectory.appendingPathComponent("server.log") }

    /// The server's log, for a failing test or a failed start to print.
    public func log() -> String { (try? String(contentsOf: logPath, encoding: .utf8)) ?? "" }

    /// Starts the server and returns once its port accepts connections. Waits without blocking a thread.
    public func start() async throws {
        let p = try launch()
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            // Someone listens: make sure it is ours. A server that could not bind the port exits at once, and
            // whoever holds the port answers in its place.
            if LocalServer.canConnect(port: port) {
                try await Task.sleep(for: .milliseconds(20))
                if p.isRunning { return }
            }
            if !p.isRunning {
                lock.withLock { process = nil }
                throw LocalServerError("\(kind.rawValue) exited at start (status \(p.terminationStatus)):\n\(log())")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        p.terminate()
        lock.withLock { process = nil }
        throw LocalServerError("\(kind.rawValue) did not listen on port \(port) within 10 s:\n\(log())")
    }

    private func launch() throws -> Process {
        lock.lock(); defer { lock.unlock() }
        if let process { return process }
        guard let executable = LocalServer.findExecutable(kind.executable) else {
            throw LocalServerError("\(kind.executable) is not on PATH: install it (scripts/install-deps does)")
        }
        let marker = workDirectory.lastPathComponent
        var args: [String]
        switch kind {
        case .nats:
            args = ["-a", "127.0.0.1", "-p", "\(port)", "-n", marker]
        case .redis, .sentinel:
            // The config file first (Redis reads it, then the flags); a Sentinel needs one it can rewrite.
            let config = workDirectory.appendingPathComponent(kind == .sentinel ? "sentinel.conf" : "redis.conf")
            if !FileManager.default.fileExists(atPath: config.path) {
                try (configLines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
            }
            args = [config.path] + (kind == .sentinel ? ["--sentinel"] : [])
            args += ["--port", "\(port)", "--bind", "127.0.0.1", "--dir", workDirectory.path, "--daemonize", "no"]
            if kind == .redis { args += ["--save", "", "--appendonly", "no"] }
        }
        args += extraArguments
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        _ = FileManager.default.createFile(atPath: logPath.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logPath)
        handle.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        process = p
        logHandle = handle
        return p
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and returns once it has exited and its port is
    /// free. Waits without blocking a thread. `removingFiles`: its folder (data, log) goes too; it cannot be
    /// restarted after.
    public func stop(removingFiles: Bool = false) async {
        defer { if removingFiles { try? FileManager.default.removeItem(at: workDirectory) } }  // temporary: gone is fine
        let (p, handle) = lock.withLock { () -> (Process?, FileHandle?) in
            defer { process = nil; logHandle = nil }
            return (process, logHandle)
        }
        guard let p else { return }
        if p.isRunning {
            Glibc.kill(p.processIdentifier, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(5)
            while p.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
            if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
            while p.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
        }
        try? handle?.close()
        let deadline = ContinuousClock.now + .seconds(5)
        while LocalServer.canConnect(port: port) && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
    }

    /// Kills the server at once (SIGKILL) without waiting, e.g. on the way out of a process.
    public func kill() {
        lock.withLock {
            if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        }
    }

    public func restart() async throws {
        await stop()
        try await start()
    }

    // MARK: - Helpers

    public static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin", "/sbin"]
        for dir in dirs {
            let candidate = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Ports this process has handed out: two servers started at once must not both be given one port
    /// (the kernel may offer a port again as soon as the probe closes it).
    private static let handedOut = Mutex<Set<Int>>([])

    /// A port that was free a moment ago and that this process has not handed out before: bind port 0 on
    /// loopback, read the port, close.
    public static func freePort() throws -> Int {
        for _ in 0..<100 {
            let port = try probePort()
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
        throw LocalServerError("no free port not handed out already")
    }

    private static func probePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalServerError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard bound == 0 else { throw LocalServerError("bind() failed: errno \(errno)") }
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard named == 0 else { throw LocalServerError("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    public static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return result == 0
    }
}

public struct LocalServerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }

    /// The server could not bind its port: someone else holds it (both servers say so in these words).
    var isAddressInUse: Bool { description.localizedCaseInsensitiveContains("address already in use") }
}

