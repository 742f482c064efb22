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

    /// A password with `/` or `@`: percent-encoded (as URLs want) or as it is; never in an error.
    @Test func passwordsWithSlashesAndAtSigns() throws {
        for text in ["redis://us%40er:p%2Fa%40ss@db:6380/2", "redis://us%40er:p/a@ss@db:6380/2"] {
            let e = try Endpoint.parse(text, defaultScheme: "redis", defaultPort: 6379)
            #expect(e == Endpoint(scheme: "redis", host: "db", port: 6380, user: "us@er", password: "p/a@ss", path: "2"), "\(text)")
            #expect(!e.redacted.contains("p/a") && !e.redacted.contains("p%2F"))
        }
        for bad in ["redis://:hunter2@db:99999", "nats://u:hunter2@:4222", "nats://u:hun/ter2@[::1"] {
            let error = try #require(throws: SwitchboardError.self) { _ = try Endpoint.parse(bad, defaultScheme: "nats", defaultPort: 4222) }
            #expect(!error.message.contains("hunter2") && !error.message.contains("hun/ter2"), "\(error.message)")
        }
        #expect(Endpoint.redact("nats://u:s3cr@t@host:4222") == "nats://u:***@host:4222")
        #expect(Endpoint.redact("nats://token@host") == "nats://token@host", "a lone user part is shown (a token is not a password")
    }

    @Test(arguments: ["", "nats://host:0", "nats://host:70000", "nats://host:abc", "nats://:4222", "nats://[::1"])
    func rejected(_ text: String) {
        #expect(throws: SwitchboardError.self) { _ = try Endpoint.parse(text, defaultScheme: "nats", defaultPort: 4222) }
    }
}
