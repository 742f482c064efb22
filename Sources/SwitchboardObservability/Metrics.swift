import Foundation
import Synchronization

/// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text exposition
/// format for `/metrics`. Labels must stay low-cardinality (never a call id): see `MetricNames`.
///
/// One lock for the registry; an update is a dictionary write under it (nanoseconds), fine at our rates
/// (placements and heartbeats, not audio frames).
public final class MetricsRegistry: Sendable {
    public typealias Labels = [String: String]

    private struct Family {
        var help: String
        var kind: Kind
        var values: [Labels: Double] = [:]
        var histograms: [Labels: Histogram] = [:]
        var buckets: [Double] = []
    }

    private enum Kind: String { case counter, gauge, histogram }

    private struct Histogram {
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }

    private let families = Mutex<[String: Family]>([:])

    public init() {}

    /// Adds `by` to a counter.
    public func increment(_ name: String, _ labels: Labels = [:], by: Double = 1, help: String = "") {
        families.withLock { f in
            f[name, default: Family(help: help, kind: .counter)].values[labels, default: 0] += by
        }
    }

    /// Sets a gauge.
    public func set(_ name: String, _ labels: Labels = [:], to value: Double, help: String = "") {
        families.withLock { f in f[name, default: Family(help: help, kind: .gauge)].values[labels] = value }
    }

    /// Replaces every series of a gauge at once (e.g. workers by state, recomputed from the table).
    public func replaceGauge(_ name: String, _ series: [Labels: Double], help: String = "") {
        families.withLock { f in
            var family = f[name] ?? Family(help: help, kind: .gauge)
            family.values = series
            f[name] = family
        }
    }

    /// Records one observation in a histogram with the given upper bounds (seconds, for latencies).
    public func observe(_ name: String, _ labels: Labels = [:], _ value: Double, buckets: [Double], help: String = "") {
        families.withLock { f in
            var family = f[name] ?? Family(help: help, kind: .histogram, buckets: buckets)
            var h = family.histograms[labels] ?? Histogram(counts: Array(repeating: 0, count: family.buckets.count))
            if let i = family.buckets.firstIndex(where: { value <= $0 }) { h.counts[i] += 1 }
            h.sum += value
            h.count += 1
            family.histograms[labels] = h
            f[name] = family
        }
    }

    /// The current value of a counter or gauge series, for tests and status output.
    public func value(_ name: String, _ labels: Labels = [:]) -> Double? {
        families.withLock { $0[name]?.values[labels] }
    }

    /// Observations in a histogram series.
    public func observationCount(_ name: String, _ labels: Labels = [:]) -> UInt64 {
        families.withLock { $0[name]?.histograms[labels]?.count ?? 0 }
    }

    /// The registry in Prometheus text format 0.0.4.
    public func render() -> String {
        let snapshot = families.withLock { $0 }
        var out = ""
        for name in snapshot.keys.sorted() {
            let family = snapshot[name]!
            if !family.help.isEmpty { out += "# HELP \(name) \(family.help)\n" }
            out += "# TYPE \(name) \(family.kind.rawValue)\n"
            switch family.kind {
            case .counter, .gauge:
                for (labels, value) in family.values.sorted(by: { key($0.key) < key($1.key) }) {
                    out += "\(name)\(format(labels)) \(number(value))\n"
                }
            case .histogram:
                for (labels, h) in family.histograms.sorted(by: { key($0.key) < key($1.key) }) {
                    var cumulative: UInt64 = 0
                    for (i, bound) in family.buckets.enumerated() {
                        cumulative += h.counts[i]
                        out += "\(name)_bucket\(format(labels.merging(["le": number(bound)]) { $1 })) \(cumulative)\n"
                    }
                    out += "\(name)_bucket\(format(labels.merging(["le": "+Inf"]) { $1 })) \(h.count)\n"
                    out += "\(name)_sum\(format(labels)) \(number(h.sum))\n"
                    out += "\(name)_count\(format(labels)) \(h.count)\n"
                }
            }
        }
        return out
    }

    private func key(_ labels: Labels) -> String { format(labels) }

    private func format(_ labels: Labels) -> String {
        guard !labels.isEmpty else { return "" }
        let body = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(escape($0.value))\"" }.joined(separator: ",")
        return "{\(body)}"
    }

    private func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    private func number(_ value: Double) -> String {
        if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// Tenant ids as metric labels: each of the first `cap` tenants seen has its own, the rest share `other`, so a
/// cluster with many tenants cannot grow a metric family without bound.
public final class TenantLabels: Sendable {
    private let cap: Int
    private let labelled = Mutex<Set<String>>([])

    public init(cap: Int) { self.cap = cap }

    public func label(_ tenant: String) -> String {
        labelled.withLock { labelled in
            if labelled.contains(tenant) { return tenant }
            guard labelled.count < cap else { return "other" }
            labelled.insert(tenant)
            return tenant
        }
    }
}

extension MetricsRegistry {
    /// Call time metered for `tenant` (a label from `TenantLabels`).
    public func countMetered(tenant: String, millis: Int64) {
        guard millis > 0 else { return }
        increment(MetricNames.usageCallSeconds, ["tenant": tenant], by: Double(millis) / 1000,
                  help: "Call time metered per tenant, in seconds (sum over workers and routers)")
    }
}
