import Foundation
@testable import SwitchboardNATS
import SwitchboardCore
import SwitchboardTestSupport
import Testing

/// NKeys, JWTs and the per-role bus, against a real nats-server in operator mode.
@Suite("NATS NKeys, JWTs and per-role permissions")
struct NATSAuthTests {
    @Test func nkeysEncodeAsNATSDoesAndSurviveTheirSeed() throws {
        // A seed the NATS tools made (nkeys' own test vector) and the public key they print for it.
        let seed = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"
        let key = try NKey(seed: seed)
        #expect(key.kind == .user && key.seed == seed)
        #expect(key.publicKey == "UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L")
        #expect(Data(try key.sign(Array("PXoWU7zWAMt75FY".utf8))).base64EncodedString()
                == "ZaAiVDgB5CeYoXoQ7cBCmq+ZllzUnGUoDVb8C7PilWvCs8XKfUchAUhz2P4BYAF++Dg3w05CqyQFRDiGL6LrDw==")
        for kind in [NKey.Kind.operator_, .account, .user] {
            let fresh = try NKey.generate(kind)
            #expect(try NKey(seed: fresh.seed) == fresh)
            #expect(fresh.publicKey.first == ["O", "A", "U"][[NKey.Kind.operator_, .account, .user].firstIndex(of: kind)!])
        }
        #expect(throws: SwitchboardError.self, "a changed character fails the checksum") {
            _ = try NKey(seed: "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORSBU")
        }
    }

    /// A nats-server running the generated configuration, and the credentials beside it.
    static func closedServer(_ subjects: Subjects) async throws -> (LocalServer, BusCredentials, URL) {
        let bus = try BusCredentials.generate(subjects: subjects)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-bus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let conf = dir.appendingPathComponent("nats.conf")
        try bus.serverConfig.write(to: conf, atomically: true, encoding: .utf8)
        for (role, creds) in bus.roleCredentials {
            try creds.write(to: dir.appendingPathComponent("\(role.rawValue).creds"), atomically: true, encoding: .utf8)
        }
        return (try await LocalServer(.nats, arguments: ["-c", conf.path]), bus, dir)
    }

    func connect(_ server: LocalServer, _ configure: (inout NATSConfiguration) -> Void) async throws -> NATSConnection {
        var config = NATSConfiguration(servers: [server.url], name: "test")
        config.reconnect.enabled = false
        configure(&config)
        return try await NATSConnection.connect(config, logger: testLogger)
    }

    @Test func eachRoleMaySayOnlyWhatTheProtocolGivesIt() async throws {
        let subjects = try Subjects(prefix: uniquePrefix("bus"))
        let (server, bus, dir) = try await Self.closedServer(subjects)
        defer { try? FileManager.default.removeItem(at: dir) }
        let anonymous = await caughtError { _ = try await connect(server) { _ in } }
        #expect(anonymous != nil, "an anonymous client connects")

        func role(_ r: BusRole) async throws -> NATSConnection {
            try await connect(server) { $0.credentialsFile = dir.appendingPathComponent("\(r.rawValue).creds").path; $0.inboxPrefix = r.inboxPrefix }
        }
        let router = try await role(.router), worker = try await role(.worker), gateway = try await role(.gateway)
        defer { router.close(); worker.close(); gateway.close() }
        // Request/reply where the protocol has it: the router offers, the worker answers.
        let offers = try worker.subscribe(to: subjects.offer(worker: "w1")) { m in try? worker.reply(to: m, payload: Array("yes".utf8)) }
        try await worker.flush()
        #expect(try await router.request(subjects.offer(worker: "w1"), payload: [1], timeout: .seconds(5)).payload == Array("yes".utf8))
        // What a worker may not send reaches nobody: another worker's control, a drain notice; a heartbeat does.
        let otherWorker = try await role(.worker)
        defer { otherWorker.close() }
        let control = try otherWorker.subscribe(to: subjects.control(worker: "w2"))
        let notices = try router.subscribe(to: subjects.drains)
        let beats = try router.subscribe(to: subjects.heartbeat)
        try await otherWorker.flush()
        try await router.flush()
        try worker.publish(subjects.control(worker: "w2"), payload: Array("x".utf8))
        try worker.publish(subjects.drains, payload: Array("x".utf8))
        try worker.publish(subjects.heartbeat, payload: Array("hb".utf8))
        try await worker.flush()
        #expect(await first(beats)?.payload == Array("hb".utf8))
        #expect(await first(control, within: .milliseconds(300)) == nil, "a worker sent another worker's control")
        #expect(await first(notices, within: .milliseconds(300)) == nil, "a worker announced a drain")
        // A gateway may ask for routes, not listen to them or to any call's media.
        let sneaky = try gateway.subscribe(to: subjects.route)
        let media = try gateway.subscribe(to: "\(subjects.prefix).media.*.out")
        try? await gateway.flush()
        try gateway.publish(subjects.route, payload: [1])  // a gateway may send these (to the routers)
        try worker.publish(subjects.mediaOut(call: "c1"), payload: [2])
        try await gateway.flush()
        try await worker.flush()
        #expect(await first(sneaky, within: .milliseconds(300)) == nil, "a gateway listened to route requests")
        #expect(await first(media, within: .milliseconds(300)) == nil, "a gateway listened to a call's media")
        withExtendedLifetime(offers) {}

        // A caller's own credential: its call's media, nothing else.
        let mine = try bus.mediaSigning.credentials(forCall: "c1", subjects: subjects, expires: Int64(Date().timeIntervalSince1970) + 600)
        let caller = try await connect(server) { $0.credentials = mine; $0.inboxPrefix = nil }
        defer { caller.close() }
        let out = try caller.subscribe(to: subjects.mediaOut(call: "c1"))
        try await caller.flush()
        try worker.publish(subjects.mediaOut(call: "c1"), payload: [9])
        try await worker.flush()
        #expect(await first(out)?.payload == [9])
        let inbound = try worker.subscribe(to: "\(subjects.prefix).media.*.in")
        try await worker.flush()
        try caller.publish(subjects.mediaIn(call: "c2"), payload: [1])  // another call's: refused by the server
        try caller.publish(subjects.mediaIn(call: "c1"), payload: [2])
        try await caller.flush()
        #expect(await first(inbound)?.subject == subjects.mediaIn(call: "c1"))
    }

    @Test func plainNKeyUsersKeepTheSameRoles() async throws {
        let subjects = try Subjects(prefix: uniquePrefix("users"))
        let bus = try BusUsers.generate(subjects: subjects)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-users-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try bus.serverConfig.write(to: dir.appendingPathComponent("nats.conf"), atomically: true, encoding: .utf8)
        for (role, seed) in bus.roleSeeds { try seed.write(to: dir.appendingPathComponent("\(role.rawValue).nk"), atomically: true, encoding: .utf8) }
        let server = try await LocalServer(.nats, arguments: ["-c", dir.appendingPathComponent("nats.conf").path])
        #expect(await caughtError { _ = try await connect(server) { _ in } } != nil, "anonymous")
        func role(_ r: BusRole) async throws -> NATSConnection {
            try await connect(server) { $0.nkeySeedFile = dir.appendingPathComponent("\(r.rawValue).nk").path; $0.inboxPrefix = r.inboxPrefix }
        }
        let router = try await role(.router), worker = try await role(.worker)
        defer { router.close(); worker.close() }
        let pings = try worker.subscribe(to: subjects.ping(worker: "w1")) { m in try? worker.reply(to: m, payload: [7]) }
        let drains = try router.subscribe(to: subjects.drains)
        try await worker.flush()
        try await router.flush()
        #expect(try await router.request(subjects.ping(worker: "w1"), payload: [], timeout: .seconds(5)).payload == [7])
        try worker.publish(subjects.drains, payload: [1])
        try await worker.flush()
        #expect(await first(drains, within: .milliseconds(300)) == nil, "a worker announced a drain")
        withExtendedLifetime(pings) {}
    }

    /// One nonce in 256 signs to bytes that begin with zero, which nats.c 3.4.1 drops from its CONNECT (its base64
    /// encoder stops at a leading NUL): 400 connections would meet that about once or twice. Every one connects.
    @Test func everyMintedCallCredentialIsAccepted() async throws {
        let subjects = try Subjects(prefix: uniquePrefix("bus"))
        let (server, bus, dir) = try await Self.closedServer(subjects)
        defer { try? FileManager.default.removeItem(at: dir) }
        for i in 0..<400 {
            let creds = try bus.mediaSigning.credentials(forCall: "c\(i)", subjects: subjects, expires: Int64(Date().timeIntervalSince1970) + 600)
            let error = await caughtError {
                let nc = try await connect(server) { $0.credentials = creds; $0.inboxPrefix = nil }
                nc.close()
            }
            #expect(error == nil, "credential \(i): \(String(describing: error))")
        }
    }

    /// The first message of `subscription` within `timeout`, else nil.
    func first(_ subscription: NATSSubscription, within timeout: Duration = .seconds(5)) async -> NATSMessage? {
        await withTaskGroup(of: NATSMessage?.self) { group in
            group.addTask { var it = subscription.makeAsyncIterator(); return await it.next() }
            group.addTask { try? await Task.sleep(for: timeout); return nil }
            let result = await group.next() ?? nil
            group.cancelAll()
            subscription.unsubscribe()
            return result
        }
    }
}
