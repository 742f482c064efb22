import Foundation

/// Where a worker reads its GPU's load (`--gpu-source`), and how a reading is parsed.
public enum GPUSource: Sendable, Equatable {
    /// No GPU in the load score.
    case none
    /// NVIDIA's NVML, loaded at run time (`libnvidia-ml.so.1`): no link-time dependency, nothing when absent.
    case nvml
    /// A file someone keeps up to date (a device plugin's exporter, a test's fake), read each heartbeat.
    case file(String)
    /// A command run each heartbeat interval, e.g.
    /// `nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits`.
    case command(String)

    /// `none`, `nvml`, `file:PATH` or `command:CMD`.
    public init(parsing text: String) throws(SwitchboardError) {
        switch text {
        case "none", "": self = .none
        case "nvml": self = .nvml
        case _ where text.hasPrefix("file:") && text.count > 5: self = .file(String(text.dropFirst(5)))
        case _ where text.hasPrefix("command:") && text.count > 8: self = .command(String(text.dropFirst(8)))
        default: throw SwitchboardError(.invalidArgument, "gpu source must be none, nvml, file:PATH or command:CMD, not '\(text.prefix(64))'")
        }
    }
}

/// Reads a GPU load from what a file or a command says: either a JSON object
/// `{"utilization": 0.42, "memory_used_bytes": 1073741824, "memory_total_bytes": 17179869184}` (utilization 0...1),
/// or nvidia-smi's CSV, one line per GPU: `utilization %, memory used MiB, memory total MiB` (the GPUs are summed:
/// utilisation averaged, memory added). Nil for anything else, or numbers out of range.
public enum GPUReading {
    public static func parse(_ text: String) -> Heartbeat.GPULoad? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, trimmed.utf8.count <= 64 * 1024 else { return nil }
        if trimmed.hasPrefix("{") { return json(trimmed) }
        var utilization = 0.0, used: Int64 = 0, total: Int64 = 0, gpus = 0
        for line in trimmed.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3, let percent = Double(fields[0]), (0...100).contains(percent),
                  let usedMiB = Int64(fields[1]), let totalMiB = Int64(fields[2]),
                  (0...(1 << 30)).contains(usedMiB), (0...(1 << 30)).contains(totalMiB) else { return nil }
            utilization += percent / 100
            used += usedMiB << 20
            total += totalMiB << 20
            gpus += 1
        }
        guard gpus > 0 else { return nil }
        return Heartbeat.GPULoad(utilization: utilization / Double(gpus), memoryUsedBytes: used, memoryTotalBytes: total)
    }

    private static func json(_ text: String) -> Heartbeat.GPULoad? {
        var utilization: Double?, used: Int64?, total: Int64?
        let flat = FlatJSON.visit(Array(text.utf8)) { key, value in
            switch String(decoding: key, as: UTF8.self) {
            case "utilization": utilization = value.double
            case "memory_used_bytes": used = value.integer()
            case "memory_total_bytes": total = value.integer()
            default: break
            }
        }
        guard flat, let utilization, utilization.isFinite, (0...1).contains(utilization), let used, let total, used >= 0, total >= 0
        else { return nil }
        return Heartbeat.GPULoad(utilization: utilization, memoryUsedBytes: used, memoryTotalBytes: total)
    }
}
