import Foundation
import SwitchboardCore

/// Samples this process's CPU and memory use for heartbeats: of the cgroup v2 limits when the worker runs
/// under them (a container with a CPU quota or memory limit), else of the machine.
struct LoadSampler {
    struct Sample: Equatable {
        var cpu: Double
        var memoryUsed: Int64
        var memoryLimit: Int64
    }

    private let cgroup = "/sys/fs/cgroup"
    private var lastCPU: (busy: Double, total: Double)?

    /// CPU use since the previous call, as a fraction of what may be used (0...1).
    mutating func sample() -> Sample {
        let memory = memoryUse()
        return Sample(cpu: cpuUse(), memoryUsed: memory.used, memoryLimit: memory.limit)
    }

    private mutating func cpuUse() -> Double {
        // Under a cgroup CPU quota: usage of the cgroup over wall time times the cores allowed.
        if let limit = read("\(cgroup)/cpu.max").flatMap(ResourceParsing.cgroupCPULimit),
           let usage = read("\(cgroup)/cpu.stat").flatMap(ResourceParsing.cgroupCPUUsageMicros) {
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1000
            return fraction(busy: Double(usage), total: now * limit)
        }
        // Otherwise the machine as a whole (/proc/stat), which is what a process sharing it competes for.
        guard let stat = read("/proc/stat").flatMap(ResourceParsing.procStatCPU) else { return 0 }
        return fraction(busy: Double(stat.busy), total: Double(stat.total))
    }

    private mutating func fraction(busy: Double, total: Double) -> Double {
        defer { lastCPU = (busy, total) }
        guard let last = lastCPU, total > last.total else { return 0 }
        return min(1, max(0, (busy - last.busy) / (total - last.total)))
    }

    private func memoryUse() -> (used: Int64, limit: Int64) {
        let rss = read("/proc/self/status").flatMap { ResourceParsing.kilobytesField("VmRSS", in: $0) } ?? 0
        let machine = read("/proc/meminfo").flatMap { ResourceParsing.kilobytesField("MemTotal", in: $0) } ?? 0
        if let limit = read("\(cgroup)/memory.max").flatMap(ResourceParsing.cgroupBytes),
           let used = read("\(cgroup)/memory.current").flatMap(ResourceParsing.cgroupBytes) {
            return (used, limit)
        }
        return (rss, machine)
    }

    private func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}
