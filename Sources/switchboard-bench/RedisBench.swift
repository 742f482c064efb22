import CBenchBaseline
import Foundation
import Logging
import SwitchboardCore
import SwitchboardLocal
import SwitchboardRedis

/// Redis through our pool: sequential commands beside a plain C hiredis loop and `redis-benchmark -c 1 -P 1`,
/// and pipelined batches beside `redis-benchmark -P 100`, all in the same run.
struct RedisBench {
    var url: String
    var count: Int

    func run(into report: inout Report) async throws {
        let configuration = try RedisConfiguration(url: url)
        var quiet = Logger(label: "bench.redis")
        quiet.logLevel = .warning
        let redis = try RedisClient(configuration: configuration, logger: quiet)
        defer { redis.close() }
        let key = "bench:\(UInt32.random(in: 0...UInt32.max))"

        _ = try baseline(configuration, key: key, count: 500)
        for _ in 0..<500 { _ = try await redis.send(["SET", key, "value"]) }
        var cSamples: [Duration] = []
        var swiftSamples: [Duration] = []
        for _ in 0..<4 {
            cSamples += try baseline(configuration, key: key, count: count / 4)
            swiftSamples += try await timeEach(count / 4) { _ = try await redis.send(["SET", key, "value"]) }
        }
        let c = LatencySummary(cSamples)!
        let s = LatencySummary(swiftSamples)!
        report.add(Row(name: "Redis SET, plain C hiredis loop (baseline)", summary: c, throughput: 1e6 / c.mean.microseconds))
        if let rb = redisBenchmark(configuration, pipeline: 1) {
            report.add(Row(name: "Redis SET, redis-benchmark -c 1 -P 1", throughput: rb.rps,
                           note: String(format: "p50 %.1f µs (ms resolution)", rb.p50Micros)))
            report.add(Row(name: "Redis SET, Switchboard client", summary: s, throughput: 1e6 / s.mean.microseconds,
                           baseline: "redis-benchmark throughput", ratio: rb.rps / (1e6 / s.mean.microseconds),
                           note: String(format: "%.2fx C loop p50", s.p50.microseconds / c.p50.microseconds)))
        } else {
            report.add(Row(name: "Redis SET, Switchboard client", summary: s, throughput: 1e6 / s.mean.microseconds,
                           baseline: "C p50", ratio: s.p50.microseconds / c.p50.microseconds))
        }

        // Pipelined: batches of 100 in one round trip each.
        let batch = (0..<100).map { RedisCommand("SET", "\(key):\($0)", "value") }
        let batches = max(10, count / 100)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<batches { _ = try await redis.pipeline(batch) }
        let rate = Double(batches * 100) / ((clock.now - start).microseconds / 1e6)
        if let rb = redisBenchmark(configuration, pipeline: 100) {
            report.add(Row(name: "Redis SET pipelined x100, redis-benchmark -P 100", throughput: rb.rps))
            report.add(Row(name: "Redis SET pipelined x100, Switchboard client", throughput: rate,
                           baseline: "of redis-benchmark throughput", ratio: rate / rb.rps))
        } else {
            report.add(Row(name: "Redis SET pipelined x100, Switchboard client", throughput: rate))
        }
        _ = try await redis.send(["DEL", key])
    }

    private func baseline(_ configuration: RedisConfiguration, key: String, count: Int) throws -> [Duration] {
        var out = [Int64](repeating: 0, count: count)
        var error = [CChar](repeating: 0, count: 256)
        let rc = sb_baseline_redis_set(configuration.host, Int32(configuration.port), key, Int32(count), &out, &error, Int32(error.count))
        guard rc == 0 else {
            throw SwitchboardError(.internalError, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return nanos(out)
    }

    /// Runs redis-benchmark for SET if it is installed; nil otherwise.
    private func redisBenchmark(_ configuration: RedisConfiguration, pipeline: Int) -> (rps: Double, p50Micros: Double)? {
        guard let tool = LocalServer.findExecutable("redis-benchmark") else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        var args = ["-h", configuration.host, "-p", "\(configuration.port)", "-c", "1", "-P", "\(pipeline)",
                    "-n", "\(max(count, pipeline == 1 ? count : count * 10))", "-t", "set", "--csv"]
        if let password = configuration.password { args += ["-a", password] }
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        guard let row = lines.first(where: { $0.hasPrefix("\"SET\"") }) else { return nil }
        let fields = row.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        guard fields.count >= 5, let rps = Double(fields[1]), let p50 = Double(fields[4]) else { return nil }
        return (rps, p50 * 1000)
    }
}
