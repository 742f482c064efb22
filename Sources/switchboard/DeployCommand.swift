import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardRouter
import SwitchboardRedis

struct DeployCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Deploy a version: new calls go to it (or to a canary share); workers of other versions finish their calls.",
        discussion: """
            deploy 1.5.0: every new call goes to 1.5.0; the version before stays warm for the rollback window, \
            then its workers drain.
            deploy 1.5.0 --canary 20: 20% of new calls go to 1.5.0, the rest to the active version.
            deploy promote, deploy abort: the canary becomes the active version, or is dropped.
            rollback: new calls go back to the previous active version at once.
            """,
        subcommands: [Apply.self, Status.self, Promote.self, Abort.self, History.self],
        defaultSubcommand: Apply.self)

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "apply", abstract: "Deploy a version (`switchboard deploy 1.5.0` is `switchboard deploy apply 1.5.0`).")
        @OptionGroup var router: RouterAddress
        @Argument(help: "The version to deploy.") var version: String
        @Option(help: "Send this share of new calls (0-100 percent) to the version, as a canary beside the active one.")
        var canary: Double?
        @Option(name: .customLong("canary-by"), help: "Split new calls per call (exact share) or per tenant (all of a tenant's calls on one version).")
        var canaryBy: DeployPolicy.CanaryKey?
        @Option(name: .customLong("rollback-window"), help: "How long versions this deploy makes outdated stay warm for a rollback: e.g. 30m.")
        var rollbackWindow: String?
        @Option(name: .customLong("drain-deadline"), help: "Then their workers drain: time their calls have to end by themselves, e.g. 1h.")
        var drainDeadline: String?
        @Option(name: .customLong("at-deadline"), help: "What happens then to calls still running: migrate or end.")
        var atDeadline: AtDeadline?
        @Flag(help: "Deploy even if no live worker runs the version yet (e.g. ahead of its pods).")
        var force = false
        @Option(help: "Refuse unless the policy is still at this revision.")
        var revision: Int64?

        func validate() throws {
            if let canary, !(canary.isFinite && (0...100).contains(canary)) {
                throw ValidationError("--canary must be 0 to 100 percent, got \(canary)")
            }
            if canaryBy != nil && canary == nil { throw ValidationError("--canary-by needs --canary") }
        }

        func run() async throws {
            let body = DeployBody(version: version, canaryPercent: canary, canaryBy: canaryBy,
                                  rollbackWindowSeconds: try rollbackWindow.map { try parseDuration($0, "rollback window") },
                                  drainDeadlineSeconds: try drainDeadline.map { try parseDuration($0, "drain deadline") },
                                  atDeadline: atDeadline, force: force ? true : nil, revision: revision)
            try await cli(router.output) {
                let data = try await router.client.put("/v1/deployment", json: body)
                let status = try JSONDecoder().decode(DeploymentStatus.self, from: data)
                let done = canary == nil ? "new calls go to \(version)" : "\(formatPercent(canary!)) of new calls go to \(version)"
                return (data, "revision \(status.policy.revision): \(done)\n\n" + describe(status))
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The deploy policy and, per version, its workers, calls and last minute of placements.")
        @OptionGroup var router: RouterAddress

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.get("/v1/deployment")
                return (data, describe(try JSONDecoder().decode(DeploymentStatus.self, from: data)))
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The canary becomes the active version: every new call goes to it.")
        @OptionGroup var change: ChangeOptions
        func run() async throws { try await action("promote", DeployActionBody(revision: change.revision), change.router) }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Drop the canary: every new call goes to the active version.")
        @OptionGroup var change: ChangeOptions
        func run() async throws { try await action("abort", DeployActionBody(revision: change.revision), change.router) }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The deploy policy's changes, newest first.")
        @OptionGroup var router: RouterAddress
        @Option(help: "Entries shown at most.") var limit: Int = 20

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.get("/v1/deployment/history?limit=\(limit)")
                let entries = try JSONDecoder().decode(DeployHistory.self, from: data).entries
                var rows = [["REVISION", "WHEN", "ACTION", "ACTIVE", "CANARY", "BY"]]
                for e in entries {
                    rows.append(["\(e.revision)", formatTime(e.atMillis), e.action, e.active,
                                 e.canary.map { "\($0) at \(formatPercent(e.canaryPercent ?? 0))" } ?? "-", e.actor])
                }
                return (data, entries.isEmpty ? "no deploys yet: every version takes new calls" : formatTable(rows))
            }
        }
    }
}

