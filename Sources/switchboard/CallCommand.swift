import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardOpus

struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Route, show and end calls through a router's HTTP API.",
        subcommands: [Route.self, Show.self, List.self, End.self, Migrate.self, Recording.self, DeleteRecording.self])

    struct Route: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask a router to place a call; print where it landed.")
        @OptionGroup var router: RouterAddress
        @Option(help: "Tenant the call belongs to.")
        var tenant: String = Settings.string("tenant", "demo")
        @Option(help: "The caller's region.")
        var region: String?
        @Option(help: "The caller's zone (needs --region).")
        var zone: String?
        @Option(help: "required: only workers in the region (and zone); preferred: there first, else anywhere.")
        var locality: Locality = .required
        @Option(name: .customLong("metadata"), help: "key=value metadata for the handler (repeatable).")
        var metadata: [String] = []
        @Flag(help: "Show the scheduler's reasoning: candidates with their scores, and why other workers were left out.")
        var explain = false

        func run() async throws {
            var meta: [String: String] = [:]
            for item in metadata {
                guard let eq = item.firstIndex(of: "=") else { throw ValidationError("metadata must be key=value, got '\(item)'") }
                meta[String(item[..<eq])] = String(item[item.index(after: eq)...])
            }
            try await cli(router.output) {
                let data = try await router.client
                    .post("/v1/calls", json: RouteRequest(tenant: tenant, region: region, zone: zone, locality: locality,
                                                          metadata: meta, explain: explain))
                let p = try JSONDecoder().decode(Placement.self, from: data)
                var text = "call \(p.callID) on worker \(p.workerID) (version \(p.version), region \(p.region))\n  audio in:  \(p.media.in)\n  audio out: \(p.media.out)"
                if let explanation = p.explain { text += "\n" + describe(explanation) }
                return (data, text)
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a call's record.")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Call id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.get("/v1/calls/\(id)")
                return (data, describe(try JSONDecoder().decode(CallRecord.self, from: data)))
            }
        }
    }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a live call to another worker (make before break; needs the admin key with tenancy on).")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Call id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.post("/v1/calls/\(id)/migrate")
                let m = try JSONDecoder().decode(Migration.self, from: data)
                return (data, "call \(m.callID) moved from \(m.fromWorker) to \(m.toWorker); audio paused \(String(format: "%.1f", m.pauseMillis)) ms")
            }
        }
    }

    struct End: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a call.")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Call id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.delete("/v1/calls/\(id)")
                return (data, describe(try JSONDecoder().decode(CallRecord.self, from: data)))
            }
        }
    }
}

extension CallCommand {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List calls, newest first: by tenant, time (placed), end reason, worker, version, state.")
        @OptionGroup var router: RouterAddress
        @Option(help: "Only this tenant's (a tenant's key lists its own alone).") var tenant: String?
        @Option(help: "Placed at or after: Unix ms or RFC 3339 (default: 24 h before --until).") var since: String?
        @Option(help: "Placed at or before: Unix ms or RFC 3339 (default: now).") var until: String?
        @Option(name: .customLong("end-reason"), help: "Only calls that ended so (caller, worker_lost, ...).") var endReason: String?
        @Option(help: "Only calls on this worker (the last one).") var worker: String?
        @Option(help: "Only calls on this version.") var version: String?
        @Option(help: "placed, active or ended.") var state: String?
        @Option(help: "Calls at most (1-200 a page; more pages are fetched up to this).") var limit = 50

        func run() async throws {
            var q = URLComponents()
            let filters = [("tenant", tenant), ("since", since), ("until", until), ("end_reason", endReason), ("worker", worker),
                           ("version", version), ("state", state)]
            try await cli(router.output) {
                var calls: [CallListEntry] = []
                var cursor: String?
                var data = Data()
                repeat {
                    q.queryItems = filters.compactMap { name, value in value.map { URLQueryItem(name: name, value: $0) } }
                        + [URLQueryItem(name: "limit", value: String(min(200, max(1, limit - calls.count))))]
                        + (cursor.map { [URLQueryItem(name: "cursor", value: $0)] } ?? [])
                    data = try await router.client.get("/v1/calls?\(q.percentEncodedQuery ?? "")")
                    let page = try JSONDecoder().decode(CallList.self, from: data)
                    calls += page.calls
                    cursor = page.next
                } while cursor != nil && calls.count < limit
                let json = WireCodec.encode(CallList(calls: calls, next: cursor, examined: 0))
                return (Data(json), describe(calls) + (cursor == nil ? "" : "\n(more: raise --limit or narrow the search)"))
            }
        }

