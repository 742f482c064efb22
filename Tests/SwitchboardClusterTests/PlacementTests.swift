import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Synchronization
import Testing

@Suite("Placement")
struct PlacementTests {
    @Test func aWorkerAtCapacityRefusesAndTheCallLandsOnAnother() async throws {
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            let real = try await cluster.addWorker(id: "zz-real", capacity: 2)
            // A worker whose heartbeat says it is empty and in the caller's zone (so the router tries it first) but
            // which is full and refuses, as a worker would when the router's view is a heartbeat old.
            let offers = Mutex(0)
            let full = try cluster.client.subscribe(to: cluster.subjects.offer(worker: "aa-full"))
            let responder = Task {
                for await message in full {
                    offers.withLock { $0 += 1 }
                    try? cluster.client.reply(to: message, payload: OfferReply.refuse(.full, workerID: "aa-full", version: "1.0.0", region: "local").encoded())
                }
            }
            let seq = Mutex<UInt64>(0)
            @Sendable func heartbeat() -> [UInt8] {
                Heartbeat(workerID: "aa-full", version: "1.0.0", region: "local", zone: "local-b", state: .ready, capacity: 100,
                          activeCalls: 0, cpu: 0, memoryUsedBytes: 0, memoryLimitBytes: 0, seq: seq.withLock { $0 += 1; return $0 },
                          incarnation: "x").encoded()
            }
            let beat = Task {
                while !Task.isCancelled {
                    try? cluster.client.publish(cluster.subjects.heartbeat(worker: "aa-full"), payload: heartbeat())
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            // It answers pings as a worker does, so a slow moment in a busy test run does not make it dead.
            let pings = try cluster.client.subscribe(to: cluster.subjects.ping(worker: "aa-full")) { message in
                try? cluster.client.reply(to: message, payload: heartbeat())
            }
            try await cluster.waitForWorkers(2)
            // The real worker refuses directly too once it is full.
            let caller = RouteRequest(tenant: "t", region: "local", zone: "local-b", locality: .preferred)
            let call = try #require(try await cluster.routeByNATS(caller).call)
            #expect(call.workerID == real.id)
            #expect(offers.withLock { $0 } == 1, "the router offered the refusing worker first, then moved on")
            #expect(router.router.metrics.value("switchboard_offers_total", ["result": "refused_full"]) == 1)

            _ = try #require(try await cluster.routeByNATS(caller).call)
            let direct = try await cluster.client.request(cluster.subjects.offer(worker: real.id),
                                                          payload: Offer(callID: "cdirect", tenant: "t", region: nil, metadata: [:], routerID: "test").encoded(), timeout: .seconds(10))
            #expect(try OfferReply.decode(direct.payload) == OfferReply.refuse(.full, workerID: real.id, version: "1.0.0", region: "local"))
            beat.cancel()
            responder.cancel()
            pings.unsubscribe()
        }
    }

    @Test func withEveryWorkerFullTheCallerGets503Promptly() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter { $0.routeDeadline = .seconds(30) }
            try await cluster.addWorker(capacity: 1)
            try await cluster.waitForWorkers(1)
            #expect(try await cluster.http("POST", "/v1/calls", body: Array(#"{"tenant":"t"}"#.utf8)).status == 201)
            let start = ContinuousClock.now
            let (status, body) = try await cluster.http("POST", "/v1/calls", body: Array(#"{"tenant":"t"}"#.utf8))
            #expect(status == 503 && errorCode(body) == "no_capacity")
            #expect(ContinuousClock.now - start < .seconds(10))  // at once, not at the (30 s) route deadline
            let nats = try await cluster.routeByNATS(RouteRequest(tenant: "t"))
            #expect(nats.error?.code == "no_capacity")
            // A region nobody serves is no_capacity too.
            #expect(try await cluster.routeByNATS(RouteRequest(tenant: "t", region: "mars")).error?.code == "no_capacity")
        }
    }

    @Test func twoRoutersServeAtOnceWithNoDoublePlacement() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addRouter()
            for _ in 0..<3 { try await cluster.addWorker(capacity: 5) }
            try await cluster.waitForWorkers(3)
            // 15 slots, 20 callers at once, through both routers (NATS queue group and each router's HTTP).
            @Sendable func attempt(_ i: Int) async throws -> (call: Placement?, code: String?) {
                if i % 2 == 0 {
                    let reply = try await cluster.routeByNATS(RouteRequest(tenant: "t"))
                    return (reply.call, reply.error?.code)
                }
                let (status, body) = try await cluster.http("POST", "/v1/calls", body: Array(#"{"tenant":"t"}"#.utf8), router: (i / 2) % 2)
                return status == 201 ? (try decodeJSON(Placement.self, body), nil) : (nil, errorCode(body))
            }
            var results = try await withThrowingTaskGroup(of: (Int, (call: Placement?, code: String?)).self) { group in
                for i in 0..<20 { group.addTask { (i, try await attempt(i)) } }
                return try await group.reduce(into: [Int: (call: Placement?, code: String?)]()) { $0[$1.0] = $1.1 }
            }
            // A route that missed its deadline on this loaded machine (`unavailable`) is asked again, as its caller would.
            for _ in 0..<3 {
                for (i, result) in results where result.code == "unavailable" { results[i] = try await attempt(i) }
            }
            let placed = results.values.compactMap(\.call)
            #expect(results.values.allSatisfy { $0.call != nil || $0.code == "no_capacity" }, "\(results.values.map { $0.code ?? "placed" })")
            #expect(placed.count == 15, "every slot used once, the rest refused")
            #expect(Set(placed.map(\.callID)).count == placed.count)
            try await eventually("every placed call started on its worker") {
                var n = 0
                for worker in cluster.workers { n += try await cluster.workerCalls(worker.id).count }
                return n == placed.count
            }
            var total = 0
            var seen: Set<String> = []
            for worker in cluster.workers {
                let calls = try await cluster.workerCalls(worker.id)
                #expect(calls.count <= 5)
                #expect(worker.worker.activeCalls == calls.count)
                #expect(seen.isDisjoint(with: calls), "a call on two workers")
                seen.formUnion(calls)
                total += calls.count
            }
            #expect(total == 15 && seen == Set(placed.map(\.callID)))
            // Both routers did the work.
            let perRouter = cluster.routers.map { $0.router.metrics.value("switchboard_placements_total", ["result": "placed"]) ?? 0 }
            #expect(perRouter.allSatisfy { $0 > 0 }, "placements per router \(perRouter)")
        }
    }

    @Test func statusAndMetricsShowTheFleet() async throws {
        try await withTestCluster { cluster in
            try await cluster.addRouter()
            try await cluster.addWorker(capacity: 3)
            try await cluster.addWorker(capacity: 2, region: "eu")
            try await cluster.waitForWorkers(2)
            _ = try #require(try await cluster.routeByNATS(RouteRequest(tenant: "t", region: "eu")).call)
            try await eventually("heartbeat shows the call") {
                cluster.routers[0].router.workers().contains { $0.heartbeat.region == "eu" && $0.heartbeat.activeCalls == 1 }
            }
            let (status, body) = try await cluster.http("GET", "/v1/workers")
            #expect(status == 200)
            let view = try JSONSerialization.jsonObject(with: body) as! [String: Any]
            let workers = view["workers"] as! [[String: Any]]
            #expect(workers.count == 2)
            #expect(workers.allSatisfy { $0["cpu"] != nil && $0["memory_used_bytes"] != nil && $0["free_slots"] != nil })
            let totals = view["totals"] as! [String: Int]
            #expect(totals["capacity"] == 5 && totals["active_calls"] == 1 && totals["free_slots"] == 4)

            let (_, metricsBody) = try await cluster.http("GET", "/metrics")
            let metrics = String(decoding: metricsBody, as: UTF8.self)
            for line in ["switchboard_placements_total{result=\"placed\"} 1", "switchboard_workers{state=\"ready\"} 2",
                         "switchboard_active_calls 1", "switchboard_placement_duration_seconds_count 1"] {
                #expect(metrics.contains(line), "metrics lack \(line)")
            }
            #expect(try await cluster.http("GET", "/healthz").status == 200)
            #expect(try await cluster.http("GET", "/readyz").status == 200)
        }
    }
}

@Suite("GPU in placement")
struct GPUPlacementTests {
    @Test func workersReportTheirGPUAndCallsGoWhereItIsFreeAsExplainShows() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbgpu-\(Identifiers.random(bytes: 4))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let busyFile = dir.appendingPathComponent("busy.json"), idleFile = dir.appendingPathComponent("idle.csv")
        try #"{"utilization": 0.95, "memory_used_bytes": 1073741824, "memory_total_bytes": 17179869184}"#.write(to: busyFile, atomically: true, encoding: .utf8)
        try "5, 1024, 16384\n".write(to: idleFile, atomically: true, encoding: .utf8)  // nvidia-smi's csv,noheader,nounits
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter()
            try await cluster.addWorker(id: "busy-gpu", capacity: 8) { $0.gpuSource = .file(busyFile.path) }
            try await cluster.addWorker(id: "idle-gpu", capacity: 8) { $0.gpuSource = .file(idleFile.path) }
            try await cluster.waitForWorkers(2)
            try await eventually(timeout: .seconds(10), "heartbeats carry both GPUs") {
                router.router.workers().filter { $0.heartbeat.gpu != nil }.count == 2
            }
            let reply = try await cluster.routeByNATS(RouteRequest(tenant: "t", explain: true))
            let call = try #require(reply.call)
            #expect(call.workerID == "idle-gpu")
            let explanation = try #require(call.explain)
            let busy = try #require(explanation.candidates.first { $0.workerID == "busy-gpu" })
            let idle = try #require(explanation.candidates.first { $0.workerID == "idle-gpu" })
            #expect(busy.load.gpu == 0.95 && idle.load.gpu == 0.0625)  // memory 1024/16384 is busier than 5%
            #expect(idle.score.gpu > busy.score.gpu && busy.score.penalty > 0)
        }
    }
}
