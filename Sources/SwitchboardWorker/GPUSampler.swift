import CSwitchboardSys
import Foundation
import Logging
import SwitchboardCore

/// Reads the worker's GPU load from its `GPUSource`, for heartbeats (the scheduler weighs free GPU like free CPU).
struct GPUSampler: Sendable {
    let source: GPUSource

    /// The GPU's load now; nil when there is none or it cannot be read.
    func sample() async -> Heartbeat.GPULoad? {
        switch source {
        case .none:
            return nil
        case .nvml:
            var reading = sb_gpu_sample()
            guard sb_nvml_sample(&reading) == 0 else { return nil }
            return Heartbeat.GPULoad(utilization: min(1, Double(reading.utilization_percent) / 100),
                                     memoryUsedBytes: Int64(clamping: reading.memory_used),
                                     memoryTotalBytes: Int64(clamping: reading.memory_total))
        case .file(let path):
            return (try? String(contentsOfFile: path, encoding: .utf8)).flatMap(GPUReading.parse)
        case .command(let command):
            return await Self.run(command, timeout: .seconds(2)).flatMap(GPUReading.parse)
        }
    }

    /// `command`'s output (through `/bin/sh -c`), nil if it fails or takes longer than `timeout` (then it is killed).
    private static func run(_ command: String, timeout: Duration) async -> String? {
        await withCheckedContinuation { continuation in
            // A thread of the global pool, not the cooperative one: the wait blocks.
            DispatchQueue.global().async {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/sh")
                process.arguments = ["-c", command]
                let output = Pipe()
                process.standardOutput = output
                process.standardError = FileHandle.nullDevice
                process.standardInput = FileHandle.nullDevice
                do { try process.run() } catch {
                    continuation.resume(returning: nil)
                    return
                }
                let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(timeout.milliseconds)), execute: killer)
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                killer.cancel()
                guard process.terminationReason == .exit, process.terminationStatus == 0, data.count <= 64 * 1024 else {
                    continuation.resume(returning: nil)
                    return
                }
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }
        }
    }
}