        func describe(_ calls: [CallListEntry]) -> String {
            var rows = [["PLACED (UTC)", "CALL", "TENANT", "STATE", "WORKER", "VERSION", "END"]]
            let formatter = ISO8601DateFormatter()
            for c in calls {
                let r = c.record
                rows.append([formatter.string(from: Date(timeIntervalSince1970: Double(c.placedAtMillis) / 1000)), c.callID, c.tenant,
                             r.map(\.state.rawValue) ?? "expired", r?.workerID ?? "", r?.version ?? "", r?.endReason ?? ""])
            }
            return formatTable(rows)
        }
    }

    struct Recording: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save a call's recording (two-channel Ogg Opus: the caller left, the agent right) to a file.")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Call id.") var id: String
        @Option(name: .shortAndLong, help: "The file to write (default: <call id>.opus).") var file: String?
        @Flag(help: "Also say how each channel sounds: how much is loud, and its longest silence inside the talk.")
        var stats = false

        func run() async throws {
            let path = file ?? "\(id).opus"
            try await cli(router.output) {
                let infoData = try await router.client.get("/v1/calls/\(id)/recording/info")
                let info = try JSONDecoder().decode(RecordingInfoView.self, from: infoData)
                let audio = try await router.client.get("/v1/calls/\(id)/recording")
                try audio.write(to: URL(fileURLWithPath: path))
                let seconds = String(format: "%.1f", Double(info.durationMillis) / 1000)
                var text = "wrote \(path): \(seconds) s, \(audio.count) bytes\(info.complete ? "" : " (still being recorded)")"
                if stats {
                    let channels = try OggOpusFile(Array(audio)).channelFrames(sampleRate: info.sampleRate)
                    for (name, frames) in zip(["caller", "agent"], channels) {
                        let s = ChannelSummary(frames)
                        text += String(format: "\n  %@: loud %.0f%% of the frames; longest silence inside the talk %d ms at %.1f s", name,
                                       Double(s.loudFrames) / Double(max(1, s.frames)) * 100, s.longestGapMillis, Double(s.longestGapAtMillis) / 1000)
                    }
                }
                return (infoData, text)
            }
        }
    }

    struct DeleteRecording: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete-recording", abstract: "Delete a call's recording (audited).")
        @OptionGroup var router: RouterAddress
        @Argument(help: "Call id.") var id: String

        func run() async throws {
            try await cli(router.output) {
                let data = try await router.client.delete("/v1/calls/\(id)/recording")
                let gone = try JSONDecoder().decode(RecordingsDeletedView.self, from: data)
                return (data, "deleted the recording of \(id) (\(gone.bytes) bytes)")
            }
        }
    }
}

/// What the recording endpoints answer, as the CLI reads them.
struct RecordingsDeletedView: Decodable {
    var tenant: String
    var calls: [String]
    var bytes: Int64
}

struct RecordingInfoView: Decodable {
    var durationMillis: Int64
    var sampleRate: Int
    var complete: Bool
    enum CodingKeys: String, CodingKey { case durationMillis = "duration_ms", sampleRate = "sample_rate", complete }
}

extension Locality: ExpressibleByArgument {}

/// The scheduler's reasoning as a table: the workers it scored, then counts of those it left out and why.
func describe(_ e: Scheduler.Explanation) -> String {
    var rows = [["CANDIDATE", "REGION/ZONE", "CPU", "MEM", "FILL", "GPU", "SCORE", "= cpu + mem + slots + locality + gpu - penalty"]]
    for c in e.candidates {
        let s = c.score
        rows.append([c.workerID + (c.workerID == e.chosen ? " *" : ""), "\(c.region)/\(c.zone)",
                     String(format: "%.0f%%", c.load.cpu * 100), String(format: "%.0f%%", c.load.memory * 100),
                     String(format: "%.0f%%", c.load.fill * 100), c.load.gpu.map { String(format: "%.0f%%", $0 * 100) } ?? "-",
                     String(format: "%.3f", s.total),
                     String(format: "%.3f + %.3f + %.3f + %.3f + %.3f - %.3f", s.cpu, s.memory, s.slots, s.locality, s.gpu, s.penalty)])
    }
    let left = e.filtered.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    return "scheduler (\(e.strategy.rawValue)): \(e.workers) workers, \(e.eligible) eligible"
        + (left.isEmpty ? "" : "; left out: \(left)") + (e.candidates.isEmpty ? "" : "\n" + formatTable(rows))
}

func describe(_ r: CallRecord) -> String {
    var line = "call \(r.callID): \(r.state.rawValue), tenant \(r.tenant), worker \(r.workerID) (version \(r.version), region \(r.region))"
    if let reason = r.endReason { line += ", ended: \(reason)" }
    if r.moves > 0 { line += ", moved \(r.moves)x" }
    if let seq = r.checkpointSeq { line += ", checkpoint #\(seq)" }
    return line
}

/// Runs an operator command: prints the JSON body or the text, or one error line and a fitting exit code.
func cli(_ output: OutputFormat, _ body: () async throws -> (json: Data, text: String)) async throws {
    do {
        let (json, text) = try await body()
        print(output == .json ? String(decoding: json, as: UTF8.self) : text)
    } catch let error as SwitchboardError {
        throw ExitCodes.fail(error)
    }
}