struct RollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback",
        abstract: "New calls go back to the previous active version at once (its workers were kept warm); no call is cut.",
        discussion: "During a canary, the canary is dropped: every new call goes to the active version.")
    @OptionGroup var change: ChangeOptions
    @Option(help: "Roll back to this version (one that was active before) rather than the previous one.") var to: String?
    @Flag(help: "Roll back even if no live worker runs that version any more.") var force = false

    func run() async throws {
        try await action("rollback", DeployActionBody(to: to, force: force ? true : nil, revision: change.revision), change.router)
    }
}

/// What every change of the policy takes: the router to ask, and the revision it must still be at.
struct ChangeOptions: ParsableArguments {
    @OptionGroup var router: RouterAddress
    @Option(help: "Refuse unless the policy is still at this revision.") var revision: Int64?
}

private func action(_ name: String, _ body: DeployActionBody, _ router: RouterAddress) async throws {
    try await cli(router.output) {
        let data = try await router.client.post("/v1/deployment/\(name)", json: body)
        let status = try JSONDecoder().decode(DeploymentStatus.self, from: data)
        return (data, "revision \(status.policy.revision): new calls go to \(status.policy.active ?? "?")\n\n" + describe(status))
    }
}

extension DeployPolicy.CanaryKey: ExpressibleByArgument {}

/// `deploy status` as text: the policy, then a row per version.
func describe(_ status: DeploymentStatus) -> String {
    let p = status.policy
    guard !p.isNone else { return "no deploys yet: every version takes new calls\n\n" + versionTable(status) }
    var head = "revision \(p.revision) · active \(p.active ?? "-")"
    if let c = p.canary { head += " · canary \(c.version) at \(formatPercent(c.percent)) (by \(c.by.rawValue))" }
    head += " · rollback window \(formatSeconds(Double(p.rollbackWindowMillis) / 1000))"
    head += "\nchanged \(formatTime(p.changedAtMillis)) by \(p.changedBy) (\(p.action?.rawValue ?? "deploy"))"
    if !p.previous.isEmpty { head += "; rollback goes to \(p.previous[0])" }
    return head + "\n\n" + versionTable(status)
}

private func versionTable(_ status: DeploymentStatus) -> String {
    var rows = [["VERSION", "ROLE", "READY", "OUTDATED", "DRAINING", "CALLS", "PLACED/1M", "FAILED/1M", "FALLBACK/1M", "DRAINS"]]
    for v in status.versions {
        let others = v.workers.filter { !["ready", "outdated", "draining"].contains($0.key) && $0.value > 0 }
        let draining = "\(v.workers["draining"] ?? 0)" + (others.isEmpty ? "" : " (+" + others.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ") + ")")
        let drains = v.drainsAtMillis.map { at in at > status.nowMillis ? "in \(formatSeconds(Double(at - status.nowMillis) / 1000))" : "now" } ?? "-"
        rows.append([v.version, v.role, "\(v.workers["ready"] ?? 0)", "\(v.workers["outdated"] ?? 0)", draining,
                     "\(v.activeCalls)/\(v.capacity)", "\(v.lastMinute["placed"] ?? 0)", "\(v.lastMinute["failed"] ?? 0)",
                     "\(v.lastMinute["fallback"] ?? 0)", drains])
    }
    return status.versions.isEmpty ? "no workers" : formatTable(rows)
}

func formatPercent(_ p: Double) -> String { p == p.rounded() ? String(format: "%.0f%%", p) : String(format: "%.2f%%", p) }

func formatTime(_ millis: Int64) -> String {
    ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
}
