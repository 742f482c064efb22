import ArgumentParser
import Foundation
import SwitchboardCore

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the workers a router sees: version, state, load and calls, and totals.")
    @OptionGroup var router: RouterAddress

    struct Workers: Decodable {
        struct Worker: Decodable {
            var id, version, region, zone, state: String
            var capacity, active_calls, free_slots, last_heartbeat_age_ms: Int
            var cpu: Double
            var memory_used_bytes: Int64
        }
        var workers: [Worker]
        var totals: [String: Int]
    }

    func run() async throws {
        try await cli(router.output) {
            let data = try await APIClient(base: router.routerURL).get("/v1/workers")
            let view = try JSONDecoder().decode(Workers.self, from: data)
            return (data, table(view))
        }
    }

    func table(_ view: Workers) -> String {
        var rows = [["WORKER", "VERSION", "REGION/ZONE", "STATE", "CALLS", "FREE", "CPU", "MEM", "SEEN"]]
        for w in view.workers {
            rows.append([w.id, w.version, "\(w.region)/\(w.zone)", w.state, "\(w.active_calls)/\(w.capacity)", "\(w.free_slots)",
                         String(format: "%.0f%%", w.cpu * 100), "\(w.memory_used_bytes / 1_048_576) MiB",
                         String(format: "%.1fs ago", Double(w.last_heartbeat_age_ms) / 1000)])
        }
        var text = formatTable(rows)
        let t = view.totals
        text += "\n\(t["workers"] ?? 0) workers (\(t["ready"] ?? 0) ready), \(t["active_calls"] ?? 0) calls, \(t["free_slots"] ?? 0) free slots of \(t["capacity"] ?? 0)"
        return text
    }
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
