import CHiredis
import Foundation
import SwitchboardCore

/// One blocking hiredis connection, used by one pool thread only. Owns its `redisContext *` and frees it
/// exactly once (on a failure, on reconnect, or at the end).
final class RedisConnection {
    private var context: UnsafeMutablePointer<redisContext>?
    /// The pool epoch this connection was made in; an older one reconnects before its next command.
    private(set) var epoch = -1
    let configuration: RedisConfiguration

    init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    deinit { disconnect() }

    func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    var isConnected: Bool { context != nil }

    /// The Sentinel that answered last (asked first next time).
    private var sentinelIndex = 0

    /// Connects (or reconnects), then authenticates and selects the database. Behind Sentinels, asks them
    /// for the primary first and makes sure the server is the primary (`ROLE`): a Sentinel may name the old
    /// one for a moment during a failover.
    func connect(epoch: Int) throws(SwitchboardError) {
        disconnect()
        let (host, port) = configuration.sentinel == nil ? (configuration.host, configuration.port) : try askSentinels()
        let c = redisConnectWithTimeout(host, Int32(port), timeval(configuration.connectTimeout))
        guard let c else { throw SwitchboardError(.connectionFailed, "cannot allocate a Redis context") }
        if c.pointee.err != 0 {
            let text = Self.errorText(c)
            redisFree(c)
            let target = configuration.sentinel.map { "the primary '\($0.primaryName)' (\(host):\(port))" } ?? configuration.endpoint.redacted
            throw SwitchboardError(.connectionFailed, "cannot connect to Redis at \(target): \(text)")
        }
        context = c
        self.epoch = epoch
        _ = redisSetTimeout(c, timeval(configuration.commandTimeout))
        if let password = configuration.password {
            let auth = configuration.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password)
            if case .error(let text) = try execute([auth])[0] {
                disconnect()
                throw SwitchboardError(.authenticationFailed, "Redis refused the credentials: \(text)")
            }
        }
        if configuration.database != 0 {
            if case .error(let text) = try execute([RedisCommand("SELECT", String(configuration.database))])[0] {
                disconnect()
                throw SwitchboardError(.invalidArgument, "Redis refused database \(configuration.database): \(text)")
            }
        }
        if let sentinel = configuration.sentinel {
            let role = try execute([RedisCommand("ROLE")])[0].array?.first?.string
            guard role == "master" else {
                disconnect()
                throw SwitchboardError(.connectionFailed, "the Sentinels name \(host):\(port) as the primary '\(sentinel.primaryName)' but it is a \(role ?? "server of unknown role"): a failover is under way")
            }
        }
    }

    /// The primary's address, from the first Sentinel that knows it (the last one that answered first).
    private func askSentinels() throws(SwitchboardError) -> (String, Int) {
        let sentinel = configuration.sentinel!
        var failures: [String] = []
        for offset in 0..<sentinel.addresses.count {
            let index = (sentinelIndex + offset) % sentinel.addresses.count
            let connection = RedisConnection(configuration: configuration.sentinelConnection(index))
            defer { connection.disconnect() }
            let address = sentinel.addresses[index]
            do throws(SwitchboardError) {
                try connection.connect(epoch: 0)
                let reply = try connection.execute([RedisCommand("SENTINEL", "get-master-addr-by-name", sentinel.primaryName)])[0]
                if case .error(let text) = reply { throw SwitchboardError(.serverError, text) }
                guard let pair = reply.array, pair.count == 2, let host = pair[0].string,
                      let port = pair[1].string.flatMap({ Int($0) }), (1...65535).contains(port) else {
                    throw SwitchboardError(.notFound, "does not monitor a primary named '\(sentinel.primaryName)'")
                }
                sentinelIndex = index
                return (host, port)
            } catch {
                failures.append("\(address.host):\(address.port): \(error.message)")
            }
        }
        throw SwitchboardError(.connectionFailed, "no Sentinel named the primary '\(sentinel.primaryName)': \(failures.joined(separator: "; "))")
    }

    /// `execute`, then, when writes must reach replicas (`replicasToAck`), `WAIT` in the same round trip with
    /// most of what is left of `deadline`: a write is done only once that many replicas hold it. Reads are
    /// sent as they are (a `WAIT` would wait on this connection's earlier writes); a script counts as a write.
    func executeReplicated(_ commands: [RedisCommand], deadline: ContinuousClock.Instant) throws(SwitchboardError) -> [RedisValue] {
        let n = configuration.replicasToAck
        guard n > 0, commands.contains(where: { !Self.readOnly.contains($0.name) }) else { return try execute(commands) }
        // Answered before the command's deadline (a reply at the deadline would lose the race to the timeout,
        // and the caller would hear `timeout` rather than why): Redis checks blocked clients' timeouts on its
        // own timer (10 times a second by default), so the margin covers one of its ticks.
        let remaining = (deadline - .now).milliseconds
        let left = max(1, remaining - max(150, remaining / 5))
        var replies = try execute(commands + [RedisCommand("WAIT", String(n), String(left))])
        let acked = replies.removeLast().int ?? 0
        guard acked >= Int64(n) else {
            throw SwitchboardError(.unavailable, "Redis took the write but \(acked) of \(n) replica(s) confirmed it within \(left) ms; a failover now could lose it")
        }
        return replies
    }

    /// Sends every command, then reads every reply: one round trip. On a connection failure the
    /// context is freed and the error thrown; error replies come back as `.error` values.
    func execute(_ commands: [RedisCommand]) throws(SwitchboardError) -> [RedisValue] {
        guard let context else { throw SwitchboardError(.connectionClosed, "not connected to Redis") }
        for command in commands {
            let status = Self.withArgv(command.arguments) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            if status != REDIS_OK { throw failure(context, "sending \(command.name)") }
        }
        var replies: [RedisValue] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil {
                throw failure(context, "reading the reply to \(command.name)")
            }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            replies.append(RedisValue(reply))
            freeReplyObject(reply)
        }
        // A primary demoted under a failover refuses writes: drop the connection so the next command asks
        // the Sentinels again (and the pool's other connections follow).
        if configuration.sentinel != nil, replies.contains(where: { if case .error(let t) = $0 { Self.isDemoted(t) } else { false } }) {
            disconnect()
        }
        return replies
    }

    /// Commands that change nothing, so need no replica's confirmation.
    static let readOnly: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "ROLE", "GET", "MGET", "STRLEN", "EXISTS", "TYPE", "TTL", "PTTL", "SCAN",
        "HGET", "HMGET", "HGETALL", "HEXISTS", "HLEN", "HKEYS", "HVALS", "HSCAN", "LRANGE", "LLEN", "LINDEX",
        "SMEMBERS", "SISMEMBER", "SCARD", "SSCAN", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZSCORE", "ZCARD",
        "ZCOUNT", "ZSCAN", "XRANGE", "XREVRANGE", "XLEN", "XINFO", "DBSIZE", "EVALSHA_RO", "EVAL_RO",
    ]

    static func isDemoted(_ text: String) -> Bool {
        text.hasPrefix("READONLY") || text.hasPrefix("MASTERDOWN") || text.hasPrefix("LOADING")
    }

    /// Turns a context error into our error and drops the connection (its stream is out of step now).
    private func failure(_ context: UnsafeMutablePointer<redisContext>, _ what: String) -> SwitchboardError {
        let err = context.pointee.err
        let text = Self.errorText(context)
        disconnect()
        let lower = text.lowercased()
        if err == REDIS_ERR_IO && (lower.contains("temporarily unavailable") || lower.contains("timed out")) {
            return SwitchboardError(.timeout, "Redis did not answer within \(configuration.commandTimeout) while \(what)")
        }
        if err == REDIS_ERR_EOF || err == REDIS_ERR_IO {
            return SwitchboardError(.connectionClosed, "Redis connection lost while \(what): \(text)", context: ["redis_err": "\(err)"])
        }
        return SwitchboardError(.serverError, "Redis error while \(what): \(text)", context: ["redis_err": "\(err)"])
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private static func withArgv<R>(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        // One contiguous copy of every argument, and pointers into it.
        var storage = [CChar]()
        storage.reserveCapacity(args.reduce(0) { $0 + $1.count } + args.count)
        var offsets: [Int] = []
        var lengths: [Int] = []
        for arg in args {
            offsets.append(storage.count)
            lengths.append(arg.count)
            storage.append(contentsOf: arg.map { CChar(bitPattern: $0) })
            storage.append(0)
        }
        return storage.withUnsafeBufferPointer { base in
            var argv: [UnsafePointer<CChar>?] = offsets.map { base.baseAddress! + $0 }
            return argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { lengthBuffer in
                    body(Int32(args.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
                }
            }
        }
    }

    private func timeval(_ d: Duration) -> Foundation.timeval {
        let (seconds, atto) = d.components
        return Foundation.timeval(tv_sec: Int(seconds), tv_usec: Int(atto / 1_000_000_000_000))
    }
}
