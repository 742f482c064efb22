import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardWorker

/// Route latency and throughput through one router (NATS and HTTP), beside the raw NATS request/reply and
/// Redis round trips measured in the same run. A route needs two NATS request/replies (caller to router,
/// router to worker) and one Redis write on its path; the goal compares it with 2 NATS + 2 Redis.
struct RouteBench {
    var natsURL: String
    var redisURL: String
    var count: Int

    func run(into report: inout Report) async throws {
        var logger = Logger(label: "bench.route")
        logger.logLevel = .critical
        let subjects = try Subjects(prefix: "bench\(Identifiers.random(bytes: 3))")
        let keys = try RedisKeys(prefix: subjects.prefix)

        var routerConfig = RouterConfiguration(id: "bench-router", subjects: subjects, keys: keys)
        routerConfig.httpPort = 0
        let routerNATS = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-router"), logger: logger)
        let routerRedis = try RedisClient(url: redisURL, logger: logger)
        let router = Router(configuration: routerConfig, nats: routerNATS, redis: routerRedis, logger: logger)
        let port = PortHolder()
        let http = RouterHTTP.application(for: router) { port.value = $0 }

        let workerConfig = WorkerConfiguration(id: "bench-worker", version: "bench", region: "local", zone: "local-a",
                                               capacity: 100_000, subjects: subjects, keys: keys)
        let workerNATS = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-worker"), logger: logger)
        let workerRedis = try RedisClient(url: redisURL, logger: logger)
        let worker = try Worker(configuration: workerConfig, nats: workerNATS, redis: workerRedis, handler: EchoHandler(), logger: logger)
        let group = ServiceGroup(services: [router, http, worker], logger: logger)
        let running = Task { try await group.run() }
        defer { running.cancel() }

        let caller = try await NATSConnection.connect(NATSConfiguration(servers: [natsURL], name: "bench-caller"), logger: logger)
        let redis = try RedisClient(url: redisURL, logger: logger)
        defer { caller.close(); redis.close() }
        while router.workers().isEmpty || port.value == 0 { try await Task.sleep(for: .milliseconds(20)) }

        // Raw round trips, same run: a NATS echo and a Redis HSET.
        let echo = try caller.subscribe(to: "\(subjects.prefix).echo")
        let echoTask = Task { for await m in echo { try? caller.reply(to: m, payload: m.payload) } }
        defer { echoTask.cancel() }
        try await caller.flush()
        let payload = RouteRequest(tenant: "bench").encoded()
        let natsRTT = LatencySummary(try await timeEach(count) { _ = try await caller.request("\(subjects.prefix).echo", payload: payload) })!
        let redisRTT = LatencySummary(try await timeEach(count) { _ = try await redis.send(["HSET", "\(keys.prefix):rtt", "f", "v"]) })!
        report.add(Row(name: "raw NATS request/reply (same run)", summary: natsRTT))
        report.add(Row(name: "raw Redis HSET (same run)", summary: redisRTT))
        let needed = (natsRTT.p50 * 2) + (redisRTT.p50 * 2)

        // What a worker does per call before it can say yes: two subscriptions.
        var subscribeTimes: [Duration] = []
        var subs: [NATSSubscription] = []
        for i in 0..<2000 {
            let start = ContinuousClock.now
            subs.append(try caller.subscribe(to: "\(subjects.prefix).probe.\(i).in", pendingLimit: 250))
            subscribeTimes.append(ContinuousClock.now - start)
        }
        subs.forEach { $0.unsubscribe() }
        report.add(Row(name: "NATS subscribe (one call subject)", summary: LatencySummary(subscribeTimes)))

        // The worker's half alone: an offer and its accept, as a router sees it.
        let n = min(count, 5_000)
        var held: [String] = []
        let offerRTT = LatencySummary(try await timeEach(n) {
            let id = Identifiers.random(prefix: "c")
            let offer = Offer(callID: id, tenant: "bench", region: nil, metadata: [:], routerID: "bench")
            let reply = try OfferReply.decode(try await caller.request(subjects.offer(worker: "bench-worker"), payload: offer.encoded()).payload)
            guard reply.accepted else { throw SwitchboardError(.noCapacity, "offer refused") }
            held.append(id)
        })!
        report.add(Row(name: "offer/accept round trip (worker side)", summary: offerRTT, baseline: "raw NATS p50",
                       ratio: offerRTT.p50.microseconds / natsRTT.p50.microseconds))

        try await endAll(&held, caller: caller, subjects: subjects, worker: worker)

        // Route over NATS, one after another; the calls stay up (as calls do, for minutes) and are ended after.
        let viaNATS = LatencySummary(try await timeEach(n) {
            let reply = try RouteReply.decode(try await caller.request(subjects.route, payload: payload).payload)
            guard let call = reply.call else { throw SwitchboardError(.noCapacity, reply.error?.message ?? "no placement") }
            held.append(call.callID)
        })!
        report.add(Row(name: "route over NATS (sequential)", summary: viaNATS, throughput: 1e6 / viaNATS.mean.microseconds,
                       baseline: "of 2 NATS + 2 Redis round trips", ratio: viaNATS.p50.microseconds / needed.microseconds))
        try await endAll(&held, caller: caller, subjects: subjects, worker: worker)

        // Churn: each call ended the moment it is placed, so every route also pays for a call's start and end
        // on the same two cores.
        let churn = LatencySummary(try await timeEach(n) {
            let reply = try RouteReply.decode(try await caller.request(subjects.route, payload: payload).payload)
            guard let call = reply.call else { throw SwitchboardError(.noCapacity, reply.error?.message ?? "no placement") }
            try caller.publish(subjects.end(worker: call.workerID, call: call.callID), payload: CallEnd(callID: call.callID, reason: .caller).encoded())
        })!
        report.add(Row(name: "route over NATS, each call ended at once", summary: churn, throughput: 1e6 / churn.mean.microseconds,
                       baseline: "of 2 NATS + 2 Redis round trips", ratio: churn.p50.microseconds / needed.microseconds))

        // Route over HTTP with a keep-alive connection.
        let client = try KeepAliveHTTP(port: port.value)
        let body = Array(#"{"tenant":"bench"}"#.utf8)
        let viaHTTP = LatencySummary(try await timeEach(n) {
            let (status, response) = try await client.post("/v1/calls", body: body)
            guard status == 201, let call = try? JSONDecoder().decode(Placement.self, from: Data(response)) else {
                throw SwitchboardError(.noCapacity, "HTTP \(status)")
            }
            held.append(call.callID)
        })!
        report.add(Row(name: "route over HTTP (sequential, keep-alive)", summary: viaHTTP, throughput: 1e6 / viaHTTP.mean.microseconds,
                       baseline: "of 2 NATS + 2 Redis round trips", ratio: viaHTTP.p50.microseconds / needed.microseconds))

        try await endAll(&held, caller: caller, subjects: subjects, worker: worker)

        // Throughput: 16 callers over NATS at once.
        let clock = ContinuousClock()
        let start = clock.now
        let perCaller = max(50, n / 16)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    for _ in 0..<perCaller {
                        let reply = try RouteReply.decode(try await caller.request(subjects.route, payload: payload, timeout: .seconds(5)).payload)
                        if let call = reply.call {
                            try caller.publish(subjects.end(worker: call.workerID, call: call.callID), payload: CallEnd(callID: call.callID, reason: .caller).encoded())
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let rate = Double(16 * perCaller) / ((clock.now - start).microseconds / 1e6)
        report.add(Row(name: "route over NATS, 16 concurrent callers", throughput: rate))
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        _ = try? await redis.send(["DEL", "\(keys.prefix):rtt"])
    }
}

/// Ends the calls (not timed) and waits until the worker holds none.
private func endAll(_ ids: inout [String], caller: NATSConnection, subjects: Subjects, worker: Worker) async throws {
    for id in ids { try caller.publish(subjects.end(worker: worker.configuration.id, call: id), payload: CallEnd(callID: id, reason: .caller).encoded()) }
    ids = []
    while worker.activeCalls > 0 { try await Task.sleep(for: .milliseconds(20)) }
}

final class PortHolder: @unchecked Sendable {  // written once by the server's start callback, read after
    private let lock = NSLock()
    private var port = 0
    var value: Int {
        get { lock.withLock { port } }
        set { lock.withLock { port = newValue } }
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection, so the benchmark measures the router, not a
/// client library. Blocking socket calls run on a thread of their own.
final class KeepAliveHTTP: @unchecked Sendable {  // one request at a time, serialised by `lock`
    private let fd: Int32
    private let lock = NSLock()

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw SwitchboardError(.connectionFailed, "cannot connect to 127.0.0.1:\(port)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func post(_ path: String, body: [UInt8]) async throws -> (Int, [UInt8]) {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try self.postBlocking(path, body: body) }) }.start()
        }
    }

    private func postBlocking(_ path: String, body: [UInt8]) throws -> (Int, [UInt8]) {
        lock.lock(); defer { lock.unlock() }
        let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let request = Array(head.utf8) + body
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw SwitchboardError(.connectionClosed, "send failed")
        }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            if let end = find(buffer, Array("\r\n\r\n".utf8)) {
                let header = String(decoding: buffer[..<end], as: UTF8.self)
                let status = Int(header.split(separator: " ").dropFirst().first ?? "") ?? 0
                let length = header.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if buffer.count >= end + 4 + length { return (status, Array(buffer[(end + 4)..<(end + 4 + length)])) }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw SwitchboardError(.connectionClosed, "connection closed") }
            buffer += chunk[0..<n]
        }
    }

    private func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<i + needle.count].elementsEqual(needle) { return i }
        return nil
    }
}

/// The cost of the control messages' JSON on the route path, alone.
struct WireBench {
    func run(into report: inout Report) throws {
        let offer = Offer(callID: Identifiers.random(prefix: "c"), tenant: "bench", region: "eu", metadata: ["from": "+3312345678"], routerID: "router-1")
        let bytes = offer.encoded()
        var encode: [Duration] = [], decode: [Duration] = []
        let clock = ContinuousClock()
        for _ in 0..<5000 {
            var start = clock.now
            _ = offer.encoded()
            encode.append(clock.now - start)
            start = clock.now
            _ = try Offer.decode(bytes)
            decode.append(clock.now - start)
        }
        report.add(Row(name: "wire: encode an offer (JSON)", summary: LatencySummary(encode)))
        report.add(Row(name: "wire: decode and validate an offer", summary: LatencySummary(decode)))
    }
}
