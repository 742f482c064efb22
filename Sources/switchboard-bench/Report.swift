import SwitchboardCore

/// One line of the benchmark report: a measured figure, optionally as a ratio to a baseline measured in the
/// same run.
struct Row {
    var name: String
    var summary: LatencySummary?
    var throughput: Double?  // operations per second
    var baseline: String?
    var ratio: Double?
    var note: String?
}

struct Report {
    var title: String
    var rows: [Row] = []

    mutating func add(_ row: Row) {
        rows.append(row)
        print(format(row))
    }

    func format(_ row: Row) -> String {
        var parts = [row.name.padding(toLength: 44, withPad: " ", startingAt: 0)]
        if let s = row.summary {
            parts.append("p50 \(us(s.p50))  p99 \(us(s.p99))  (n=\(s.count))")
        }
        if let t = row.throughput { parts.append("\(Int(t.rounded())) ops/s") }
        if let ratio = row.ratio, let base = row.baseline {
            parts.append(String(format: "= %.2fx %@", ratio, base))
        }
        if let note = row.note { parts.append(note) }
        return parts.joined(separator: "  ")
    }

    func us(_ d: Duration) -> String { String(format: "%7.1f µs", d.microseconds) }

    /// The report as a Markdown table, for docs/benchmarks.md.
    func markdown() -> String {
        var lines = ["| measure | p50 | p99 | throughput | vs baseline (same run) |", "| --- | --- | --- | --- | --- |"]
        for r in rows {
            let p50 = r.summary.map { String(format: "%.1f µs", $0.p50.microseconds) } ?? ""
            let p99 = r.summary.map { String(format: "%.1f µs", $0.p99.microseconds) } ?? ""
            let t = r.throughput.map { "\(Int($0.rounded())) ops/s" } ?? ""
            var vs = ""
            if let ratio = r.ratio, let base = r.baseline { vs = String(format: "%.2fx %@", ratio, base) }
            if let note = r.note { vs += vs.isEmpty ? note : " (\(note))" }
            lines.append("| \(r.name) | \(p50) | \(p99) | \(t) | \(vs) |")
        }
        return lines.joined(separator: "\n")
    }
}

func nanos(_ values: [Int64]) -> [Duration] { values.map { Duration.nanoseconds($0) } }

/// Times `count` runs of `body`, one after another.
func timeEach(_ count: Int, _ body: () async throws -> Void) async rethrows -> [Duration] {
    let clock = ContinuousClock()
    var samples: [Duration] = []
    samples.reserveCapacity(count)
    for _ in 0..<count {
        let start = clock.now
        try await body()
        samples.append(clock.now - start)
    }
    return samples
}
