import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardTestSupport
import Testing

@Suite("NATS connection")
struct NATSConnectionTests {
    @Test func publishSubscribeRoundTripWithHeaders() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).greet")
            var headers = NATSHeaders()
            headers["Call-Id"] = "call-42"
            headers.add("X-Multi", "a")
            headers.add("X-Multi", "b")
            try nc.publish("\(prefix).greet", payload: bytes("hello"), headers: headers, replyTo: "\(prefix).back")
            let message = try #require(await next(sub))
            #expect(message.subject == "\(prefix).greet")
            #expect(message.text == "hello")
            #expect(message.replyTo == "\(prefix).back")
            #expect(message.headers["Call-Id"] == "call-42")
            #expect(message.headers.values(for: "X-Multi") == ["a", "b"])
        }
    }

    @Test func binaryPayloadArrivesIntact() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).bin")
            let payload: [UInt8] = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) } + [0, 0, 255]
            try nc.publish("\(prefix).bin", payload: payload)
            let message = try #require(await next(sub))
            #expect(message.payload == payload)
        }
    }

    @Test func wildcardSubscriptionMatchesTokens() async throws {
        try await withNATS { nc, prefix in
            let sub = try nc.subscribe(to: "\(prefix).media.*.in")
            try nc.publish("\(prefix).media.c1.out", payload: bytes("no"))
            try nc.publish("\(prefix).media.c1.in", payload: bytes("yes"))
            let message = try #require(await next(sub))
            #expect(message.subject == "\(prefix).media.c1.in")
            #expect(message.text == "yes")
        }
    }

    @Test func invalidSubjectsAreRefusedWithACode() async throws {
        try await withNATS { nc, prefix in
            for bad in ["", "a..b", "a b", "a.*", "a.>", ".a", "a.", "a\nb", String(repeating: "x", count: 600)] {
                let error = await caughtError { try nc.publish(bad, payload: []) }
                #expect(error?.code == .invalidArgument, "publish to \(bad.debugDescription)")
            }
            for bad in ["a.>.b", "a.b*", ""] {
                let error = await caughtError { _ = try nc.subscribe(to: bad) }
                #expect(error?.code == .invalidArgument, "subscribe to \(bad.debugDescription)")
            }
            let queueError = await caughtError { _ = try nc.subscribe(to: "\(prefix).q", queue: "bad group") }
            #expect(queueError?.code == .invalidArgument)
            // The connection is still fine afterwards.
            let sub = try nc.subscribe(to: "\(prefix).ok")
            try nc.publish("\(prefix).ok", payload: bytes("still here"))
            #expect(await next(sub)?.text == "still here")
        }
    }

    @Test func hugeMessageIsRefusedWithTooLarge() async throws {
        try await withNATS { nc, prefix in
            #expect(nc.maxPayload > 0)
            let huge = [UInt8](repeating: 1, count: nc.maxPayload + 1)
            let error = await caughtError { try nc.publish("\(prefix).big", payload: huge) }
            #expect(error?.code == .tooLarge)
            let requestError = await caughtError { _ = try await nc.request("\(prefix).big", payload: huge) }
            #expect(requestError?.code == .tooLarge)
            #expect(nc.isConnected)
        }
    }

    @Test func connectToNothingFailsFastWithACode() async throws {
        let port = try TestServer.freePort()
        var cfg = config("nats://127.0.0.1:\(port)")
        cfg.connectTimeout = .seconds(30)
        let start = ContinuousClock.now
        let error = await caughtError { _ = try await NATSConnection.connect(cfg, logger: testLogger) }
        #expect(error?.code == .connectionFailed)
        // A refused connection fails at once, not after the (30 s) connect timeout; the margin is for a test run
        // that keeps both cores busy.
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func badURLIsRefused() async throws {
        let error = await caughtError { _ = try await NATSConnection.connect(NATSConfiguration(servers: ["nats://host:notaport"]), logger: testLogger) }
        #expect(error?.code == .invalidArgument)
        let none = await caughtError { _ = try await NATSConnection.connect(NATSConfiguration(servers: []), logger: testLogger) }
        #expect(none?.code == .invalidArgument)
    }

    @Test func userPasswordAndTokenAuthentication() async throws {
        let userServer = try await TestServer(.nats, arguments: ["--user", "switch", "--pass", "s3cret"])
        var good = config(userServer.url)
        good.user = "switch"
        good.password = "s3cret"
        let nc = try await NATSConnection.connect(good, logger: testLogger)
        #expect(nc.isConnected)
        nc.close()

        var bad = good
        bad.password = "wrong"
        bad.reconnect.enabled = false
        let error = await caughtError { _ = try await NATSConnection.connect(bad, logger: testLogger) }
        #expect(error?.code == .authenticationFailed, "got \(String(describing: error))")

        let tokenServer = try await TestServer(.nats, arguments: ["--auth", "t0ken"])
        var token = config(tokenServer.url)
        token.token = "t0ken"
        let tc = try await NATSConnection.connect(token, logger: testLogger)
        #expect(tc.isConnected)
        tc.close()
        token.token = "other"
        let tokenError = await caughtError { _ = try await NATSConnection.connect(token, logger: testLogger) }
        #expect(tokenError?.code == .authenticationFailed)
    }

    /// User, password or token in the URL itself, percent-encoded: taken out of the URL and decoded (nats.c would
    /// not decode them), and never in an error.
    @Test func credentialsInTheURLArePercentDecodedAndNeverShown() async throws {
        let userServer = try await TestServer(.nats, arguments: ["--user", "sw@itch", "--pass", "p/a@ss"])
        let nc = try await NATSConnection.connect(config("nats://sw%40itch:p%2Fa%40ss@127.0.0.1:\(userServer.port)"), logger: testLogger)
        #expect(nc.isConnected)
        #expect(nc.connectedURL?.contains("p/a") == false)
        nc.close()
        var wrong = config("nats://sw%40itch:hunter2@127.0.0.1:\(userServer.port)")
        wrong.reconnect.enabled = false
        let error = await caughtError { _ = try await NATSConnection.connect(wrong, logger: testLogger) }
        #expect(error?.code == .authenticationFailed && error?.message.contains("hunter2") == false, "\(String(describing: error))")
        let tokenServer = try await TestServer(.nats, arguments: ["--auth", "t0k/en"])
        let tc = try await NATSConnection.connect(config("nats://t0k%2Fen@127.0.0.1:\(tokenServer.port)"), logger: testLogger)
        #expect(tc.isConnected)
        tc.close()
    }

    @Test func flushAndRoundTrip() async throws {
        try await withNATS { nc, _ in
            try await nc.flush()
            let rtt = try await nc.roundTrip()
            #expect(rtt > .zero && rtt < .seconds(1))
            #expect(nc.serverID?.isEmpty == false)
            #expect(nc.connectedURL?.contains("127.0.0.1") == true)
        }
    }

    @Test func closeEndsSubscriptionsAndFailsRequests() async throws {
        let (url, server) = try await SharedServer.nats()
        defer { withExtendedLifetime(server) {} }
        let nc = try await NATSConnection.connect(config(url), logger: testLogger)
        let prefix = uniquePrefix()
        let sub = try nc.subscribe(to: "\(prefix).x")
        nc.close()
        var iterator = sub.makeAsyncIterator()
        #expect(await iterator.next() == nil)
        let error = await caughtError { _ = try await nc.request("\(prefix).y", payload: []) }
        #expect(error?.code == .connectionClosed)
        let publishError = await caughtError { try nc.publish("\(prefix).y", payload: []) }
        #expect(publishError?.code == .connectionClosed)
    }
}
