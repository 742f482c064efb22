import SwitchboardCore
import Testing

@Suite struct EndpointTests {
    @Test func fullURL() throws {
        let e = try Endpoint.parse("redis://user:pw@db.local:6380/2", defaultScheme: "redis", defaultPort: 6379)
        #expect(e == Endpoint(scheme: "redis", host: "db.local", port: 6380, user: "user", password: "pw", path: "2"))
        #expect(e.redacted == "redis://user:***@db.local:6380/2")
    }

    @Test func defaultsAndPasswordOnly() throws {
        let e = try Endpoint.parse("127.0.0.1", defaultScheme: "nats", defaultPort: 4222)
        #expect(e.scheme == "nats" && e.host == "127.0.0.1" && e.port == 4222 && e.user == nil)
        let p = try Endpoint.parse("redis://:secret@localhost", defaultScheme: "redis", defaultPort: 6379)
        #expect(p.user == nil && p.password == "secret" && p.port == 6379)
        #expect(p.redacted == "redis://:***@localhost:6379")
    }

    @Test func ipv6() throws {
        let e = try Endpoint.parse("nats://[::1]:4223", defaultScheme: "nats", defaultPort: 4222)
        #expect(e.host == "::1" && e.port == 4223)
    }

    @Test(arguments: ["", "nats://host:0", "nats://host:70000", "nats://host:abc", "nats://:4222", "nats://[::1"])
    func rejected(_ text: String) {
        #expect(throws: SwitchboardError.self) { _ = try Endpoint.parse(text, defaultScheme: "nats", defaultPort: 4222) }
    }
}
