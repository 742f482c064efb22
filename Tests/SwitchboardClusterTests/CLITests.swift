import Foundation
import SwitchboardCore
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Testing

@Suite("The switchboard CLI")
struct CLITests {
    /// Runs `switchboard` to completion and returns its exit status and output; operator commands carry the
    /// test clusters' admin key unless `--api-key` is given.
    func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        let cli = try CLIProcess(arguments, environment: ["SWITCHBOARD_API_KEY": TestCluster.adminKey].merging(environment) { $1 })
        guard let status = await cli.waitForExit(timeout: .seconds(30)) else {
            Issue.record("switchboard \(arguments) did not exit")
            return (-1, cli.output)
        }
        try await Task.sleep(for: .milliseconds(50))  // the last of the output
        return (status, cli.output)
    }

    @Test func callRouteShowEndAndStatusAgainstARouter() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            try await cluster.addWorker(id: "cli-worker", capacity: 2)
            try await cluster.waitForWorkers(1)

            let (routed, routeOut) = try await askedAgainWhileUnavailable {
                try await run(["call", "route", "--router-url", router.url, "--tenant", "acme", "--metadata", "from=+3312", "--output", "json"])
            }
            #expect(routed == 0, "\(routeOut)")
            let placement = try JSONDecoder().decode(Placement.self, from: Data(routeOut.utf8))
            #expect(placement.workerID == "cli-worker")

            let (explained, explainOut) = try await askedAgainWhileUnavailable {
                try await run(["call", "route", "--router-url", router.url, "--explain"])
            }
            #expect(explained == 0 && explainOut.contains("scheduler (spread): 1 workers, 1 eligible")
                && explainOut.contains("cli-worker *"), "\(explainOut)")
            let (nowhere, nowhereOut) = try await run(["call", "route", "--router-url", router.url, "--region", "mars", "--explain"])
            #expect(nowhere == 75 && nowhereOut.contains("left out: 1 region") && nowhereOut.contains("error: no_capacity"), "\(nowhereOut)")

            let (shown, showOut) = try await run(["call", "show", placement.callID, "--router-url", router.url])
            #expect(shown == 0 && showOut.contains("call \(placement.callID):") && showOut.contains("tenant acme"), "\(showOut)")

            let (status, statusOut) = try await run(["status", "--router-url", router.url])
            #expect(status == 0 && statusOut.contains("cli-worker") && statusOut.contains("1 workers ("), "\(statusOut)")

            let (ended, endOut) = try await run(["call", "end", placement.callID, "--router-url", router.url])
            #expect(ended == 0 && endOut.contains("ended: api"), "\(endOut)")

            // Errors: one line with the API's code and a non-zero exit.
            let (missing, missingOut) = try await run(["call", "show", "cnope", "--router-url", router.url])
            #expect(missing != 0 && missingOut.contains("error: not_found"), "\(missingOut)")
            let (down, downOut) = try await run(["status", "--router-url", "http://127.0.0.1:\(try TestServer.freePort())"])
            #expect(down == 69 && downOut.contains("error: connection_failed"), "\(downOut)")
        }
    }

    @Test func nodeDrainUndrainMigrateAndAuditFromTheCLI() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            try await cluster.addWorker(id: "w-a", handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let call = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "acme")).call)
            let r = ["--router-url", router.url]

            let (drained, drainOut) = try await run(["node", "drain", "w-a", "--deadline", "1h30m"] + r)
            #expect(drained == 0 && drainOut.contains("worker w-a draining") && drainOut.contains("1 calls left"), "\(drainOut)")
            let (listed, listOut) = try await run(["node", "list"] + r)
            #expect(listed == 0 && listOut.contains("draining") && listOut.contains("to deadline, then migrate"), "\(listOut)")
            // Nowhere to move the call to: a clear error, exit 75 (try again later), and the call stays.
            let (stuck, stuckOut) = try await run(["call", "migrate", call.callID] + r)
            #expect(stuck == 75 && stuckOut.contains("error: no_capacity"), "\(stuckOut)")
            let (undrained, undrainOut) = try await run(["node", "undrain", "w-a"] + r)
            #expect(undrained == 0 && undrainOut.contains("takes calls again"), "\(undrainOut)")

            let (negative, negativeOut) = try await run(["node", "drain", "w-a", "--deadline", "-5"] + r)
            #expect(negative == 64 && negativeOut.contains("must not be negative"), "\(negativeOut)")
            let (unknown, unknownOut) = try await run(["node", "drain", "nobody"] + r)
            #expect(unknown == 65 && unknownOut.contains("error: not_found"), "\(unknownOut)")

            let (audited, auditOut) = try await run(["audit"] + r)
            let lines = auditOut.split(separator: "\n").dropFirst().map(String.init)
            #expect(audited == 0 && lines.count == 4, "\(auditOut)")
            #expect(lines.first?.contains("drain") == true && lines.first?.contains("not_found") == true, "\(auditOut)")
            #expect(lines.last?.contains("drain") == true && lines.last?.contains("ok") == true, "\(auditOut)")
        }
    }

    @Test func optionsComeFromFlagsEnvironmentAndAConfigFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-config-\(UUID().uuidString).json")
        try Data(#"{"capacity": 31, "region": "from-file", "zone": "z1"}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        // The file sets capacity and region; the environment overrides the region; a flag overrides the zone.
        let (status, help) = try await run(["worker", "--config", file.path, "--help"],
                                           environment: ["SWITCHBOARD_REGION": "from-env"])
        #expect(status == 0)
        #expect(help.contains("default: 31"), "\(help)")
        #expect(help.contains("default: from-env"))
        #expect(help.contains("default: z1"))

        // A 1 in a file is the number 1 (it was once read as true), and a float stays a float.
        try Data(#"{"capacity": 1, "heartbeat-interval": 0.25}"#.utf8).write(to: file)
        let (_, ones) = try await run(["worker", "--config", file.path, "--help"])
        #expect(ones.contains("Calls held at most at once. (default: 1)") && ones.contains("(default: 0.25)"), "\(ones)")

        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-bad-\(UUID().uuidString).json")
        try Data("{not json".utf8).write(to: bad)
        defer { try? FileManager.default.removeItem(at: bad) }
        let (badStatus, badOut) = try await run(["worker", "--config", bad.path])
        #expect(badStatus == 64 && badOut.contains("error: cannot read config file"), "\(badOut)")
        let (badEnv, badEnvOut) = try await run(["worker", "--help"], environment: ["SWITCHBOARD_CAPACITY": "lots"])
        #expect(badEnv == 64 && badEnvOut.contains("capacity must be a whole number"), "\(badEnvOut)")

        // URLs with passwords from the environment never show in --help, nor in the error when they fail.
        let secrets = ["SWITCHBOARD_REDIS_URL": "redis://:hunter2@127.0.0.1:1", "SWITCHBOARD_NATS_URL": "nats://u:hunter3@127.0.0.1:1",
                       "REDIS_URL": "redis://:hunter4@127.0.0.1:1", "NATS_URL": "nats://u:hunter5@127.0.0.1:1"]
        for command in [["worker", "--help"], ["router", "--help"], ["doctor", "--help"], ["worker", "--id", "w1"]] {
            let (_, out) = try await run(command, environment: secrets)
            #expect(!out.contains("hunter"), "\(command): \(out)")
        }
    }

    @Test func workerRefusesBadSettingsWithOneLine() async throws {
        let (status, output) = try await run(["worker", "--id", "bad id", "--nats-url", "nats://127.0.0.1:1"])
        #expect(status == 64 && output.contains("error: invalid_argument"), "\(output)")
        let (handler, handlerOut) = try await run(["worker", "--handler", "karaoke", "--nats-url", "nats://127.0.0.1:1"])
        #expect(handler == 64 && handlerOut.contains("unknown handler 'karaoke'"), "\(handlerOut)")
        let (unreachable, unreachableOut) = try await run(["worker", "--nats-url", "nats://127.0.0.1:\(try TestServer.freePort())"])
        #expect(unreachable == 69 && unreachableOut.contains("error: connection_failed"), "\(unreachableOut)")
        // Agents: one way at a time, a URL the worker can reach, an env file it can read, names that are set.
        let nats = ["--nats-url", "nats://127.0.0.1:1"]
        for (arguments, says) in [(["--agent-url", "ws://a:1/ws", "--agent-command", "bot"], "not both"),
                                  (["--agent-url", "wss://agents.example/ws"], "must start with ws://"),
                                  (["--agent-command", "bot", "--agent-env-file", "/nonexistent/agent.env"], "cannot read agent env file"),
                                  (["--agent-command", "bot", "--agent-env-pass", "SB_TEST_SURELY_UNSET"], "SB_TEST_SURELY_UNSET, which is not set"),
                                  (["--agent-command", "bot", "--agent-pool=1001"], "agent pool must be 0-1000"),
                                  (["--gpu-source", "cuda"], "gpu source must be")] {
            let (status, output) = try await run(["worker"] + arguments + nats)
            #expect(status == 64 && output.contains(says), "\(arguments): \(output)")
        }
    }
}

