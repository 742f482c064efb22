import Foundation

/// Parsers for the Linux files a worker reads to report its load (cgroup v2 and /proc). Pure: text in,
/// numbers out; the worker does the reading.
public enum ResourceParsing {
    /// `cpu.max` ("200000 100000" or "max 100000") → cores allowed, nil when unlimited.
    public static func cgroupCPULimit(_ text: String) -> Double? {
        let parts = text.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, parts[0] != "max", let quota = Double(parts[0]), let period = Double(parts[1]), period > 0
        else { return nil }
        return quota / period
    }

    /// `cpu.stat` → `usage_usec` in microseconds.
    public static func cgroupCPUUsageMicros(_ text: String) -> UInt64? {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 && parts[0] == "usage_usec" { return UInt64(parts[1]) }
        }
        return nil
    }

    /// `memory.max` or `memory.current` → bytes, nil for "max".
    public static func cgroupBytes(_ text: String) -> Int64? {
        Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The `cpu` line of /proc/stat → (busy, total) jiffies.
    public static func procStatCPU(_ text: String) -> (busy: UInt64, total: UInt64)? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 4 else { return nil }
        let total = values.reduce(0, +)
        let idle = values[3] + (values.count > 4 ? values[4] : 0)  // idle + iowait
        return (total - idle, total)
    }

    /// A `Key:   12345 kB` line of /proc/meminfo or /proc/self/status → bytes.
    public static func kilobytesField(_ key: String, in text: String) -> Int64? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
        let parts = line.split(whereSeparator: \.isWhitespace)
        guard parts.count >= 2, let kb = Int64(parts[1]) else { return nil }
        return kb * 1024
    }

    /// /proc/<pid>/stat → the process's user plus system CPU time in clock ticks (fields 14 and 15, counted after
    /// the command name, which may itself hold spaces and parentheses).
    public static func procPidStatCPUTicks(_ text: String) -> UInt64? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After ")": state is field 3, so utime (14) and stime (15) are the 12th and 13th.
        guard fields.count >= 13, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        let (sum, overflow) = user.addingReportingOverflow(system)
        return overflow ? nil : sum
    }
}
