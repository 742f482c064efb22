import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardTestSupport
import Testing

/// Connects to the shared test server (NATS_URL, or one started for this test).
func withNATS<T>(_ body: (NATSConnection, String) async throws -> T) async throws -> T {
    let (url, server) = try await SharedServer.nats()
    defer { withExtendedLifetime(server) {} }
    let connection = try await NATSConnection.connect(config(url), logger: testLogger)
    defer { connection.close() }
    return try await body(connection, uniquePrefix())
}

/// Quiet unless something is wrong; set LOG_LEVEL=debug to see everything.
let testLogger: Logger = {
    var logger = Logger(label: "test.nats")
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

func config(_ url: String, name: String = "test") -> NATSConfiguration {
    var config = NATSConfiguration(servers: [url], name: name)
    config.reconnect.wait = .milliseconds(50)
    config.reconnect.jitter = .milliseconds(10)
    return config
}

/// The next message, or nil after `timeout`.
func next(_ subscription: NATSSubscription, timeout: Duration = .seconds(2)) async -> NATSMessage? {
    await withTaskGroup(of: NATSMessage?.self) { group in
        group.addTask {
            var iterator = subscription.makeAsyncIterator()
            return await iterator.next()
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

/// Waits for an event matching `match` on the connection's event stream, up to `timeout`.
func waitForEvent(_ events: AsyncStream<NATSConnectionEvent>, timeout: Duration,
                  _ match: @escaping @Sendable (NATSConnectionEvent) -> Bool) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            for await event in events where match(event) { return true }
            return false
        }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

