/// Percentiles of a set of latency samples (nearest-rank), for benchmarks and the live cluster table.
public struct LatencySummary: Sendable, Equatable {
    public let count: Int
    public let p50: Duration
    public let p90: Duration
    public let p99: Duration
    public let max: Duration
    public let mean: Duration

    /// Summarises `samples`; nil when there are none.
    public init?(_ samples: [Duration]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.rank(0.50, sorted)
        p90 = Self.rank(0.90, sorted)
        p99 = Self.rank(0.99, sorted)
        max = sorted[sorted.count - 1]
        mean = sorted.reduce(Duration.zero, +) / sorted.count
    }

    /// Nearest-rank percentile: the smallest sample with at least `q` of the samples at or below it.
    public static func rank(_ q: Double, _ sorted: [Duration]) -> Duration {
        let index = Swift.max(0, Swift.min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1))
        return sorted[index]
    }
}

extension Duration {
    /// The duration in microseconds, as a Double, for reports.
    public var microseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1e6 + Double(attoseconds) / 1e12
    }

    /// Whole milliseconds (rounded down), as nats.c, hiredis, Redis scripts and HTTP headers take them.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
