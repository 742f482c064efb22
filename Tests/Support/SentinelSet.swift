import Foundation
import Logging
import SwitchboardCore
import SwitchboardRedis

/// A primary, two replicas and three Sentinels (quorum 2) on loopback, real `redis-server` processes all, for
/// tests of following a failover. Sentinels judge the primary down after `downAfter` without an answer.
public final class SentinelSet: Sendable {
    public static let primaryName = "sbprimary"
    public let servers: [LocalServer]
    public let sentinels: [LocalServer]

    public init(downAfter: Duration = .seconds(1)) async throws {
        let primary = try await LocalServer(.redis)
        var servers = [primary]
        for _ in 0..<2 {
            servers.append(try await LocalServer(.redis, arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"]))
        }
        var sentinels: [LocalServer] = []
        for _ in 0..<3 {
            sentinels.append(try await LocalServer(.sentinel, configLines: [
                "sentinel monitor \(Self.primaryName) 127.0.0.1 \(primary.port) 2",
                "sentinel down-after-milliseconds \(Self.primaryName) \(downAfter.milliseconds)",
                "sentinel failover-timeout \(Self.primaryName) 10000",
                "sentinel parallel-syncs \(Self.primaryName) 2",
            ]))
        }
        self.servers = servers
        self.sentinels = sentinels
    }

    /// `redis-sentinel://` naming every Sentinel.
    public var url: String {
        "redis-sentinel://" + sentinels.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "/\(Self.primaryName)"
    }

    /// Waits until both replicas stream from the primary and every Sentinel knows the replicas and the other
    /// Sentinels (they find each other through the primary, in a few seconds): a failover can be elected.
    public func waitUntilReady(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await isReady() { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw LocalServerError("the Sentinel set did not come together within \(timeout)")
    }

    private func isReady() async -> Bool {
        guard let primary = await primaryPort(), let info = try? await Self.send(primary, ["INFO", "replication"]).string,
              info.components(separatedBy: "state=online").count == 3 else { return false }  // both replicas streaming
        for sentinel in sentinels {
            guard let replicas = try? await Self.send(sentinel.port, ["SENTINEL", "REPLICAS", Self.primaryName]).array,
                  let others = try? await Self.send(sentinel.port, ["SENTINEL", "SENTINELS", Self.primaryName]).array,
                  replicas.count == 2, others.count == 2 else { return false }
        }
        return true
    }

    /// The port the first Sentinel that answers names as the primary's.
    public func primaryPort() async -> Int? {
        for sentinel in sentinels {
            if let pair = try? await Self.send(sentinel.port, ["SENTINEL", "get-master-addr-by-name", Self.primaryName]).array,
               pair.count == 2, let port = pair[1].string.flatMap({ Int($0) }) { return port }
        }
        return nil
    }

    /// The server process on `port`.
    public func server(on port: Int) -> LocalServer? { servers.first { $0.port == port } }

    /// One command to one server on loopback, on a connection of its own.
    public static func send(_ port: Int, _ command: [String]) async throws -> RedisValue {
        var config = try RedisConfiguration(url: "redis://127.0.0.1:\(port)")
        config.poolSize = 1
        config.connectTimeout = .seconds(1)
        config.commandTimeout = .seconds(1)
        var quiet = Logger(label: "test.sentinel-set")
        quiet.logLevel = .critical
        let client = try RedisClient(configuration: config, logger: quiet)
        defer { client.close() }
        return try await client.send(command)
    }
}
