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
/// Every command has a deadline, counted from the call (`commandTimeout` unless the caller passes one), that
/// covers its time in the queue too: at the deadline the caller gets `timeout` even if every connection is
/// stuck on a frozen server, and a command still queued then never runs. The queue holds at most
/// `maxQueuedCommands`; past that a command fails at once with `unavailable`.
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
        let sweeper = Thread { [pool] in pool.queue.sweep() }
        sweeper.name = "redis-deadlines"
        sweeper.start()
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
    //
    // Every command takes a `deadline` (nil: now + `commandTimeout`). A command whose deadline passes while it
    // runs fails with `timeout` at the deadline, but Redis may still run it: its late reply is dropped.

    /// Runs one command. An error reply throws `server_error` (`authentication_failed` for NOAUTH/WRONGPASS)
    /// with Redis' text.
    public func send(_ arguments: [String], deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> RedisValue {
        try await send(RedisCommand(arguments), deadline: deadline)
    }

    public func send(_ command: RedisCommand, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> RedisValue {
        let reply = try await pipeline([command], deadline: deadline)[0]
        if case .error(let text) = reply { throw Self.replyError(text, command) }
        return reply
    }

    /// Runs the commands in one round trip on one connection; replies in order, error replies in place.
    public func pipeline(_ commands: [RedisCommand], deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> [RedisValue] {
        guard !commands.isEmpty else { return [] }
        var bytes = 0
        for command in commands {
            guard !command.arguments.isEmpty else { throw SwitchboardError(.invalidArgument, "empty Redis command") }
            bytes += command.byteCount
        }
        guard bytes <= configuration.maxCommandBytes else {
            throw SwitchboardError(.tooLarge, "Redis command of \(bytes) bytes is over the limit of \(configuration.maxCommandBytes)")
        }
        return try await run(deadline: deadline) { connection, deadline throws(SwitchboardError) in
            try connection.executeReplicated(commands, deadline: deadline)
        }
    }

    /// Runs a Lua script by its SHA; if Redis does not know it (a restart, `SCRIPT FLUSH`), loads it and
    /// runs it again, on the same connection, all within the one deadline.
    public func evaluate(_ script: RedisScript, keys: [String] = [], arguments: [String] = [],
                         deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> RedisValue {
        let evalsha = RedisCommand(["EVALSHA", script.sha1, String(keys.count)] + keys + arguments)
        let reply = try await run(deadline: deadline) { connection, deadline throws(SwitchboardError) -> RedisValue in
            let first = try connection.executeReplicated([evalsha], deadline: deadline)[0]
            guard case .error(let text) = first, text.hasPrefix("NOSCRIPT") else { return first }
            let loaded = try connection.execute([RedisCommand("SCRIPT", "LOAD", script.source)])[0]
            if case .error = loaded { return loaded }
            return try connection.executeReplicated([evalsha], deadline: deadline)[0]
        }
        if case .error(let text) = reply { throw Self.replyError(text, evalsha) }
        return reply
    }

    /// One PING round trip.
    public func ping(deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await send(["PING"], deadline: deadline)
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
    public func hashGetAll(_ key: String, deadline: ContinuousClock.Instant? = nil) async throws(SwitchboardError) -> [String: String] {
        try await send(["HGETALL", key], deadline: deadline).hashFields
    }

    static func replyError(_ text: String, _ command: RedisCommand) -> SwitchboardError {
        let code: SwitchboardError.Code = text.hasPrefix("NOAUTH") || text.hasPrefix("WRONGPASS") ? .authenticationFailed : .serverError
        return SwitchboardError(code, "Redis \(command.name): \(text)")
    }

    // MARK: - The pool

    /// Runs `body` on a pool thread with a connected connection and awaits its result or the deadline,
    /// whichever comes first: the caller is answered once, by whoever takes the job out of the queue's table.
    private func run<T: Sendable>(deadline: ContinuousClock.Instant?,
                                  _ body: @escaping @Sendable (RedisConnection, ContinuousClock.Instant) throws(SwitchboardError) -> T) async throws(SwitchboardError) -> T {
        let now = ContinuousClock.now
        let deadline = deadline ?? now + configuration.commandTimeout
        guard deadline > now else { throw SwitchboardError(.timeout, "Redis command's deadline passed before it was sent") }
        let result: Result<T, SwitchboardError> = await withCheckedContinuation { continuation in
            let refused = pool.queue.push(deadline: deadline) { connection, claim in
                let result = connection.flatMap { c in Result { () throws(SwitchboardError) -> T in try body(c, deadline) } }
                if claim() { continuation.resume(returning: result) }
            }
            if let refused { continuation.resume(returning: .failure(refused)) }
        }
        return try result.get()
    }
}

/// The pool threads' shared state: the job queue and the connection epoch.
final class RedisPool: Sendable {
    let queue: JobQueue
    /// Bumped when a connection is found broken; connections made in an older epoch reconnect.
    let epoch = Atomic<Int>(0)
    let configuration: RedisConfiguration
    let logger: Logger

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        queue = JobQueue(capacity: configuration.maxQueuedCommands)
    }

    /// A pool thread: reconnects as needed, runs jobs, frees its connection when the queue closes.
    func serve() {
        let connection = RedisConnection(configuration: configuration)
        var spin = Duration.zero  // only a thread that just worked spins for the next job
        while let (id, job) = queue.pop(spin: spin) {
            spin = .microseconds(50)
            let current = epoch.load(ordering: .acquiring)
            if !connection.isConnected || connection.epoch < current {
                let wasConnected = connection.epoch >= 0
                do {
                    try connection.connect(epoch: current)
                } catch {
                    job(.failure(error)) { queue.finish(id) }
                    continue
                }
                if wasConnected { logger.info("redis reconnected", metadata: ["redis.url": "\(configuration.redacted)"]) }
                // Connecting can take up to `connectTimeout`: a caller told `timeout` meanwhile must not see
                // its command run after all.
                guard queue.isWaiting(id) else { continue }
            }
            let connectionEpoch = connection.epoch
            job(.success(connection)) { queue.finish(id) }
            if !connection.isConnected {
                // This connection found the server gone: the others reconnect before their next command.
                _ = epoch.compareExchange(expected: connectionEpoch, desired: connectionEpoch + 1, ordering: .acquiringAndReleasing)
                logger.warning("redis connection lost", metadata: ["redis.url": "\(configuration.redacted)"])
            }
        }
        connection.disconnect()
    }
}

/// Jobs waiting for a pool thread, and the deadlines of every caller not answered yet.
///
/// A caller is answered exactly once, by whoever removes its job from `waiting` under the lock: the pool
/// thread that ran it (`finish`), the sweeper at its deadline, or `close`. A job the sweeper answered while it
/// was still queued stays in `order` and is skipped when its turn comes.
///
/// One sweeper thread serves every deadline, rather than a task or timer per command (this is the hot path
/// of every call placement): it sleeps until the earliest deadline and is woken only when a new deadline
/// comes before it, which with the default timeout happens only on the first command of a busy spell.
final class JobQueue: @unchecked Sendable {  // all state is guarded by `condition`
    /// Runs the command on the connection (or takes the failure) and answers the caller if `claim` says it
    /// may: false when the sweeper answered first.
    typealias Job = @Sendable (Result<RedisConnection, SwitchboardError>, _ claim: () -> Bool) -> Void
    static let closedError = SwitchboardError(.connectionClosed, "Redis client closed")
    /// How late a deadline may be noticed; one wake-up of the sweeper expires every job due in that window.
    static let sweepInterval: UInt64 = 5_000_000

    private struct Waiting {
        var job: Job
        var queued = true  // false once a pool thread took it
    }

    let capacity: Int
    private let condition = NSCondition()
    private var waiting: [UInt64: Waiting] = [:]
    private var order: [UInt64] = []
    private var head = 0
    private var queued = 0
    private var deadlines = DeadlineQueue()
    private var nextID: UInt64 = 0
    private var closed = false
    /// The sweeper's alarm clock, apart from `condition` so that a push's `signal` always wakes a pool thread,
    /// never the sweeper; a semaphore also keeps a wake-up given before the sweeper sleeps.
    private let sweeperWake = DispatchSemaphore(value: 0)
    private let origin = ContinuousClock.now

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Adds a job to run before `deadline`; the error to answer with instead when the queue is closed or full.
    func push(deadline: ContinuousClock.Instant, _ job: @escaping Job) -> SwitchboardError? {
        let due = nanoseconds(deadline)
        condition.lock()
        guard !closed else { condition.unlock(); return Self.closedError }
        guard queued < capacity else {
            let count = queued
            condition.unlock()
            return SwitchboardError(.unavailable, "Redis is not keeping up: \(count) commands queued (maxQueuedCommands \(capacity))")
        }
        nextID &+= 1
        waiting[nextID] = Waiting(job: job)
        order.append(nextID)
        queued += 1
        let wakeSweeper = deadlines.earliest.map { due < $0 } ?? true
        deadlines.insert(.init(deadline: due, id: nextID))
        condition.signal()
        condition.unlock()
        if wakeSweeper { sweeperWake.signal() }
        return nil
    }

    /// The next job still waiting for its caller, waiting for one; nil once closed and empty.
    ///
    /// A thread that has just finished a job first looks for the next one for up to `spin` before it sleeps:
    /// a caller issuing commands one after another sends the next within microseconds, and waking a
    /// sleeping thread costs more than the whole Redis round trip on loopback. An idle pool sleeps.
    func pop(spin: Duration = .zero) -> (id: UInt64, job: Job)? {
        if spin > .zero {
            let clock = ContinuousClock()
            let deadline = clock.now + spin
            repeat {
                condition.lock()
                let next = takeNext()
                condition.unlock()
                if let next { return next }
                sched_yield()
            } while clock.now < deadline
        }
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let next = takeNext() { return next }
            if closed { return nil }
            condition.wait()
        }
    }

    /// Under the lock: takes the next queued job, skipping those already answered.
    private func takeNext() -> (id: UInt64, job: Job)? {
        while head < order.count {
            let id = order[head]
            head += 1
            if let index = waiting.index(forKey: id) {
                waiting.values[index].queued = false
                queued -= 1
                dropTaken()
                return (id, waiting.values[index].job)
            }
        }
        dropTaken()
        return nil
    }

    private func dropTaken() {
        if head == order.count {
            order.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    /// Whether job `id` still has a caller waiting for it.
    func isWaiting(_ id: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return waiting[id] != nil
    }

    /// Called by the thread that ran job `id`: true if it is to answer the caller, false if the sweeper did.
    func finish(_ id: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return waiting.removeValue(forKey: id) != nil
    }

    /// The sweeper thread: answers every caller whose deadline passed with `timeout`, whether its job is still
    /// queued (it will never run) or running on a connection stuck on a silent server. Ends once the queue
    /// is closed and no caller is left.
    func sweep() {
        while true {
            condition.lock()
            let now = nanoseconds(.now)
            var expired: [(Job, SwitchboardError)] = []
            for id in deadlines.popDue(at: now) {
                guard let entry = waiting.removeValue(forKey: id) else { continue }
                if entry.queued { queued -= 1 }
                expired.append((entry.job, entry.queued
                    ? SwitchboardError(.timeout, "Redis command still queued at its deadline: every connection busy (is the server stalled?)")
                    : SwitchboardError(.timeout, "Redis did not answer by the command's deadline (the command may still run)")))
            }
            // While every thread is stuck, `order` keeps the ids of callers the sweeper answered; drop them.
            if order.count - head > 2 * capacity {
                order = order[head...].filter { waiting[$0] != nil }
                head = 0
            }
            let done = closed && waiting.isEmpty
            let earliest = deadlines.earliest
            condition.unlock()
            for (job, error) in expired { job(.failure(error)) { true } }
            if done { return }
            if let earliest {
                // Not sooner than `sweepInterval` after this sweep: under load there is a deadline every few
                // microseconds, nearly all of commands long answered.
                let wait = max(earliest - now, Self.sweepInterval)
                _ = sweeperWake.wait(timeout: .now() + .nanoseconds(Int(clamping: wait)))
            } else {
                sweeperWake.wait()
            }
        }
    }

    /// Closes the queue: jobs still queued are told the client closed; threads end. Jobs running finish (or
    /// time out) as usual.
    func close() {
        condition.lock()
        var pending: [Job] = []
        if !closed {
            closed = true
            for id in order[head...] {
                if let entry = waiting.removeValue(forKey: id) { pending.append(entry.job) }
            }
            order = []
            head = 0
            queued = 0
        }
        condition.broadcast()
        condition.unlock()
        sweeperWake.signal()
        for job in pending { job(.failure(Self.closedError)) { true } }
    }

    /// `instant` as nanoseconds since this queue was made, the unit of `DeadlineQueue`.
    private func nanoseconds(_ instant: ContinuousClock.Instant) -> UInt64 {
        guard instant > origin else { return 0 }
        let (seconds, attoseconds) = (instant - origin).components
        return UInt64(min(seconds, 1 << 32)) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}

extension RedisClient {
    /// The version of hiredis this process was built with.
    public static var libraryVersion: String { "\(HIREDIS_MAJOR).\(HIREDIS_MINOR).\(HIREDIS_PATCH)" }
}
