@testable import SwitchboardCore
import Testing

@Suite struct GPUTests {
    let t0 = ContinuousClock.now
    static let gpu = Heartbeat.GPULoad(utilization: 0.3, memoryUsedBytes: 4 << 30, memoryTotalBytes: 16 << 30)

    @Test func aHeartbeatCarriesItsGPUOnlyWhenItHasOneAndBothDecodersAgree() throws {
        var withGPU = WireMessageTests.heartbeat
        withGPU.gpu = Self.gpu
        let text = String(decoding: withGPU.encoded(), as: UTF8.self)
        #expect(text.contains("\"gpu\":0.3") && text.contains("\"gpu_memory_total_bytes\":17179869184"))
        #expect(try Heartbeat.decode(withGPU.encoded()) == withGPU)  // the fast path
        #expect(Heartbeat(flat: withGPU.encoded()) == withGPU)
        #expect(!String(decoding: WireMessageTests.heartbeat.encoded(), as: UTF8.self).contains("gpu"))
        // Written another way (spaces): the full decoder reads it the same.
        let spaced = Array(text.replacingOccurrences(of: ",", with: ", ").utf8)
        #expect(try Heartbeat.decode(spaced) == withGPU)
        // Out of range, or half there: refused with a code.
        for bad in [text.replacingOccurrences(of: "\"gpu\":0.3", with: "\"gpu\":1.5"),
                    text.replacingOccurrences(of: ",\"gpu_memory_used_bytes\":4294967296", with: "")] {
            do { _ = try Heartbeat.decode(Array(bad.utf8)); Issue.record("taken: \(bad)") } catch { #expect(error.code == .badMessage) }
        }
    }

    @Test func readingsFromJSONOrNvidiaSmiAndNothingElse() {
        #expect(GPUReading.parse(#"{"utilization": 0.42, "memory_used_bytes": 1024, "memory_total_bytes": 4096}"#)
                == .init(utilization: 0.42, memoryUsedBytes: 1024, memoryTotalBytes: 4096))
        // Two GPUs as nvidia-smi --format=csv,noheader,nounits prints them: utilisation averaged, memory added.
        #expect(GPUReading.parse("40, 1000, 16000\n60, 3000, 16000\n") == .init(utilization: 0.5, memoryUsedBytes: 4000 << 20,
                                                                                memoryTotalBytes: 32000 << 20))
        for bad in ["", "garbage", "140, 1, 2", "40, 1", #"{"utilization": 2, "memory_used_bytes": 1, "memory_total_bytes": 1}"#,
                    #"{"utilization": 0.1}"#, "-1, 1, 2"] {
            #expect(GPUReading.parse(bad) == nil, "\(bad)")
        }
        #expect(Self.gpu.busy == 0.3)
        #expect(Heartbeat.GPULoad(utilization: 0.1, memoryUsedBytes: 9, memoryTotalBytes: 10).busy == 0.9)
    }

    @Test func sourcesParse() throws {
        #expect(try GPUSource(parsing: "none") == .none)
        #expect(try GPUSource(parsing: "nvml") == .nvml)
        #expect(try GPUSource(parsing: "file:/run/gpu.json") == .file("/run/gpu.json"))
        #expect(try GPUSource(parsing: "command:nvidia-smi -q") == .command("nvidia-smi -q"))
        #expect(throws: SwitchboardError.self) { try GPUSource(parsing: "cuda") }
        #expect(throws: SwitchboardError.self) { try GPUSource(parsing: "file:") }
    }

    @Test func freeGPUWeighsLikeFreeCPUAndWorkersWithoutOneAreScoredAsBefore() {
        var busy = beat("busy"), idle = beat("idle")
        busy.gpu = .init(utilization: 0.9, memoryUsedBytes: 0, memoryTotalBytes: 1)
        idle.gpu = .init(utilization: 0.1, memoryUsedBytes: 0, memoryTotalBytes: 1)
        var registry = WorkerRegistry()
        for b in [busy, idle] { registry.ingest(b, now: t0) }
        var scheduler = Scheduler(configuration: .init(choices: 16))
        var random = SeededRandom(seed: 1)
        let decision = scheduler.choose(.init(), in: registry, using: &random)
        #expect(decision.chosen?.workerID == "idle")
        let scores = Dictionary(uniqueKeysWithValues: decision.candidates.map { ($0.workerID, $0) })
        #expect(abs((scores["idle"]?.score.gpu ?? 0) - 0.9) < 1e-9 && abs((scores["busy"]?.score.gpu ?? 0) - 0.1) < 1e-9)
        #expect(scores["busy"]?.load.gpu == 0.9)
        // Past the ceiling, the GPU costs as CPU does.
        #expect((scores["busy"]?.score.penalty ?? 0) > 0 && scores["idle"]?.score.penalty == 0)
        // A worker with no GPU: no GPU part in its score, nothing else changed.
        let plain = beat("plain")
        registry.ingest(plain, now: t0)
        let entry = registry.entries["plain"]!
        #expect(scheduler.load(entry).gpu == nil && scheduler.score(entry, .init()).gpu == 0)
        #expect(scheduler.score(entry, .init()) == Scheduler(configuration: .init(weights: .init(gpu: 0))).score(entry, .init()))
    }
}
