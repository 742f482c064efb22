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
    /// Workers and a gateway with a credential each (`nats-config --workers --gateways` for w1 and g1; w2's minted
    /// at its start by `nats-credential`, as a Kubernetes init step does); the caller on its call's own credential
    /// keeps audio both ways while its call is migrated and then failed over after a SIGKILL. Redis is closed too:
    /// each role signs in as its own ACL user (`redis-acl`).
    @Test func membersPlaceAndCarryCallsAndACallerKeepsItsCallAcrossMoves() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-closed-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let prefix = uniquePrefix("cb")
        let config = try CLIProcess(["nats-config", "--out", dir.path, "--prefix", prefix, "--workers", "w1", "--gateways", "g1",
                                     "--member-signing-keys"])
        #expect(await config.waitForExit(timeout: .seconds(30)) == 0, "\(config.output)")
        let minted = try CLIProcess(["nats-credential", "--signing-key", dir.appendingPathComponent("worker-signing.json").path, "--id", "w2",
                                     "--out", dir.appendingPathComponent("worker-w2.creds").path, "--prefix", prefix])
        #expect(await minted.waitForExit(timeout: .seconds(30)) == 0, "\(minted.output)")
        let mode = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("worker-w2.creds").path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let conf = dir.appendingPathComponent("server.conf")
        try "include ./nats-auth.conf\n".write(to: conf, atomically: true, encoding: .utf8)
        let nats = try await TestServer(.nats, arguments: ["-c", conf.path])
        func file(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let acl = try CLIProcess(["redis-acl", "--out", file("redis"), "--key-prefix", prefix])
        #expect(await acl.waitForExit(timeout: .seconds(30)) == 0, "\(acl.output)")
        let redis = try await TestServer(.redis, arguments: ["--aclfile", file("redis/users.acl")])
        func redisAs(_ role: String) -> [String] {
            ["--redis-url", "redis://\(role)@127.0.0.1:\(redis.port)", "--redis-password-file", file("redis/\(role).redis-password")]
        }
        let common = ["--nats-url", nats.url, "--prefix", prefix, "--key-prefix", prefix, "--log-level", "warning"]
        let router = try CLIProcess(["router", "--id", "r1", "--http-port", "0", "--admin-key", TestCluster.adminKey,
                                     "--nats-creds", file("router.creds"), "--media-signing-key", file("media-signing.json")]
                                    + redisAs("router") + common)
        #expect(!FileManager.default.fileExists(atPath: file("worker.creds")), "a shared worker credential beside the members'")
        var workers = try ["w1", "w2"].map { id in
            (id, try CLIProcess(["worker", "--id", id, "--heartbeat-interval", "0.5", "--nats-creds", file("worker-\(id).creds")]
                                + redisAs("worker") + common))
        }
        try await router.waitForOutput("listening on", timeout: .seconds(30))
        let subjects = try Subjects(prefix: prefix)

        // Anonymous: refused at the door.
        var anonymous = NATSConfiguration(servers: [nats.url], name: "anonymous")
        anonymous.reconnect.enabled = false
        #expect(await caughtError { _ = try await NATSConnection.connect(anonymous, logger: quiet) } != nil)

        // A gateway asks for a route with its role's credential and gets the call's own credential back.
        var gatewayConfig = NATSConfiguration(servers: [nats.url], name: "gateway")
        gatewayConfig.credentialsFile = file("gateway-g1.creds")
        gatewayConfig.inboxPrefix = BusRole.gateway.inboxPrefix(member: "g1")
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
        let speaker = try ToneCaller(caller, call, subjects: subjects)
        // Half a second of it, past the first frames (the codec's start), within a few Hz: on a busy machine a frame
        // concealed in the window moves the estimate by a hertz or so.
        try await eventually(timeout: .seconds(10), "the caller hears its call") { speaker.tap.count >= 10 }
        let heard = ContinuousClock.now
        try await eventually(timeout: .seconds(10), "half a second more of it") { speaker.tap.count(after: heard) >= 25 }
        let own = try speaker.tap.frequency(after: heard)
        #expect(abs(own - 440) <= 3, "its own voice, echoed: \(own) Hz")

        // Another call's audio is not the caller's to hear.
        let otherCall = try #require(try RouteReply.decode(try await gateway.request(subjects.route, payload: RouteRequest(tenant: "t").encoded(),
                                                                                   timeout: .seconds(5)).payload).call)
        var otherConfig = callerConfig
        otherConfig.credentials = try NATSConfiguration.Credentials(creds: try #require(otherCall.media.credentials))
        let otherCaller = try await NATSConnection.connect(otherConfig, logger: quiet)
        defer { otherCaller.close() }
        let otherSpeaker = try ToneCaller(otherCaller, otherCall, subjects: subjects, frequency: 880)
        let other = try AudioTap(caller, otherCall.media.out)
        try await eventually(timeout: .seconds(10), "the other call's caller hears its call") { otherSpeaker.tap.count >= 25 }
        #expect(other.count == 0, "a caller heard another call")
        otherSpeaker.hangUp()

        let line = router.output.split(separator: "\n").first { $0.contains(" listening on ") }!
        let url = String(line[line.range(of: " listening on ")!.upperBound...]).trimmingCharacters(in: .whitespaces)
        let admin = ["Authorization": "Bearer \(TestCluster.adminKey)"]
        /// The caller hears its own voice again after `instant`: its audio reaches the worker holding the call.
        func hearsItselfAfter(_ instant: ContinuousClock.Instant, _ what: String) async throws {
            try await eventually(timeout: .seconds(30), what) { speaker.tap.count(after: instant + .milliseconds(200)) >= 25 }
            let own = try speaker.tap.frequency(after: instant + .milliseconds(200))
            #expect(abs(own - 440) <= 3, "\(what): its own voice, \(own) Hz")
        }

        // Migrated: the call's events name the new worker, and the caller sends there on the same credential.
        let first = call.workerID
        let movedAt = ContinuousClock.now
        let moved = try await PlainHTTP.request("POST", url + "/v1/calls/\(call.callID)/migrate", headers: admin)
        #expect(moved.status == 200, "\(String(decoding: moved.body, as: UTF8.self))")
        let second = first == "w1" ? "w2" : "w1"  // where the call goes
        try await eventually(timeout: .seconds(10), "the caller follows the call to \(second)") { speaker.leg.worker == second }
        try await hearsItselfAfter(movedAt, "after the migration")

        // Failed over: the worker holding it is killed; another takes it on from its checkpoint.
        try await Task.sleep(for: .milliseconds(1_500))  // a checkpoint of the echo's state on the new worker
        let killedAt = ContinuousClock.now
        kill(workers.first { $0.0 == second }!.1.pid, SIGKILL)
        try await eventually(timeout: .seconds(30), "the caller follows the call back to \(first)") { speaker.leg.worker == first }
        try await hearsItselfAfter(killedAt, "after the failover")
        workers.removeAll { $0.0 == second }

        // The operator path across it: the router drains the worker, which confirms.
        let drained = try await PlainHTTP.request("POST", url + "/v1/workers/\(first)/drain", headers: admin,
                                                  body: Data(#"{"deadline_seconds":600}"#.utf8))
        #expect(drained.status == 202 && (try? decodeJSON(DrainResult.self, drained.body))?.confirmed == true,
                "\(String(decoding: drained.body, as: UTF8.self))")
        #expect(router.process.isRunning && workers.allSatisfy { $0.1.process.isRunning })
        #expect(!router.output.contains("NOPERM") && !workers.contains { $0.1.output.contains("NOPERM") },
                "a role's Redis user was refused a command it needs:\n\(router.output)\n\(workers.map(\.1.output).joined(separator: "\n"))")
        withExtendedLifetime((router, workers, nats)) {}
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
