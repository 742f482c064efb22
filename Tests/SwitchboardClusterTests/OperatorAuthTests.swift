import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

/// Operator endpoints need an admin key whether tenancy is on or off; the audit names the key's owner.
@Suite("Operator authentication")
struct OperatorAuthTests {
    /// Every operator endpoint, with a body that would be accepted.
    static let endpoints: [(String, String, String?)] = [
        ("GET", "/v1/workers", nil), ("POST", "/v1/workers/w-1/drain", "{}"), ("POST", "/v1/workers/w-1/undrain", nil),
        ("POST", "/v1/calls/c-1/migrate", nil), ("GET", "/v1/audit", nil), ("GET", "/v1/deployment", nil),
        ("PUT", "/v1/deployment", #"{"version":"1.0.0"}"#), ("POST", "/v1/deployment/promote", nil),
        ("POST", "/v1/deployment/abort", nil), ("POST", "/v1/deployment/rollback", nil), ("GET", "/v1/deployment/history", nil),
    ]

    @Test(arguments: [false, true])
    func everyOperatorEndpointNeedsAnAdminKeyAndATenantKeyIsForbidden(tenancy: Bool) async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter { config in
                config.tenancy = tenancy
                config.adminKeys = [try! AdminKey(name: "alice", key: "alice-key-0123456789"), try! AdminKey(name: "bob", key: "bob-key-0123456789ab")]
            }
            try await cluster.addWorker(id: "w-1")
            try await cluster.waitForWorkers(1)
            let tenantKey = try await TenantStore(redis: cluster.redis, keys: cluster.keys)
                .create(TenantPolicy(id: "acme", callsPerSecond: 10, burst: 5, maxLiveCalls: 10))
            // The audit names the key's owner, whatever name the client sends.
            let drained = try await cluster.http("POST", "/v1/workers/w-1/drain", body: Array(#"{"deadline_seconds":600}"#.utf8),
                                                 headers: ["Authorization": "Bearer alice-key-0123456789", "X-Switchboard-Actor": "bob@pretending"])
            #expect(drained.status == 202)
            for (method, path, body) in Self.endpoints {
                let bytes = body.map { Array($0.utf8) }
                for (headers, status, code) in [([String: String](), 401, "unauthorized"), (["Authorization": "Bearer nonsense-key-123456"], 401, "unauthorized"),
                                                (["Authorization": "Bearer \(tenantKey)"], 403, "forbidden"),
                                                (["Authorization": "Bearer \(TestCluster.adminKey)"], 401, "unauthorized")] {
                    let (got, data) = try await cluster.http(method, path, body: bytes, headers: headers, asOperator: false)
                    #expect(got == status && errorCode(data) == code, "\(method) \(path) with \(headers.keys.sorted()): \(got) \(String(decoding: data, as: UTF8.self))")
                }
                let (ok, data) = try await cluster.http(method, path, body: bytes, headers: ["Authorization": "Bearer bob-key-0123456789ab"])
                #expect(![401, 403].contains(ok), "\(method) \(path) with bob's key: \(ok) \(String(decoding: data, as: UTF8.self))")
            }
            let entries = try decodeJSON(AuditEntries.self, try await cluster.http("GET", "/v1/audit?limit=200",
                                                                                   headers: ["Authorization": "Bearer alice-key-0123456789"]).body).entries
            #expect(entries.contains { $0.action == "drain" && $0.outcome == "ok" && $0.actor == "alice (admin key, client bob@pretending)" })
            // Refusals are counted, and audited.
            #expect(router.router.metrics.value(MetricNames.operatorRefusals, ["status": "forbidden"]) == Double(Self.endpoints.count))
            #expect(router.router.metrics.value(MetricNames.operatorRefusals, ["status": "unauthorized"]) == Double(Self.endpoints.count * 3))
            #expect(entries.contains { $0.outcome == "forbidden" && $0.actor == "a tenant's key" })
            #expect(entries.contains { $0.outcome == "unauthorized" && $0.actor == "no key" })
        }
    }

    @Test func insecureNoAuthOpensOperatorEndpointsAndSaysSo() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter { $0.adminKeys = []; $0.insecureNoAuth = true }
            #expect(try await cluster.http("GET", "/v1/workers", asOperator: false).status == 200)
            let readiness = try decodeJSON(Readiness.self, try await cluster.http("GET", "/readyz").body)
            #expect(readiness.auth == "off")
        }
    }

    @Test func aRouterWithNoKeyMakesOneOnLoopbackAndRefusesANetworkAddress() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-state-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: state) }
        try await withTestCluster { cluster in
            let environment = ["SWITCHBOARD_STATE_DIR": state.path]
            let args = ["router", "--id", "keyless", "--nats-url", cluster.natsURL, "--redis-url", cluster.redisURL, "--prefix", cluster.subjects.prefix,
                        "--key-prefix", cluster.keys.prefix, "--http-port", "0", "--log-level", "warning"]
            let refused = try CLIProcess(args + ["--http-host", "0.0.0.0"], environment: environment)
            #expect(await refused.waitForExit(timeout: .seconds(30)) == 64)
            #expect(refused.output.contains("needs an admin key"), "\(refused.output)")

            let local = try CLIProcess(args, environment: environment)
            try await local.waitForOutput("listening on", timeout: .seconds(30))
            let file = state.appendingPathComponent("keyless.admin-key").path
            #expect(local.output.contains("generated one for this router, in \(file)"), "\(local.output)")
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            let key = String(try String(contentsOfFile: file, encoding: .utf8).split(separator: ":")[1]).trimmingCharacters(in: .whitespacesAndNewlines)
            let line = local.output.split(separator: "\n").first { $0.contains(" listening on ") }!
            let url = String(line[line.range(of: " listening on ")!.upperBound...]).trimmingCharacters(in: .whitespaces)
            #expect(try await PlainHTTP.request("GET", url + "/v1/workers").status == 401)
            #expect(try await PlainHTTP.request("GET", url + "/v1/workers", headers: ["Authorization": "Bearer \(key)"]).status == 200)
            // The CLI takes the file as it is.
            let status = try CLIProcess(["status", "--router-url", url, "--api-key-file", file])
            #expect(await status.waitForExit(timeout: .seconds(30)) == 0, "\(status.output)")
            kill(local.pid, SIGTERM)
            _ = await local.waitForExit(timeout: .seconds(10))
        }
    }
}
