import Foundation
import SwitchboardCore
import Synchronization

/// Samples CPU and memory use for heartbeats: of the cgroup v2 limits when the worker runs under them (a
/// container with a CPU quota or memory limit), else of the machine; or, with `CPUSource.process`, the CPU
/// of this process alone.
struct LoadSampler {
    struct Sample: Equatable {
        var cpu: Double
        var memoryUsed: Int64
        var memoryLimit: Int64
    }

    private let cgroup = "/sys/fs/cgroup"
    private let source: CPUSource
    private var lastCPU: (busy: Double, total: Double)?
    /// The worker's own child processes still running (its agents): with `CPUSource.process` their CPU and
    /// memory count as the worker's. (In a cgroup they are in the worker's already.)
    private let children: @Sendable () -> [Int32]
    private let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    init(source: CPUSource = .auto, children: @escaping @Sendable () -> [Int32] = { [] }) {
        self.source = source
        self.children = children
    }

    /// CPU use since the previous call, as a fraction of what may be used (0...1).
    mutating func sample() -> Sample {
        let memory = memoryUse()
        return Sample(cpu: cpuUse(), memoryUsed: memory.used, memoryLimit: memory.limit)
    }

    private mutating func cpuUse() -> Double {
        let quota = read("\(cgroup)/cpu.max").flatMap(ResourceParsing.cgroupCPULimit)
        if source == .process {
            // This process's user and system time, and its agents' (those reaped, and those running), over wall
            // time times the cores it may use.
            var busy = Self.rusageMicros(RUSAGE_SELF) + Self.rusageMicros(RUSAGE_CHILDREN)
            for pid in children() {
                if let ticks = read("/proc/\(pid)/stat").flatMap(ResourceParsing.procPidStatCPUTicks) { busy += Double(ticks) / ticksPerSecond * 1e6 }
            }
            let cores = quota ?? Double(ProcessInfo.processInfo.activeProcessorCount)
            return fraction(busy: busy, total: Double(DispatchTime.now().uptimeNanoseconds) / 1000 * cores)
        }
        // Under a cgroup CPU quota: usage of the cgroup over wall time times the cores allowed.
        if source == .auto, let limit = quota,
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

    private static func rusageMicros(_ who: __rusage_who) -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(who.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
    }

    private func memoryUse() -> (used: Int64, limit: Int64) {
        var rss = read("/proc/self/status").flatMap { ResourceParsing.kilobytesField("VmRSS", in: $0) } ?? 0
        for pid in children() { rss += read("/proc/\(pid)/status").flatMap { ResourceParsing.kilobytesField("VmRSS", in: $0) } ?? 0 }
        let machine = read("/proc/meminfo").flatMap { ResourceParsing.kilobytesField("MemTotal", in: $0) } ?? 0
        if let limit = read("\(cgroup)/memory.max").flatMap(ResourceParsing.cgroupBytes),
           let used = read("\(cgroup)/memory.current").flatMap(ResourceParsing.cgroupBytes) {
            return (used, limit)
        }
        return (rss, machine)
    }

    private func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}

/// Burns a share of one core on a thread of its own (busy, then asleep, in 10 ms periods), for load tests.
final class CPUBurner: Sendable {
    private let stopped = Atomic<Bool>(false)

    init(share: Double) {
        let busy = Duration.microseconds(Int64(share * 10_000)), period = Duration.milliseconds(10)
        let thread = Thread { [self] in
            let clock = ContinuousClock()
            while !stopped.load(ordering: .relaxed) {
                let start = clock.now
                while clock.now - start < busy {}
                Thread.sleep(forTimeInterval: Double((period - busy).components.attoseconds) / 1e18)
            }
        }
        thread.name = "switchboard.cpu-burner"
        thread.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }
}
