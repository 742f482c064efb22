import CHiredis
import Foundation
import Logging
import SwitchboardCore
import Synchronization

/// A pool of Redis connections that never blocks a thread of Swift's cooperative pool.
///
/// Each connection is a blocking hiredis context on an OS thread of its own (hiredis wants one context per
/// thread); the threads take jobs from one shared queue and callers await a continuation. A pipeline is one
/// job, so its commands share one round trip. See docs/decisions/0003-redis-thread-per-connection.md.
///
/// After a connection fails (the server restarted, the network dropped) the command that saw it fails with
/// a coded error and is not retried (it may have run); every other connection reconnects before its next
/// command, so at most one command fails per outage. Commands made while the server is down fail fast with
/// `connection_failed`.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    let logger: Logger
    private let pool: RedisPool

    public init(configuration: RedisConfiguration, logger: Logger = Logger(label: "switchboard.redis")) throws(SwitchboardError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        pool = RedisPool(configuration: configuration, logger: logger)
        for index in 0..<configuration.poolSize {
            let thread = Thread { [pool] in pool.serve() }
            thread.name = "redis-\(index)"
            thread.start()
        }
    }

    convenience public init(url: String, poolSize: Int = 4, logger: Logger = Logger(label: "switchboard.redis")) throws(SwitchboardError) {
        var configuration = try RedisConfiguration(url: url)
        configuration.poolSize = poolSize
        try self.init(configuration: configuration, logger: logger)
    }

    deinit { pool.queue.close() }

    /// Stops the pool: queued commands fail with `connection_closed`, each thread frees its connection and ends.
    public func close() { pool.queue.close() }

    // MARK: - Commands

    /// Runs one command. An error reply throws `server_error` (`authentication_failed` for NOAUTH/WRONGPASS)
    /// with Redis' text.
    public func send(_ arguments: [String]) async throws(SwitchboardError) -> RedisValue {
        try await send(RedisCommand(arguments))
    }

    public func send(_ command: RedisCommand) async throws(SwitchboardError) -> RedisValue {
        let reply = try await pipeline([command])[0]
        if case .error(let text) = reply { throw Self.replyError(text, command) }
        return reply
    }

    /// Runs the commands in one round trip on one connection; replies in order, error replies in place.
    public func pipeline(_ commands: [RedisCommand]) async throws(SwitchboardError) -> [RedisValue] {
        guard !commands.isEmpty else { return [] }
        var bytes = 0
        for command in commands {
            guard !command.arguments.isEmpty else { throw SwitchboardError(.invalidArgument, "empty Redis command") }
            bytes += command.byteCount
        }
        guard bytes <= configuration.maxCommandBytes else {
            throw SwitchboardError(.tooLarge, "Redis command of \(bytes) bytes is over the limit of \(configuration.maxCommandBytes)")
        }
        return try await run { connection throws(SwitchboardError) in try connection.execute(commands) }
    }

    /// Runs a Lua script by its SHA; if Redis does not know it (a restart, `SCRIPT FLUSH`), loads it and
    /// runs it again, on the same connection.
    public func evaluate(_ script: RedisScript, keys: [String] = [], arguments: [String] = []) async throws(SwitchboardError) -> RedisValue {
        let evalsha = RedisCommand(["EVALSHA", script.sha1, String(keys.count)] + keys + arguments)
        let reply = try await run { connection throws(SwitchboardError) -> RedisValue in
            let first = try connection.execute([evalsha])[0]
            guard case .error(let text) = first, text.hasPrefix("NOSCRIPT") else { return first }
            let loaded = try connection.execute([RedisCommand("SCRIPT", "LOAD", script.source)])[0]
            if case .error = loaded { return loaded }
            return try connection.execute([evalsha])[0]
        }
        if case .error(let text) = reply { throw Self.replyError(text, evalsha) }
        return reply
    }

    /// One PING round trip.
    public func ping() async throws(SwitchboardError) -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await send(["PING"])
        return clock.now - start
    }

    /// The server's `redis_version`.
    public func serverVersion() async throws(SwitchboardError) -> String {
        let info = try await send(["INFO", "server"]).string ?? ""
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("redis_version:") {
            return String(line.dropFirst("redis_version:".count))
        }
        return "unknown"
    }

    /// `HGETALL` as a dictionary of strings.
    public func hashGetAll(_ key: String) async throws(SwitchboardError) -> [String: String] {
        let items = try await send(["HGETALL", key]).array ?? []
        var result: [String: String] = [:]
        var i = 0
        while i + 1 < items.count {
            if let k = items[i].string, let v = items[i + 1].string { result[k] = v }
            i += 2
        }
        return result
    }

    static func replyError(_ text: String, _ command: RedisCommand) -> SwitchboardError {
        let code: SwitchboardError.Code = text.hasPrefix("NOAUTH") || text.hasPrefix("WRONGPASS") ? .authenticationFailed : .serverError
        return SwitchboardError(code, "Redis \(command.name): \(text)")
    }

    // MARK: - The pool

    /// Runs `body` on a pool thread with a connected connection and awaits its result.
    private func run<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws(SwitchboardError) -> T) async throws(SwitchboardError) -> T {
        let result: Result<T, SwitchboardError> = await withCheckedContinuation { continuation in
            let accepted = pool.queue.push { connection in
                continuation.resume(returning: connection.flatMap { c in Result { () throws(SwitchboardError) -> T in try body(c) } })
            }
            if !accepted { continuation.resume(returning: .failure(JobQueue.closedError)) }
        }
        return try result.get()
    }
}

