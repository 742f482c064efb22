import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

/// A cluster on a closed bus, as `switchboard nats-config` writes it and the processes run it: every role with
/// its own credential, a caller with its call's alone; and the same over TLS with client certificates.
@Suite("Closed bus", .serialized)
struct ClosedBusTests {
    @Test func rolesPlaceAndCarryCallsAndACallerHearsOnlyItsOwnCall() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-closed-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let prefix = uniquePrefix("cb")
        let config = try CLIProcess(["nats-config", "--out", dir.path, "--prefix", prefix])
        #expect(await config.waitForExit(timeout: .seconds(30)) == 0, "\(config.output)")
        let conf = dir.appendingPathComponent("server.conf")
        try "include ./nats-auth.conf\n".write(to: conf, atomically: true, encoding: .utf8)
        let nats = try await TestServer(.nats, arguments: ["-c", conf.path])
        let (redisURL, redis) = try await SharedServer.redis()
        defer { withExtendedLifetime(redis) {} }
        func file(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let common = ["--nats-url", nats.url, "--redis-url", redisURL, "--prefix", prefix, "--key-prefix", prefix, "--log-level", "warning"]
        let router = try CLIProcess(["router", "--id", "r1", "--http-port", "0", "--admin-key", TestCluster.adminKey,
                                     "--nats-creds", file("router.creds"), "--media-signing-key", file("media-signing.json")] + common)
        let worker = try CLIProcess(["worker", "--id", "w1", "--handler", "tone", "--nats-creds", file("worker.creds")] + common)
        try await router.waitForOutput("listening on", timeout: .seconds(30))
        let subjects = try Subjects(prefix: prefix)

        // Anonymous: refused at the door.
        var anonymous = NATSConfiguration(servers: [nats.url], name: "anonymous")
        anonymous.reconnect.enabled = false
        #expect(await caughtError { _ = try await NATSConnection.connect(anonymous, logger: quiet) } != nil)

        // A gateway asks for a route with its role's credential and gets the call's own credential back.
        var gatewayConfig = NATSConfiguration(servers: [nats.url], name: "gateway")
        gatewayConfig.credentialsFile = file("gateway.creds")
        gatewayConfig.inboxPrefix = BusRole.gateway.inboxPrefix
        let gateway = try await NATSConnection.connect(gatewayConfig, logger: quiet)
        defer { gateway.close() }
        var placement: Placement?
        try await eventually(timeout: .seconds(30), "a call is placed over the closed bus") {
            let message = try? await gateway.request(subjects.route, payload: RouteRequest(tenant: "t").encoded(), timeout: .seconds(5))
            placement = message.flatMap { try? RouteReply.decode($0.payload).call }
            return placement != nil
        }
        let call = try #require(placement)
        let credentials = try NATSConfiguration.Credentials(creds: try #require(call.media.credentials, "no media credential in the placement"))
        var callerConfig = NATSConfiguration(servers: [nats.url], name: "caller")
        callerConfig.credentials = credentials
        callerConfig.inboxPrefix = nil  // it makes no requests, and may subscribe to no inbox
        let caller = try await NATSConnection.connect(callerConfig, logger: quiet)
        defer { caller.close() }
        let tap = try AudioTap(caller, call.media.out)
        try await eventually(timeout: .seconds(10), "the caller hears its call") { tap.count >= 25 }

        // Another call's audio is not the caller's to hear.
        let second = try #require(try RouteReply.decode(try await gateway.request(subjects.route, payload: RouteRequest(tenant: "t").encoded(),
                                                                                   timeout: .seconds(5)).payload).call)
        let other = try AudioTap(caller, second.media.out)
        try await Task.sleep(for: .seconds(1))
        #expect(other.count == 0, "a caller heard another call")

        // The operator path across it: the router drains the worker, which confirms.
        let line = router.output.split(separator: "\n").first { $0.contains(" listening on ") }!
        let url = String(line[line.range(of: " listening on ")!.upperBound...]).trimmingCharacters(in: .whitespaces)
        let drained = try await PlainHTTP.request("POST", url + "/v1/workers/w1/drain", headers: ["Authorization": "Bearer \(TestCluster.adminKey)"],
                                                  body: Data(#"{"deadline_seconds":600}"#.utf8))
        #expect(drained.status == 202 && (try? decodeJSON(DrainResult.self, drained.body))?.confirmed == true,
                "\(String(decoding: drained.body, as: UTF8.self))")
        #expect(router.process.isRunning && worker.process.isRunning)
        withExtendedLifetime((router, worker, nats)) {}
    }

    @Test func routersAndWorkersTalkOverTLSWithClientCertificates() async throws {
        let pki = try await TestPKI()
        defer { try? FileManager.default.removeItem(at: pki.directory) }
        let conf = pki.directory.appendingPathComponent("tls.conf")
        try """
            tls {
              cert_file: "\(pki.serverCert)"
              key_file: "\(pki.serverKey)"
              ca_file: "\(pki.caCert)"
              verify: true
            }
            """.write(to: conf, atomically: true, encoding: .utf8)
        let nats = try await TestServer(.nats, arguments: ["-c", conf.path])
        let (redisURL, redis) = try await SharedServer.redis()
        defer { withExtendedLifetime(redis) {} }
        let prefix = uniquePrefix("tls")
        let tls = ["--nats-url", "tls://127.0.0.1:\(nats.port)", "--nats-tls-ca", pki.caCert, "--nats-tls-cert", pki.clientCert,
                   "--nats-tls-key", pki.clientKey]
        let common = ["--redis-url", redisURL, "--prefix", prefix, "--key-prefix", prefix, "--log-level", "warning"]
        let router = try CLIProcess(["router", "--id", "r1", "--http-port", "0", "--admin-key", TestCluster.adminKey] + tls + common)
        let worker = try CLIProcess(["worker", "--id", "w1"] + tls + common)
        try await router.waitForOutput("listening on", timeout: .seconds(30))
        // Without a client certificate the server turns the connection away.
        let refused = try CLIProcess(["worker", "--id", "w2", "--nats-url", "tls://127.0.0.1:\(nats.port)", "--nats-tls-ca", pki.caCert] + common)
        #expect(await refused.waitForExit(timeout: .seconds(30)) != 0, "\(refused.output)")

        var client = NATSConfiguration(servers: ["tls://127.0.0.1:\(nats.port)"], name: "test")
        client.tls = .init(caFile: pki.caCert, certificateFile: pki.clientCert, keyFile: pki.clientKey)
        let caller = try await NATSConnection.connect(client, logger: quiet)
        defer { caller.close() }
        try await eventually(timeout: .seconds(30), "a call is placed over TLS") {
            let message = try? await caller.request("\(prefix).route", payload: RouteRequest(tenant: "t").encoded(), timeout: .seconds(5))
            return message.flatMap { try? RouteReply.decode($0.payload).call } != nil
        }
        withExtendedLifetime((router, worker, nats)) {}
    }
}
