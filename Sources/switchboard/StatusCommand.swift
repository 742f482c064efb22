import ArgumentParser
import Foundation
import SwitchboardCore

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the workers a router sees: version, state, load and calls, and totals.")
    @OptionGroup var router: RouterAddress

    func run() async throws {
        try await cli(router.output) {
            let data = try await router.client.get("/v1/workers")
            let view = try JSONDecoder().decode(WorkersView.self, from: data)
            return (data, table(view, nowMillis: WallClock.system.unixMillis))
        }
    }

    func table(_ view: WorkersView, nowMillis: Int64) -> String {
        var rows = [["WORKER", "VERSION", "REGION/ZONE", "STATE", "CALLS", "RESERVED", "FREE", "CPU", "MEM", "SCORE", "SEEN"]]
        for w in view.workers {
            let state = w.liveness == "alive" ? w.state + drainProgress(w, nowMillis: nowMillis) : "\(w.state) (\(w.liveness))"
            rows.append([w.id, w.version, "\(w.region)/\(w.zone)", state, "\(w.activeCalls)/\(w.capacity)", "\(w.reserved)",
                         "\(w.freeSlots)", String(format: "%.0f%%", w.cpu * 100),
                         String(format: "%d MiB (%.0f%%)", w.memoryUsedBytes / 1_048_576, w.load.memory * 100),
                         String(format: "%.2f", w.score.total), String(format: "%.1fs ago", Double(w.lastHeartbeatAgeMs) / 1000)])
        }
        var text = formatTable(rows)
        let t = view.totals
        text += "\n\(t["workers"] ?? 0) workers (\(t["ready"] ?? 0) ready, \(t["draining"] ?? 0) draining, \(t["suspect"] ?? 0) suspect, \(t["unreachable"] ?? 0) unreachable), \(t["active_calls"] ?? 0) calls, \(t["free_slots"] ?? 0) free slots of \(t["capacity"] ?? 0)"
        return text
    }
}

/// A drain's progress for the state column at `nowMillis` (Unix ms): time to its deadline and what happens then
/// (the calls left are in the CALLS column).
func drainProgress(_ w: WorkerView, nowMillis: Int64) -> String {
    guard let drain = w.drain else { return "" }
    let left = Double(drain.deadlineMillis - nowMillis) / 1000
    let when = left > 0 ? "\(formatSeconds(left)) to deadline" : "deadline passed"
    return " (\(when), then \(drain.atDeadline.rawValue))"
}

func formatSeconds(_ s: Double) -> String {
    if s >= 3600 { return String(format: "%.0fh%02.0fm", (s / 3600).rounded(.down), (s.truncatingRemainder(dividingBy: 3600) / 60).rounded(.down)) }
    if s >= 60 { return String(format: "%.0fm%02.0fs", (s / 60).rounded(.down), s.truncatingRemainder(dividingBy: 60).rounded(.down)) }
    return String(format: "%.0fs", s.rounded(.up))
}

/// Left-aligned columns, two spaces apart.
func formatTable(_ rows: [[String]]) -> String {
    guard let width = rows.map(\.count).max() else { return "" }
    let widths = (0..<width).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}