/// The pool threads' shared state: the job queue and the connection epoch.
final class RedisPool: Sendable {
    let queue = JobQueue()
    /// Bumped when a connection is found broken; connections made in an older epoch reconnect.
    let epoch = Atomic<Int>(0)
    let configuration: RedisConfiguration
    let logger: Logger

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// A pool thread: reconnects as needed, runs jobs, frees its connection when the queue closes.
    func serve() {
        let connection = RedisConnection(configuration: configuration)
        var spin = Duration.zero  // only a thread that just worked spins for the next job
        while let job = queue.pop(spin: spin) {
            spin = .microseconds(50)
            let current = epoch.load(ordering: .acquiring)
            if !connection.isConnected || connection.epoch < current {
                let wasConnected = connection.epoch >= 0
                do {
                    try connection.connect(epoch: current)
                } catch {
                    job(.failure(error))
                    continue
                }
                if wasConnected { logger.info("redis reconnected", metadata: ["redis.url": "\(configuration.endpoint.redacted)"]) }
            }
            let connectionEpoch = connection.epoch
            job(.success(connection))
            if !connection.isConnected {
                // This connection found the server gone: the others reconnect before their next command.
                _ = epoch.compareExchange(expected: connectionEpoch, desired: connectionEpoch + 1, ordering: .acquiringAndReleasing)
                logger.warning("redis connection lost", metadata: ["redis.url": "\(configuration.endpoint.redacted)"])
            }
        }
        connection.disconnect()
    }
}

/// Jobs waiting for a pool thread. A job gets a connection, or nil when the queue closed before it ran.
final class JobQueue: @unchecked Sendable {  // all state is guarded by `condition`
    typealias Job = @Sendable (Result<RedisConnection, SwitchboardError>) -> Void
    static let closedError = SwitchboardError(.connectionClosed, "Redis client closed")
    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var head = 0
    private var closed = false

    /// Adds a job; false if the queue is closed.
    func push(_ job: @escaping Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// The next job, waiting for one; nil once closed and empty.
    ///
    /// A thread that has just finished a job first looks for the next one for up to `spin` before it sleeps:
    /// a caller issuing commands one after another sends the next within microseconds, and waking a
    /// sleeping thread costs more than the whole Redis round trip on loopback. An idle pool sleeps.
    func pop(spin: Duration = .zero) -> Job? {
        if spin > .zero {
            let clock = ContinuousClock()
            let deadline = clock.now + spin
            repeat {
                if let job = tryPop() { return job }
                sched_yield()
            } while clock.now < deadline
        }
        condition.lock()
        defer { condition.unlock() }
        while head == jobs.count && !closed { condition.wait() }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        head += 1
        if head > 1024 && head * 2 > jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    private func tryPop() -> Job? {
        condition.lock()
        defer { condition.unlock() }
        guard head < jobs.count else { return nil }
        let job = jobs[head]
        head += 1
        return job
    }

    /// Closes the queue: jobs still waiting are told the client closed; threads end.
    func close() {
        condition.lock()
        let pending = closed ? [] : Array(jobs[head...])
        closed = true
        jobs = []
        head = 0
        condition.broadcast()
        condition.unlock()
        for job in pending { job(.failure(Self.closedError)) }
    }
}

extension RedisClient {
    /// The version of hiredis this process was built with.
    public static var libraryVersion: String { "\(HIREDIS_MAJOR).\(HIREDIS_MINOR).\(HIREDIS_PATCH)" }
}
