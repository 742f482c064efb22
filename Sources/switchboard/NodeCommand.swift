import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardRouter

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "List, drain and undrain workers (operator commands; the admin key with tenancy on).",
        subcommands: [List.self, Drain.self, Undrain.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the workers: state, calls, drain progress.")
        @OptionGroup var router: RouterAddress

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.get("/v1/workers")
                let view = try JSONDecoder().decode(WorkersView.self, from: data)
                var rows = [["WORKER", "VERSION", "REGION/ZONE", "STATE", "CALLS", "DRAIN"]]
                let now = WallClock.system.unixMillis
                for w in view.workers {
                    let drain = w.drain.map { d in "\(drainProgress(w, nowMillis: now).trimmingCharacters(in: CharacterSet(charactersIn: " ()"))), by \(d.requestedBy)" } ?? "-"
                    rows.append([w.id, w.version, "\(w.region)/\(w.zone)", w.liveness == "alive" ? w.state : "\(w.state) (\(w.liveness))",
                                 "\(w.activeCalls)/\(w.capacity)", drain])
                }
                return (data, formatTable(rows))
            }
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drain a worker: no new calls from when this returns; its calls go on; it exits when the last ends.",
            discussion: "At the deadline, calls still running are moved to other workers (migrate, the default) or ended (end).")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Worker id.") var id: String
        @Option(parsing: .unconditional, help: "Time the calls have to end by themselves: e.g. 90s, 30m, 1h, or seconds.")
        var deadline: String = "1h"
        @Option(name: .customLong("at-deadline"), help: "What happens then to calls still running: migrate or end.")
        var atDeadline: AtDeadline = .migrate

        func run() async throws {
            let seconds = try parseDuration(deadline)
            try await cli(router.output) {
                let data = try await router.client.post("/v1/workers/\(id)/drain",
                                                        json: DrainBody(deadlineSeconds: seconds, atDeadline: atDeadline))
                let r = try JSONDecoder().decode(DrainResult.self, from: data)
                let calls = r.activeCalls.map { "\($0) calls left" } ?? "calls unknown"
                return (data, "worker \(r.workerID) draining: no new calls; \(calls); at the deadline (\(formatSeconds(seconds))) they \(atDeadline == .migrate ? "move to other workers" : "end")"
                    + (r.confirmed ? "" : "\n(the worker did not confirm: it applies the drain from Redis when it reconnects)"))
            }
        }
    }

    struct Undrain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a worker's drain: it takes new calls again.")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Worker id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.post("/v1/workers/\(id)/undrain")
                let r = try JSONDecoder().decode(DrainResult.self, from: data)
                return (data, "worker \(r.workerID) takes calls again" + (r.confirmed ? "" : " (not confirmed by the worker yet)"))
            }
        }
    }
}

extension AtDeadline: ExpressibleByArgument {}

/// `90`, `90s`, `30m`, `1h`, `1h30m` as seconds; a negative or malformed one is a usage error naming `what`.
func parseDuration(_ text: String, _ what: String = "deadline") throws -> Double {
    let malformed = ValidationError("\(what) must look like 90s, 30m, 1h or 1h30m, got '\(text)'")
    if let seconds = Double(text) {
        guard seconds >= 0 else { throw ValidationError("\(what) must not be negative, got '\(text)'") }
        return seconds
    }
    var total = 0.0, number = ""
    for c in text {
        if c.isNumber || c == "." {
            number.append(c)
            continue
        }
        let unit: Double
        switch c {
        case "h": unit = 3600
        case "m": unit = 60
        case "s": unit = 1
        default: throw malformed
        }
        guard let value = Double(number) else { throw malformed }
        total += value * unit
        number = ""
    }
    guard number.isEmpty, !text.isEmpty else { throw malformed }
    return total
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "List operator actions (drain, undrain, migrate), newest first: who, what, when, outcome.")
    @OptionGroup var router: RouterAddress
    @Option(help: "Entries shown at most.") var limit: Int = 50

    func run() async throws {
        try await cli(router.output) {
            let data = try await router.client.get("/v1/audit?limit=\(limit)")
            let entries = try JSONDecoder().decode(AuditEntries.self, from: data).entries
            let formatter = ISO8601DateFormatter()
            var rows = [["WHEN", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"]]
            for e in entries {
                rows.append([formatter.string(from: Date(timeIntervalSince1970: Double(e.atMillis) / 1000)), e.actor, e.action, e.target,
                             e.outcome, e.detail])
            }
            return (data, entries.isEmpty ? "no operator actions recorded" : formatTable(rows))
        }
    }
}