@Suite("The switchboard CLI with tenants")
struct TenantCLITests {
    func run(_ arguments: [String], apiKey: String = TestCluster.adminKey) async throws -> (status: Int32, output: String) {
        let cli = try CLIProcess(arguments, environment: ["SWITCHBOARD_API_KEY": apiKey])
        guard let status = await cli.waitForExit(timeout: .seconds(30)) else {
            Issue.record("switchboard \(arguments) did not exit")
            return (-1, cli.output)
        }
        try await Task.sleep(for: .milliseconds(50))
        return (status, cli.output)
    }

    func apiKey(in output: String) -> String? {
        output.split(separator: " ").first { $0.hasPrefix("sbk_") }.map(String.init)
    }

    @Test func tenantsAreManagedAndKeysOpenTheRouter() async throws {
        try await withTestCluster { cluster in
            let admin = "admin-key-of-sixteen-or-more"
            let router = try await cluster.addRouter { $0.tenancy = true; $0.adminKeys = [try! AdminKey(name: "ops-alice", key: admin)] }
            try await cluster.addWorker(capacity: 4)
            try await cluster.waitForWorkers(1)
            let redis = ["--redis-url", cluster.redisURL, "--key-prefix", cluster.keys.prefix]

            let (created, createOut) = try await run(["tenant", "create", "acme", "--calls-per-second", "20", "--burst", "5",
                                                       "--max-live-calls", "3"] + redis)
            #expect(created == 0, "\(createOut)")
            let key = try #require(apiKey(in: createOut), "\(createOut)")
            let (badStatus, badOut) = try await run(["tenant", "create", "bad", "--calls-per-second=-1"] + redis)
            #expect(badStatus == 64 && badOut.contains("calls per second must be"), "\(badOut)")
            let (dup, dupOut) = try await run(["tenant", "create", "acme"] + redis)
            #expect(dup != 0 && dupOut.contains("error: conflict"), "\(dupOut)")

            let file = FileManager.default.temporaryDirectory.appendingPathComponent("sbtest-tenants-\(UUID().uuidString).json")
            try Data(#"[{"id":"acme","calls_per_second":30,"burst":5,"max_live_calls":3},{"id":"beta","calls_per_second":1,"burst":1,"max_live_calls":1}]"#.utf8).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let (applied, applyOut) = try await run(["tenant", "apply", file.path] + redis)
            #expect(applied == 0 && applyOut.contains("updated acme") && applyOut.contains("created beta"), "\(applyOut)")
            let (_, listOut) = try await run(["tenant", "list"] + redis)
            #expect(listOut.contains("acme: 30.0 calls/s") && listOut.contains("beta: 1.0 calls/s"), "\(listOut)")
            let (_, setOut) = try await run(["tenant", "set", "beta", "--max-live-calls", "7"] + redis)
            #expect(setOut.contains("at most 7 live calls"), "\(setOut)")
            let (priced, pricedOut) = try await run(["tenant", "set", "beta", "--price-per-minute", "0.02", "--monthly-minutes", "100"] + redis)
            #expect(priced == 0 && pricedOut.contains("0.02 a minute, at most 100 minutes a month"), "\(pricedOut)")
            let (_, usageOut) = try await run(["tenant", "usage", "beta"] + redis)
            #expect(usageOut.contains("beta, \(UsagePeriod.month(WallClock.system.unixMillis)) (UTC): 0 calls, 0.00 minutes (0.00 s), cost 0.00")
                    && usageOut.contains("limit: 100 minutes a month"), "\(usageOut)")
            let (_, usageJSON) = try await run(["tenant", "usage", "beta", "--month", "2026-01", "--output", "json"] + redis)
            let report = try JSONDecoder().decode(UsageReport.self, from: Data(usageJSON.utf8))
            #expect(report.month == "2026-01" && report.monthlyMinutes == 100 && report.cost == 0)
            let (badMonth, badMonthOut) = try await run(["tenant", "usage", "beta", "--month", "2026-13"] + redis)
            #expect(badMonth == 64 && badMonthOut.contains("a month is YYYY-MM"), "\(badMonthOut)")

            // The key opens the router for calls; the admin key opens operator commands, and a tenant key does not.
            let (routed, routeOut) = try await askedAgainWhileUnavailable {
                try await run(["call", "route", "--router-url", router.url, "--api-key", key])
            }
            #expect(routed == 0 && routeOut.contains("on worker"), "\(routeOut)")
            let (noKey, noKeyOut) = try await run(["call", "route", "--router-url", router.url], apiKey: "")
            #expect(noKey == 77 && noKeyOut.contains("an API key is needed"), "\(noKeyOut)")
            let (asTenant, _) = try await run(["status", "--router-url", router.url, "--api-key", key])
            #expect(asTenant == 77)
            let (asAdmin, statusOut) = try await run(["status", "--router-url", router.url, "--api-key", admin])
            #expect(asAdmin == 0 && statusOut.contains("1 workers"), "\(statusOut)")
            // Draining, moving calls and reading the audit are operator actions too.
            let workerID = try #require(router.router.workers().first?.id)
            for command in [["node", "drain", workerID], ["node", "undrain", workerID], ["call", "migrate", "c-any"], ["audit"]] {
                let (refused, refusedOut) = try await run(command + ["--router-url", router.url, "--api-key", key])
                #expect(refused == 77 && refusedOut.contains("admin key"), "\(command): \(refusedOut)")
            }
            let (drained, drainedOut) = try await run(["node", "drain", workerID, "--router-url", router.url, "--api-key", admin])
            #expect(drained == 0, "\(drainedOut)")
            let (audited, auditOut) = try await run(["audit", "--router-url", router.url, "--api-key", admin])
            #expect(audited == 0 && auditOut.contains("ops-alice (admin key") && auditOut.contains(workerID), "\(auditOut)")

            let (rotated, rotateOut) = try await run(["tenant", "rotate-key", "acme"] + redis)
            let newKey = try #require(apiKey(in: rotateOut), "\(rotateOut)")
            #expect(rotated == 0 && newKey != key)
            let (deleted, _) = try await run(["tenant", "delete", "beta"] + redis)
            #expect(deleted == 0)
            let (gone, goneOut) = try await run(["tenant", "show", "beta"] + redis)
            #expect(gone != 0 && goneOut.contains("error: not_found"), "\(goneOut)")
        }
    }
}

/// A route asked again (twice at most) while it fails with `unavailable`, as a caller does on a 503: a loaded
/// test run can make one route miss its 2 s deadline (seen: the record's write found the deadline spent).
func askedAgainWhileUnavailable(_ route: () async throws -> (status: Int32, output: String)) async rethrows
    -> (status: Int32, output: String) {
    var result = try await route()
    for _ in 0..<2 where result.status != 0 && result.output.contains("unavailable") { result = try await route() }
    return result
}
