import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardTestSupport
import Testing

@Suite("NATS TLS and reconnect")
struct NATSResilienceTests {
    @Test func reconnectsAfterTheServerRestartsOnTheSamePort() async throws {
        let server = try await TestServer(.nats)
        let nc = try await NATSConnection.connect(config(server.url), logger: testLogger)
        defer { nc.close() }
        let prefix = uniquePrefix()
        let sub = try nc.subscribe(to: "\(prefix).r")
        let events = nc.events

        await server.stop()
        #expect(await waitForEvent(events, timeout: .seconds(5)) { $0 == .disconnected })
        try await server.start()
        #expect(await waitForEvent(events, timeout: .seconds(10)) {
            if case .reconnected = $0 { return true } else { return false }
        })
        // The subscription was re-established on the new server.
        try nc.publish("\(prefix).r", payload: bytes("after"))
        #expect(await next(sub, timeout: .seconds(3))?.text == "after")
    }

    @Test func tlsConnectionWithATestCertificate() async throws {
        let pki = try await TestPKI()
        let server = try await TestServer(.nats, arguments: ["--tls", "--tlscert", pki.serverCert, "--tlskey", pki.serverKey])
        var cfg = config("tls://127.0.0.1:\(server.port)")
        cfg.tls = .init(caFile: pki.caCert)
        let nc = try await NATSConnection.connect(cfg, logger: testLogger)
        defer { nc.close() }
        let prefix = uniquePrefix()
        let sub = try nc.subscribe(to: "\(prefix).secure")
        try nc.publish("\(prefix).secure", payload: bytes("over tls"))
        #expect(await next(sub)?.text == "over tls")

        // A client that does not trust the CA is refused with a TLS error.
        var untrusting = config("tls://127.0.0.1:\(server.port)")
        untrusting.tls = .init()
        untrusting.reconnect.enabled = false
        let error = await caughtError { _ = try await NATSConnection.connect(untrusting, logger: testLogger) }
        #expect(error?.code == .tlsFailed, "got \(String(describing: error))")

        // A missing CA file is a clear configuration error, not a crash.
        var missing = cfg
        missing.tls = .init(caFile: "/nonexistent/ca.pem")
        let missingError = await caughtError { _ = try await NATSConnection.connect(missing, logger: testLogger) }
        #expect(missingError != nil)
        #expect(missingError?.message.contains("ca.pem") == true)
    }

    @Test func drainThenCloseForGracefulShutdown() async throws {
        let (url, server) = try await SharedServer.nats()
        defer { withExtendedLifetime(server) {} }
        let nc = try await NATSConnection.connect(config(url), logger: testLogger)
        let prefix = uniquePrefix()
        let sub = try nc.subscribe(to: "\(prefix).g")
        for i in 0..<100 { try nc.publish("\(prefix).g", payload: bytes("\(i)")) }
        try await nc.flush()
        let consumer = Task { await sub.reduce(0) { n, _ in n + 1 } }
        try await nc.drain(timeout: .seconds(5))
        #expect(await consumer.value == 100)
        #expect(nc.isClosed)
    }
}
