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

    /// Connects (or reconnects), then authenticates and selects the database.
    func connect(epoch: Int) throws(SwitchboardError) {
        disconnect()
        let c = redisConnectWithTimeout(configuration.host, Int32(configuration.port), timeval(configuration.connectTimeout))
        guard let c else { throw SwitchboardError(.connectionFailed, "cannot allocate a Redis context") }
        if c.pointee.err != 0 {
            let text = Self.errorText(c)
            redisFree(c)
            throw SwitchboardError(.connectionFailed, "cannot connect to Redis at \(configuration.endpoint.redacted): \(text)")
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
        return replies
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
