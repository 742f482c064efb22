import Foundation
import SwitchboardCore
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import Testing

/// The calls list: `GET /v1/calls` with its filters and pages, a tenant's key held to its own calls, the CLI, and
/// the operator's page in a real browser.
@Suite("Calls list", .serialized)
struct CallListTests {
    @Test func callsAreListedNewestFirstByTheirFiltersInPagesAndATenantSeesItsOwn() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter { $0.tenancy = true }
            try await cluster.addWorker(id: "w1", capacity: 20)
            try await cluster.waitForWorkers(1)
            let tenants = TenantStore(redis: cluster.redis, keys: cluster.keys)
            let acmeKey = try await tenants.create(TenantPolicy(id: "acme", callsPerSecond: 100, burst: 100, maxLiveCalls: 20))
            let otherKey = try await tenants.create(TenantPolicy(id: "other", callsPerSecond: 100, burst: 100, maxLiveCalls: 20))
            var placed: [(tenant: String, id: String)] = []
            for tenant in ["acme", "other", "acme", "other", "acme"] {
                let key = tenant == "acme" ? acmeKey : otherKey
                let response = try await cluster.http("POST", "/v1/calls", body: Array("{}".utf8), headers: ["Authorization": "Bearer \(key)"])
                #expect(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
                placed.append((tenant, try decodeJSON(Placement.self, response.body).callID))
                try await Task.sleep(for: .milliseconds(5))  // distinct placing times: the order is the test's
            }
            let admin = ["Authorization": "Bearer \(TestCluster.adminKey)"]
            func list(_ query: String, _ headers: [String: String]? = nil) async throws -> CallList {
                let response = try await cluster.http("GET", "/v1/calls\(query)", headers: headers ?? admin)
                #expect(response.status == 200, "\(query): \(String(decoding: response.body, as: UTF8.self))")
                return try decodeJSON(CallList.self, response.body)
            }
            let all = try await list("")
            #expect(all.calls.map(\.callID) == placed.reversed().map(\.id) && all.next == nil, "newest first")
            #expect(all.calls.allSatisfy { $0.record?.workerID == "w1" && $0.record?.state != nil })
            #expect(try await list("?tenant=acme").calls.map(\.callID) == placed.filter { $0.tenant == "acme" }.reversed().map(\.id))

            // Ended through the API: found by its end reason and state; the others by theirs.
            let ended = placed[0].id
            #expect(try await cluster.http("DELETE", "/v1/calls/\(ended)", headers: ["Authorization": "Bearer \(acmeKey)"]).status == 200)
            try await eventually(timeout: .seconds(10), "the end recorded") { try await list("?end_reason=api").calls.map(\.callID) == [ended] }
            #expect(try await list("?state=ended").calls.map(\.callID) == [ended])
            #expect(try await list("?worker=w1&state=active").calls.count == 4)
            #expect(try await list("?version=no-such-version").calls.isEmpty)
            #expect(try await list("?since=\(WallClock.system.unixMillis + 60_000)&until=\(WallClock.system.unixMillis + 120_000)").calls.isEmpty, "a window with none")

            // Pages of two: every call once, in order, then no next.
            var paged: [String] = []
            var cursor: String? = nil
            repeat {
                let page = try await list("?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""))
                #expect(page.calls.count <= 2)
                paged += page.calls.map(\.callID)
                cursor = page.next
            } while cursor != nil && paged.count < 10
            #expect(paged == all.calls.map(\.callID))

            // A tenant's key: its own calls only, whatever it asks.
            #expect(try await list("", ["Authorization": "Bearer \(otherKey)"]).calls.map(\.tenant) == ["other", "other"])
            #expect(try await cluster.http("GET", "/v1/calls?tenant=acme", headers: ["Authorization": "Bearer \(otherKey)"]).status == 403)
            #expect(try await cluster.http("GET", "/v1/calls").status == 401)
            #expect(try await cluster.http("GET", "/v1/calls?limit=500", headers: admin).status == 400)
            #expect(try await cluster.http("GET", "/v1/calls?since=yesterday", headers: admin).status == 400)

            // A record Redis no longer holds: still listed (its timeline may outlive it), matched by no record filter.
            // (Ended first: the worker holding a live call writes its lost record again at its next refresh.)
            #expect(try await cluster.http("DELETE", "/v1/calls/\(placed[1].id)", headers: ["Authorization": "Bearer \(otherKey)"]).status == 200)
            try await eventually(timeout: .seconds(10), "its end recorded") { try await cluster.record(placed[1].id)["state"] == "ended" }
            _ = try await cluster.redis.send(["DEL", cluster.keys.call(placed[1].id)])
            let gone = try #require(try await list("?tenant=other").calls.first { $0.callID == placed[1].id })
            #expect(gone.record == nil && gone.tenant == "other")
            #expect(try await list("?tenant=other&worker=w1").calls.map(\.callID) == [placed[3].id])

            // The operator's CLI: a table of the tenant's calls.
            let cli = try CLIProcess(["call", "list", "--tenant", "acme", "--router-url", router.url, "--api-key", TestCluster.adminKey])
            #expect(await cli.waitForExit(timeout: .seconds(30)) == 0)
            #expect(placed.filter { $0.tenant == "acme" }.allSatisfy { cli.output.contains($0.id) } && !cli.output.contains(placed[1].id), "\(cli.output)")

            // The page, in a real browser: every call at first, then other's alone after a search; a call opens its page.
            try Agents.requireVenv()
            let shown = try await Agents.browser("calls_page.py", ["--url", "\(router.url)/ui/calls#key=\(TestCluster.adminKey)", "--tenant", "other"])
            let listed = try await list("").calls.map(\.callID)
            #expect(shown["first"] as? [String] == listed, "\(shown)")
            #expect(shown["searched"] as? [String] == [placed[3].id, placed[1].id] && shown["tenants"] as? [String] == ["other", "other"], "\(shown)")
            #expect(shown["opened"] as? String == "/ui/calls/\(placed[3].id)", "\(shown)")
        }
    }
}
