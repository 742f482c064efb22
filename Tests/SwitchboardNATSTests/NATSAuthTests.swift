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
    static func closedServer(_ subjects: Subjects, members: [BusCredentials.Member] = []) async throws -> (LocalServer, BusCredentials, URL) {
        let bus = try BusCredentials.generate(subjects: subjects, members: members)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-bus-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let conf = dir.appendingPathComponent("nats.conf")
        try bus.serverConfig.write(to: conf, atomically: true, encoding: .utf8)
        for (role, creds) in bus.roleCredentials {
            try creds.write(to: dir.appendingPathComponent("\(role.rawValue).creds"), atomically: true, encoding: .utf8)
        }
        for (member, creds) in bus.memberCredentials {
            try creds.write(to: dir.appendingPathComponent(member.fileName), atomically: true, encoding: .utf8)
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
            try await connect(server) { $0.credentialsFile = dir.appendingPathComponent("\(r.rawValue).creds").path; $0.inboxPrefix = r.inboxPrefix() }
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
        let beats = try router.subscribe(to: subjects.heartbeats)
        try await otherWorker.flush()
        try await router.flush()
        try worker.publish(subjects.control(worker: "w2"), payload: Array("x".utf8))
        try worker.publish(subjects.drains, payload: Array("x".utf8))
        try worker.publish(subjects.heartbeat(worker: "w1"), payload: Array("hb".utf8))
        try await worker.flush()
        #expect(await first(beats)?.payload == Array("hb".utf8))
        #expect(await first(control, within: .milliseconds(300)) == nil, "a worker sent another worker's control")
        #expect(await first(notices, within: .milliseconds(300)) == nil, "a worker announced a drain")
        // A gateway may ask for routes, not listen to them or to any call's media.
        let sneaky = try gateway.subscribe(to: subjects.route)
        let media = try gateway.subscribe(to: "\(subjects.prefix).media.*.*.out")
        try? await gateway.flush()
        try gateway.publish(subjects.route, payload: [1])  // a gateway may send these (to the routers)
        try worker.publish(subjects.mediaOut(worker: "w1", call: "c1"), payload: [2])
        try await gateway.flush()
        try await worker.flush()
        #expect(await first(sneaky, within: .milliseconds(300)) == nil, "a gateway listened to route requests")
        #expect(await first(media, within: .milliseconds(300)) == nil, "a gateway listened to a call's media")
        withExtendedLifetime(offers) {}

        // A caller's own credential: its call's media, nothing else.
        let mine = try bus.mediaSigning.credentials(forCall: "c1", subjects: subjects, expires: Int64(Date().timeIntervalSince1970) + 600)
        let caller = try await connect(server) { $0.credentials = mine; $0.inboxPrefix = nil }
        defer { caller.close() }
        let out = try caller.subscribe(to: subjects.mediaOut(worker: "*", call: "c1"))
        try await caller.flush()
        try worker.publish(subjects.mediaOut(worker: "w1", call: "c1"), payload: [9])
        try await worker.flush()
        #expect(await first(out)?.payload == [9])
        let inbound = try worker.subscribe(to: "\(subjects.prefix).media.*.*.in")
        try await worker.flush()
        try caller.publish(subjects.mediaIn(worker: "w1", call: "c2"), payload: [1])  // another call's: refused by the server
        try caller.publish(subjects.mediaIn(worker: "w1", call: "c1"), payload: [2])
        try await caller.flush()
        #expect(await first(inbound)?.subject == subjects.mediaIn(worker: "w1", call: "c1"))
    }

    /// Workers and gateways with a credential each: one member reaches only what is its own, whatever it tries.
    @Test func eachMemberReachesOnlyItsOwn() async throws {
        let subjects = try Subjects(prefix: uniquePrefix("members"))
        let members = [BusCredentials.Member(.worker, "w1"), .init(.worker, "w2"), .init(.gateway, "g1"), .init(.gateway, "g2")]
        let (server, bus, dir) = try await Self.closedServer(subjects, members: members)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(bus.roleCredentials[.worker] == nil && bus.roleCredentials[.gateway] == nil, "no shared credential beside the members'")
        func member(_ role: BusRole, _ id: String) async throws -> NATSConnection {
            try await connect(server) {
                $0.credentialsFile = dir.appendingPathComponent(BusCredentials.Member(role, id).fileName).path
                $0.inboxPrefix = role.inboxPrefix(member: id)
            }
        }
        let router = try await connect(server) {
            $0.credentialsFile = dir.appendingPathComponent("router.creds").path
            $0.inboxPrefix = BusRole.router.inboxPrefix()
        }
        let w1 = try await member(.worker, "w1"), w2 = try await member(.worker, "w2")
        let g1 = try await member(.gateway, "g1"), g2 = try await member(.gateway, "g2")
        let callCreds = try bus.mediaSigning.credentials(forCall: "c1", subjects: subjects, expires: Int64(Date().timeIntervalSince1970) + 600)
        let caller = try await connect(server) { $0.credentials = callCreds; $0.inboxPrefix = nil }
        defer { for c in [router, w1, w2, g1, g2, caller] { c.close() } }
        func flushAll() async throws { for c in [router, w1, w2, g1, g2, caller] { try await c.flush() } }

        // A worker hears its own call's audio; another worker, by name or by wildcard, hears none of it.
        let own = try w1.subscribe(to: subjects.mediaIn(worker: "w1", call: "c1"))
        let spies = try [subjects.mediaIn(worker: "w1", call: "c1"), subjects.mediaIn(worker: "*", call: "*"), "\(subjects.prefix).media.>", ">"]
            .map { try w2.subscribe(to: $0) }
        try await flushAll()
        try caller.publish(subjects.mediaIn(worker: "w1", call: "c1"), payload: [1])
        try await caller.flush()
        #expect(await first(own)?.payload == [1])
        for spy in spies { #expect(await first(spy, within: .milliseconds(300)) == nil, "w2 heard w1's call") }

        // A worker may not speak into another's call, end it, or take its offers and orders.
        let heard = try caller.subscribe(to: subjects.mediaOut(worker: "*", call: "c1"))
        let offers = try w2.subscribe(to: subjects.offer(worker: "w1"))
        let orders = try w2.subscribe(to: subjects.control(worker: "w1"))
        try await flushAll()
        try w2.publish(subjects.mediaOut(worker: "w1", call: "c1"), payload: [6])
        try w2.publish(subjects.mediaOut(worker: "w2", call: "c1"), payload: [7])  // its own subject: a worker may speak there
        try router.publish(subjects.offer(worker: "w1"), payload: [2])
        try router.publish(subjects.control(worker: "w1"), payload: [3])
        try await flushAll()
        #expect(await first(heard)?.payload == [7], "only w2's own subject reaches the caller")
        #expect(await first(offers, within: .milliseconds(300)) == nil, "w2 took w1's offers")
        #expect(await first(orders, within: .milliseconds(300)) == nil, "w2 took w1's orders")

        // Heartbeats and migrate requests only under its own id: a forged one reaches no router.
        let beats = try router.subscribe(to: subjects.heartbeats)
        let moves = try router.subscribe(to: subjects.migrates)
        try await flushAll()
        try w2.publish(subjects.heartbeat(worker: "w1"), payload: Array("forged".utf8))
        try w2.publish(subjects.migrate(worker: "w1"), payload: Array("forged".utf8))
        try w2.publish(subjects.heartbeat(worker: "w2"), payload: Array("own".utf8))
        try await flushAll()
        let beat = await first(beats)
        #expect(beat?.subject == subjects.heartbeat(worker: "w2") && beat?.payload == Array("own".utf8))
        #expect(await first(moves, within: .milliseconds(300)) == nil, "a migrate request under another worker's id")

        // A gateway reads its own route replies; another gateway, by name or by wildcard, reads none.
        let routes = try router.subscribe(to: subjects.route) { m in try? router.reply(to: m, payload: Array("placed".utf8)) }
        let peeks = try ["_INBOX.gateway.g1.>", "_INBOX.gateway.>", "_INBOX.>", ">"].map { try g2.subscribe(to: $0) }
        try await flushAll()
        #expect(try await g1.request(subjects.route, payload: [1], timeout: .seconds(5)).payload == Array("placed".utf8))
        for peek in peeks { #expect(await first(peek, within: .milliseconds(300)) == nil, "g2 read g1's reply") }

        // The caller's credential follows its call to any worker, and reaches no other call.
        let moved = try w2.subscribe(to: subjects.mediaIn(worker: "w2", call: "c1"))
        let other = try w2.subscribe(to: subjects.mediaIn(worker: "w2", call: "c2"))
        try await flushAll()
        try caller.publish(subjects.mediaIn(worker: "w2", call: "c2"), payload: [8])
        try caller.publish(subjects.mediaIn(worker: "w2", call: "c1"), payload: [9])
        try await caller.flush()
        #expect(await first(moved)?.payload == [9])
        #expect(await first(other, within: .milliseconds(300)) == nil, "a caller reached another call")
        withExtendedLifetime(routes) {}
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
            try await connect(server) { $0.nkeySeedFile = dir.appendingPathComponent("\(r.rawValue).nk").path; $0.inboxPrefix = r.inboxPrefix() }
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

    /// The minting keys are scoped: a credential they sign gets their template with its name in it and nothing
    /// more; one that claims more is refused at the door. What a stolen key can still reach is its kind only.
    @Test func scopedKeysMintOnlyTheirKind() async throws {
        let subjects = try Subjects(prefix: uniquePrefix("scoped"))
        let (server, bus, dir) = try await Self.closedServer(subjects)
        defer { try? FileManager.default.removeItem(at: dir) }
        let router = try await connect(server) {
            $0.credentialsFile = dir.appendingPathComponent("router.creds").path
            $0.inboxPrefix = BusRole.router.inboxPrefix()
        }
        defer { router.close() }
        let expires = Int64(Date().timeIntervalSince1970) + 600

        // A credential claiming more than the call key's template: refused at connect, not clamped.
        let callSigner = try NKey(seed: bus.mediaSigning.seed), user = try NKey.generate(.user)
        let greedy = try NATSJWT.userJWT(name: "c1", user: user.publicKey, account: bus.mediaSigning.account, signedBy: callSigner,
                                         permissions: .init(publish: [">"], subscribe: [">"]), expires: expires)
        #expect(await caughtError {
            _ = try await connect(server) { $0.credentials = .init(jwt: greedy, seed: user.seed); $0.inboxPrefix = nil }
        } != nil, "a call key signed a user with permissions of its own")
        // Names are identifiers: our minting never pastes a wildcard into a template.
        #expect(throws: SwitchboardError.self) { _ = try bus.mediaSigning.credentials(forCall: "*", subjects: subjects, expires: expires) }

        // A worker minted at its start reaches its own subjects, not another worker's.
        let workerKey = try #require(bus.memberSigning[.worker])
        let w3Creds = try workerKey.credentials(forMember: "w3", subjects: subjects)
        let w3 = try await connect(server) {
            $0.credentials = w3Creds
            $0.inboxPrefix = BusRole.worker.inboxPrefix(member: "w3")
        }
        defer { w3.close() }
        let offers = try w3.subscribe(to: subjects.offer(worker: "w3")) { m in try? w3.reply(to: m, payload: [3]) }
        let spy = try w3.subscribe(to: subjects.offer(worker: "w1"))
        try await w3.flush()
        #expect(try await router.request(subjects.offer(worker: "w3"), payload: [1], timeout: .seconds(5)).payload == [3])
        try router.publish(subjects.offer(worker: "w1"), payload: [1])
        try await router.flush()
        #expect(await first(spy, within: .milliseconds(300)) == nil, "a minted worker took another worker's offers")
        #expect(throws: SwitchboardError.self, "the call key mints no members") {
            _ = try bus.mediaSigning.credentials(forMember: "w4", subjects: subjects)
        }

        // The documented limit: whoever steals the call key can sign a user named `*` (the server pastes names
        // unchecked) and hear every call; still nothing outside calls (no heartbeats, routes, orders).
        let thief = try NKey.generate(.user)
        let wildcard = try NATSJWT.userJWT(name: "*", user: thief.publicKey, account: bus.mediaSigning.account, signedBy: callSigner,
                                           permissions: nil, expires: expires)
        let stolen = try await connect(server) { $0.credentials = .init(jwt: wildcard, seed: thief.seed); $0.inboxPrefix = nil }
        defer { stolen.close() }
        let calls = try stolen.subscribe(to: subjects.mediaOut(worker: "*", call: "*"))
        let beats = try stolen.subscribe(to: subjects.heartbeats)
        try await stolen.flush()
        let w1Creds = try workerKey.credentials(forMember: "w1", subjects: subjects)
        let worker = try await connect(server) {
            $0.credentials = w1Creds
            $0.inboxPrefix = BusRole.worker.inboxPrefix(member: "w1")
        }
        defer { worker.close() }
        try worker.publish(subjects.mediaOut(worker: "w1", call: "c9"), payload: [5])
        try worker.publish(subjects.heartbeat(worker: "w1"), payload: [6])
        try await worker.flush()
        #expect(await first(calls)?.payload == [5], "the stated limit of a stolen call key")
        #expect(await first(beats, within: .milliseconds(300)) == nil, "a stolen call key reached the control plane")
        withExtendedLifetime(offers) {}
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
