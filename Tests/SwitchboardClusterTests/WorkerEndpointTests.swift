import Foundation
import SwitchboardCore
import SwitchboardObservability
import SwitchboardTestSupport
import Testing

/// A worker process's `/healthz`, `/readyz` and `/metrics`, as a kubelet and Prometheus see them, through a
/// drain that stays up (`--when-drained stay`), an undrain and SIGTERM.
@Suite struct WorkerEndpointTests {
    func get(_ base: String, _ path: String) async throws -> (status: Int, text: String) {
        let response = try await PlainHTTP.request("GET", base + path)
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    @Test func probesFollowTheDrainAndADrainedWorkerStaysUpUntilSIGTERM() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            let worker = try cluster.spawnWorker(id: "probed", ["--http-port", "0", "--when-drained", "stay", "--capacity", "5",
                                                                "--region", "eu-west", "--version", "2.0.0"])
            try await worker.waitForOutput("/metrics on http://127.0.0.1:", timeout: .seconds(30))
            let line = try #require(worker.output.split(separator: "\n").first { $0.contains("/metrics on http://") })
            let base = String(line[line.range(of: "http://")!.lowerBound...])

            try await eventually(timeout: .seconds(10), "ready") { try await get(base, "/readyz").status == 200 }
            #expect(try await get(base, "/healthz").status == 200)
            let metrics = try await get(base, "/metrics").text
            #expect(metrics.contains("\(MetricNames.workerCapacity) 5"))
            #expect(metrics.contains("\(MetricNames.workerState){state=\"ready\"} 1"))
            #expect(metrics.contains("\(MetricNames.workerNATSConnected) 1"))

            // The routers export what an autoscaler needs for the version and region.
            try await cluster.waitForWorkers(1, timeout: .seconds(10))
            let routerMetrics = try await cluster.http("GET", "/metrics")
            let exported = String(decoding: routerMetrics.body, as: UTF8.self)
            #expect(exported.contains("\(MetricNames.slotsCapacity){region=\"eu-west\",version=\"2.0.0\"} 5"), "\(exported)")
            #expect(exported.contains("\(MetricNames.workersDesired){region=\"eu-west\",version=\"2.0.0\"} 0"))

            // A drain: not ready (rollouts and disruption budgets see it), alive (no restart ends calls).
            let drained = try await cluster.http("POST", "/v1/workers/probed/drain", body: Array(#"{"deadline_seconds": 60}"#.utf8))
            #expect(drained.status == 202)
            try await eventually(timeout: .seconds(10), "not ready while draining") {
                let r = try await get(base, "/readyz")
                return r.status == 503 && r.text.contains("\"reason\":\"draining\"")
            }
            #expect(try await get(base, "/healthz").status == 200)
            // No calls: the drain is done, and the process stays (under a Deployment an exit would be restarted).
            try await eventually(timeout: .seconds(10), "drained and idle") {
                try await get(base, "/metrics").text.contains("\(MetricNames.workerDrainedIdle) 1")
            }
            try await Task.sleep(for: .seconds(1))  // an exit would have come at once
            #expect(worker.process.isRunning)
            #expect(try await get(base, "/healthz").status == 200)

            // An undrain (a rollback, an operator's change of mind) takes calls again.
            #expect(try await cluster.http("POST", "/v1/workers/probed/undrain").status == 200)
            try await eventually(timeout: .seconds(10), "ready again") { try await get(base, "/readyz").status == 200 }

            // SIGTERM drains and exits: no calls here, so at once and cleanly.
            kill(worker.pid, SIGTERM)
            #expect(await worker.waitForExit(timeout: .seconds(20)) == 0, "\(worker.output)")
        }
    }

    @Test func badWorkerEndpointSettingsAreRefusedAtStart() async throws {
        try await withTestCluster { cluster in
            for (arguments, message) in [(["--when-drained", "linger"], "when-drained must be exit or stay"),
                                         (["--http-port", "70000"], "http-port must be 0-65535")] {
                let worker = try cluster.spawnWorker(id: "bad", arguments)
                #expect(await worker.waitForExit(timeout: .seconds(20)) == 64, "\(arguments)")
                #expect(worker.output.contains(message), "\(worker.output)")
            }
        }
    }
}
