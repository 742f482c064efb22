import Foundation
import SwitchboardCore
@_exported import SwitchboardLocal

/// Tests say `TestServer`; it is the same launcher the benchmark and the local cluster use.
public typealias TestServer = LocalServer
public typealias TestServerError = LocalServerError

/// The URL a test should use: the environment's (`NATS_URL`, `REDIS_URL`) when set, else a server of its own.
/// The returned server (nil when the environment named one) must be kept alive for the test's duration.
public enum SharedServer {
    public static func nats() async throws -> (url: String, server: LocalServer?) {
        if let url = ProcessInfo.processInfo.environment["NATS_URL"], !url.isEmpty { return (url, nil) }
        let server = try await LocalServer(.nats)
        return (server.url, server)
    }

    public static func redis() async throws -> (url: String, server: LocalServer?) {
        if let url = ProcessInfo.processInfo.environment["REDIS_URL"], !url.isEmpty { return (url, nil) }
        let server = try await LocalServer(.redis)
        return (server.url, server)
    }
}

/// A prefix unique to one test, for subjects and Redis keys, so tests can share a server.
public func uniquePrefix(_ name: String = "t") -> String {
    "\(name)\(UUID().uuidString.prefix(8).lowercased())"
}

/// The `SwitchboardError` that `body` throws, or nil if it returns. Any other error type is a test failure,
/// reported as an `internal_error`.
public func caughtError(_ body: () async throws -> Void) async -> SwitchboardError? {
    do {
        try await body()
        return nil
    } catch let error as SwitchboardError {
        return error
    } catch {
        return SwitchboardError(.internalError, "not a SwitchboardError: \(error)")
    }
}
