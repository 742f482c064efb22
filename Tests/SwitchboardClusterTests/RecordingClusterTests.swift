import Foundation
import SwitchboardCore
import SwitchboardGateway
import SwitchboardOpus
import SwitchboardRedis
import SwitchboardRouter
import SwitchboardTestSupport
import SwitchboardWorker
import Testing

/// A recording read back: its info, and each 20 ms slot's two channels.
struct ReadRecording {
    var info: RecordingInfo
    var left: [[Int16]]
    var right: [[Int16]]

    init(info: RecordingInfo, ogg: [UInt8]) throws {
        self.info = info
        let channels = try OggOpusFile(ogg).channelFrames(sampleRate: info.sampleRate)
        (left, right) = (channels[0], channels[1])
    }

    /// The slot `atMillis` (on the media clock) falls in.
    func slot(_ atMillis: Int64) -> Int { Int((atMillis - info.startedAtMillis) / RecordingInfo.frameMillis) }

    func power(_ frames: ArraySlice<[Int16]>, at frequency: Double) -> Double {
        SignalAnalysis.power(frames.flatMap { $0 }, at: frequency, sampleRate: info.sampleRate)
    }
}

@Suite("Recordings", .serialized)
struct RecordingClusterTests {
    static let caller = 1_000.0, agent = 660.0

    func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sb-recordings-\(Identifiers.random(bytes: 4))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A Twilio call with a tone agent, moved once mid-call: its recording holds the caller's tone on the left and
    /// the agent's on the right as the caller heard it, lines up with the call's timeline, and goes on after the
    /// move; it is served whole and in ranges only with the right key, and deleted by one call, audited. (The
    /// failover test finds a gap where the timeline puts it, to the frame.)
    @Test func aRecordedCallHoldsTheCallerLeftAndTheAgentRightAndLinesUpWithItsTimeline() async throws {
        let dir = try directory()
        try await withTestCluster { cluster in
            try await cluster.addRouter { config in
                config.recordCalls = true
                config.recordingsDirectory = dir
            }
            try await cluster.addWorker(id: "a", handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let gw = try await cluster.addGateway { $0.recording = RecordingOptions(directory: dir) }
            let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
            let twilio = try await FakeTwilio(port: gw.port, path: path)
            try await twilio.start(parameters: ["tone_hz": "\(Int(Self.agent))"])
            let speaking = Task { try await twilio.speak(seconds: 4, frequency: Self.caller) }
            try await eventually(timeout: .seconds(5), "placed") { !gw.gateway.liveCalls.isEmpty }
            let callID = gw.gateway.liveCalls[0]
            try await cluster.addWorker(id: "b", handler: ToneHandler())
            try await cluster.waitForWorkers(2)
            try await Task.sleep(for: .seconds(1.5))
            let moved = try await cluster.migrate(callID)
            #expect(moved.status == 200, "\(String(decoding: moved.body, as: UTF8.self))")
            try await speaking.value
            try await twilio.stop()

            var events: [TimelineEvent] = []
            try await eventually(timeout: .seconds(10), "the recording's end on the timeline") {
                let response = try await cluster.http("GET", "/v1/calls/\(callID)/timeline")
                guard response.status == 200 else { return false }
                events = try JSONDecoder().decode(Timeline.self, from: response.body).events
                return events.contains { $0.type == "recording_stopped" }
            }
            let admin = ["Authorization": "Bearer \(TestCluster.adminKey)"]
            let infoResponse = try await cluster.http("GET", "/v1/calls/\(callID)/recording/info", headers: admin)
            let info = try decodeJSON(RecordingInfo.self, infoResponse.body)
            #expect(info.complete && !info.capped && info.tenant == "acme" && info.sampleRate == 8_000 && info.bitrate >= 32_000)
            let audio = try await cluster.http("GET", "/v1/calls/\(callID)/recording", headers: admin)
            #expect(audio.status == 200 && Int64(audio.body.count) == info.bytes)
            let recording = try ReadRecording(info: info, ogg: Array(audio.body))
            #expect(Int64(recording.right.count) * 20 == info.durationMillis)

            // The caller's tone on the left and the agent's on the right: in the frames where each channel sounds, its
            // own tone a hundred times (20 dB) the other's at least. (The channels are coded apart, so nothing of one
            // reaches the other. Coded as one stereo stream, on a starved test machine that gapped the agent, the
            // caller's tone in the agent's channel was only 14 dB under the agent's own.)
            let spoken = recording.left.indices.filter { SignalAnalysis.rms(recording.left[$0]) > 1_000 }
            let heard = recording.right.indices.filter { SignalAnalysis.rms(recording.right[$0]) > 1_000 }
            // The caller's 4 s are all there (the gateway records what it is sent); the agent's side is what its playout
            // got out, which a starved test machine thins (88 frames of 200 in one loaded run): enough to judge by.
            #expect(spoken.count >= 100 && heard.count >= 40, "\(spoken.count) loud frames left, \(heard.count) right")
            let l = ArraySlice(spoken.map { recording.left[$0] }), r = ArraySlice(heard.map { recording.right[$0] })
            #expect(recording.power(l, at: Self.caller) > 100 * recording.power(l, at: Self.agent), "left")
            #expect(recording.power(r, at: Self.agent) > 100 * recording.power(r, at: Self.caller), "right")

            // The right channel is what the caller heard: the same sound energy as reached the caller, frame for
            // frame, wherever a starved test machine put gaps (each played frame in its own slot, once; a frame
            // missing or written twice would be 0.5% of a 4 s call's). The codec alone keeps the agent's tone 5-7%
            // quieter at 16 kbit/s a channel (less on a loaded machine: 1.5% in one run).
            func energy(_ frames: [[Int16]]) -> Double { frames.reduce(0) { $0 + pow(SignalAnalysis.rms($1), 2) } }
            let recorded = energy(recording.right), toCaller = energy(twilio.heard.map(\.samples))
            print("recording: the agent's channel holds \(heard.count) loud frames, the caller heard \(twilio.heard.filter { SignalAnalysis.rms($0.samples) > 1_000 }.count); energy \(Int(recorded)) recorded, \(Int(toCaller)) heard")
            #expect(abs(recorded - toCaller) <= 0.1 * toCaller, "energy recorded \(recorded), heard \(toCaller)")

            // Lined up with the timeline: the frame each channel's speech starts with, as the gateway saw it, is in
            // the recording's slot for that moment (the same frame, on the same clock), give or take the one
            // millisecond the two clocks' roundings may differ by. So the recording sounds there, and speech does not
            // start earlier in it, judged by the timeline's own detector (at 600, not 500: the codec may lift a frame
            // by a percent or so). It may start later in the recording: a stall's skipped ticks are silence there,
            // which the timeline's detector never sees, and it softens an onset's first frame by a fifth, so it
            // counts as sounding from 300.
            let gateway = events.filter { $0.source == .gateway }
            for (channel, frames) in [("caller", recording.left), ("agent", recording.right)] {
                let started = try #require(gateway.first { $0.type == "speech_started" && $0.attributes["channel"] == channel })
                let slot = recording.slot(started.atMillis)
                var detector = SpeechDetector(threshold: 600)
                var onset: Int?
                for i in frames.indices where onset == nil {
                    if case .started(let at) = detector.frame(rms: SignalAnalysis.rms(frames[i]), atMillis: Int64(i) * 20) { onset = Int(at / 20) }
                }
                let near = frames.indices.filter { abs($0 - slot) <= 1 }.map { Int(SignalAnalysis.rms(frames[$0])) }
                print("recording: \(channel) speech starts at slot \(slot) on the timeline; the recording's RMS around it \(near), its speech from \(onset.map(String.init) ?? "nowhere")")
                #expect(near.contains { $0 >= 300 }, "\(channel): silent in the recording where the timeline starts its speech (slot \(slot): \(near))")
                #expect(onset.map { $0 >= slot - 1 } ?? true, "\(channel): speech in the recording from \(onset!), before the timeline's slot \(slot)")
            }
            // The move: the agent's tone goes on after it.
            let migrated = try #require(events.first { $0.type == "migrated" })
            let after = heard.filter { $0 > recording.slot(migrated.atMillis) + 10 }
            #expect(after.count >= 25, "the agent's tone after the move: \(after.count) frames")
            let started = try #require(gateway.first { $0.type == "recording_started" })
            #expect(started.atMillis == info.startedAtMillis)

            // Range requests, as a player seeks.
            let part = try await cluster.http("GET", "/v1/calls/\(callID)/recording", headers: admin.merging(["Range": "bytes=100-199"]) { a, _ in a })
            #expect(part.status == 206 && part.body == audio.body[100..<200])
            let tail = try await cluster.http("GET", "/v1/calls/\(callID)/recording", headers: admin.merging(["Range": "bytes=-50"]) { a, _ in a })
            #expect(tail.status == 206 && tail.body == audio.body.suffix(50))
            let past = try await cluster.http("GET", "/v1/calls/\(callID)/recording", headers: admin.merging(["Range": "bytes=\(audio.body.count)-"]) { a, _ in a })
            #expect(past.status == 416 && errorCode(past.body) == "range_not_satisfiable")
            let peaks = try await cluster.http("GET", "/v1/calls/\(callID)/recording/peaks", headers: admin)
            #expect(peaks.status == 200 && peaks.body.count == 2 * recording.right.count)

            // Only with a key that may: none, or a wrong one, is refused; a traversal is not a call id.
            #expect(try await cluster.http("GET", "/v1/calls/\(callID)/recording").status == 401)
            #expect(try await cluster.http("GET", "/v1/calls/\(callID)/recording", headers: ["Authorization": "Bearer sbk_nope"]).status == 401)
            let traversal = try await cluster.http("GET", "/v1/calls/..%2F..%2Fetc%2Fpasswd/recording", headers: admin)
            #expect([400, 404].contains(traversal.status) && String(decoding: traversal.body, as: UTF8.self).contains("error"), "\(traversal.status)")
            #expect(try await cluster.http("GET", "/v1/calls/c..x/recording", headers: admin).status == 400)
            #expect(try await cluster.http("GET", "/v1/calls/c-no-such-call/recording", headers: admin).status == 404)

            // The CLI saves it and says how each channel sounds, read back from the file as any player would.
            let saved = "\(dir)/saved.opus"
            let cli = try CLIProcess(["call", "recording", callID, "--stats", "--file", saved, "--router-url", cluster.routers[0].url],
                                     environment: ["SWITCHBOARD_API_KEY": TestCluster.adminKey])
            #expect(await cli.waitForExit(timeout: .seconds(30)) == 0, "\(cli.output)")
            try await eventually(timeout: .seconds(10), "the CLI's summary") { cli.output.contains("agent: loud") }
            #expect(cli.output.contains("wrote \(saved)") && cli.output.contains("caller: loud"), "\(cli.output)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: saved)) == audio.body)

            // Deleted by one call, audited; then gone.
            let deleted = try await cluster.http("DELETE", "/v1/calls/\(callID)/recording", headers: admin)
            #expect(try deleted.status == 200 && decodeJSON(RecordingsDeleted.self, deleted.body).bytes > info.bytes)
            #expect(try await cluster.http("GET", "/v1/calls/\(callID)/recording/info", headers: admin).status == 404)
            let audit = String(decoding: try await cluster.http("GET", "/v1/audit").body, as: UTF8.self)
            #expect(audit.contains("delete recording") && audit.contains(callID))
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A recording that reaches its longest stops there, closed and playable, counted and on the timeline; the
    /// call goes on and the caller still hears the agent.
    @Test func aRecordingStopsAtItsLongestAndTheCallGoesOn() async throws {
        let dir = try directory()
        try await withTestCluster { cluster in
            try await cluster.addRouter { $0.recordCalls = true }
            try await cluster.addWorker(id: "a", handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let gw = try await cluster.addGateway { config in
                var options = RecordingOptions(directory: dir)
                options.maxDuration = .seconds(1)
                config.recording = options
            }
            let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
            let twilio = try await FakeTwilio(port: gw.port, path: path)
            try await twilio.start()
            try await eventually(timeout: .seconds(5), "placed") { !gw.gateway.liveCalls.isEmpty }
            let callID = gw.gateway.liveCalls[0]
            let speaking = Task { try await twilio.speak(seconds: 3) }
            let timelines = TimelineStore(redis: cluster.redis, keys: cluster.keys)
            try await eventually(timeout: .seconds(5), "the cap on the timeline while the call goes on") {
                try await timelines.timeline(callID).events.contains { $0.type == "recording_capped" }
            }
            // The call goes on past the recording's end: the caller hears the agent's tone after it (the agent speaks
            // for the whole call). Half a second of it after the test saw the cap, however late a loaded machine let
            // the test see it: by then the caller's 3 s may be over.
            let capped = ContinuousClock.now
            try await eventually(timeout: .seconds(5), "the caller hears the agent after the recording's end") {
                twilio.heard.filter { $0.at > capped }.count >= 25
            }
            let after = twilio.frequency(after: capped)
            #expect(!twilio.isClosed && after.map { abs($0 - 440) <= 5 } == true, "the call goes on past the recording's end: \(String(describing: after)) Hz")
            try await speaking.value
            try await twilio.stop()
            try await eventually(timeout: .seconds(5), "the recording closed") { gw.metric("switchboard_gateway_recordings_total", ["result": "capped"]) == 1 }
            let files = try RecordingInfo.paths(tenant: "acme", callID: callID)
            let info = try RecordingInfo.decodeStored(Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(files.info)"))))
            #expect(info.capped && info.complete && info.durationMillis == 1_000, "\(info)")
            let file = try OggOpusFile(Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(files.audio)"))))
            #expect(file.packets.count == 50 && file.endsWithEndOfStream)
            let events = try await timelines.timeline(callID).events
            #expect(events.contains { $0.type == "recording_capped" && $0.attributes["max_s"] == "1" }, "\(events.map(\.type))")
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Recordings on a volume that cannot be written to: the failure is counted and logged, and the call goes on,
    /// unrecorded, to its normal end.
    @Test func aRecordingThatCannotBeWrittenLeavesTheCallAlone() async throws {
        let notADirectory = try directory() + "/file"
        #expect(FileManager.default.createFile(atPath: notADirectory, contents: Data("x".utf8)))
        try await withTestCluster { cluster in
            try await cluster.addRouter { $0.recordCalls = true }
            try await cluster.addWorker(id: "a", handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let gw = try await cluster.addGateway { $0.recording = RecordingOptions(directory: notADirectory) }
            let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
            let twilio = try await FakeTwilio(port: gw.port, path: path)
            try await twilio.start()
            try await eventually(timeout: .seconds(5), "placed") { !gw.gateway.liveCalls.isEmpty }
            let callID = gw.gateway.liveCalls[0]
            try await eventually(timeout: .seconds(5), "the failure counted") { gw.metric("switchboard_gateway_recordings_total", ["result": "failed"]) == 1 }
            let failed = ContinuousClock.now
            try await twilio.speak(seconds: 1)
            #expect(!twilio.isClosed && twilio.frequency(after: failed).map { abs($0 - 440) <= 5 } == true, "the call goes on")
            try await twilio.stop()
            try await eventually(timeout: .seconds(5), "the call ended by its caller") { try await cluster.record(callID)["end_reason"] == "caller" }
            #expect(gw.metric("switchboard_gateway_recordings_total", ["result": "failed"]) == 1, "counted once")
        }
        try? FileManager.default.removeItem(atPath: (notADirectory as NSString).deletingLastPathComponent)
    }

    /// With tenancy on: a tenant records only when its policy says so, reads only its own recordings, and an
    /// operator purges all of a tenant's with one command, audited; recordings past their retention are swept.
    @Test func tenantsRecordByTheirPolicyReadTheirOwnAndArePurgedByOneCommand() async throws {
        let dir = try directory()
        try await withTestCluster { cluster in
            let router = try await cluster.addRouter { config in
                config.tenancy = true
                config.recordingsDirectory = dir
            }
            try await cluster.addWorker(id: "a", capacity: 10, handler: ToneHandler())
            try await cluster.waitForWorkers(1)
            let tenants = TenantStore(redis: cluster.redis, keys: cluster.keys)
            var recorded = TenantPolicy(id: "acme", callsPerSecond: 100, burst: 100, maxLiveCalls: 10)
            recorded.record = true
            let acmeKey = try await tenants.create(recorded)
            let otherKey = try await tenants.create(TenantPolicy(id: "other", callsPerSecond: 100, burst: 100, maxLiveCalls: 10))
            let gw = try await cluster.addGateway { config in
                config.recording = RecordingOptions(directory: dir)
                config.tenantKeys = ["acme": acmeKey, "other": otherKey]
                config.numbers = ["+15550001111": "acme", "+15550002222": "other"]
            }
            var calls: [String: String] = [:]
            for (tenant, number) in [("acme", "+15550001111"), ("other", "+15550002222")] {
                let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook(to: number).body, as: UTF8.self))
                let twilio = try await FakeTwilio(port: gw.port, path: path)
                try await twilio.start()
                try await eventually(timeout: .seconds(5), "\(tenant) placed") { gw.gateway.liveCalls.count == 1 }
                calls[tenant] = gw.gateway.liveCalls[0]
                try await twilio.speak(seconds: 1)
                try await twilio.stop()
                try await eventually(timeout: .seconds(5), "\(tenant)'s leg closed") { gw.gateway.liveCalls.isEmpty }
            }
            let acme = try #require(calls["acme"]), other = try #require(calls["other"])
            func get(_ call: String, key: String) async throws -> Int {
                try await cluster.http("GET", "/v1/calls/\(call)/recording/info", headers: ["Authorization": "Bearer \(key)"]).status
            }
            #expect(try await get(acme, key: acmeKey) == 200, "acme's own")
            #expect(try await get(acme, key: otherKey) == 404, "another tenant's is not there for it")
            #expect(try await get(other, key: TestCluster.adminKey) == 404, "other's policy does not record")
            #expect(try await cluster.http("DELETE", "/v1/tenants/acme/recordings", headers: ["Authorization": "Bearer \(acmeKey)"]).status == 403)

            // The operator's command: every recording of acme, gone, and said in the audit.
            let purge = try CLIProcess(["tenant", "purge", "acme", "--router-url", router.url, "--api-key", TestCluster.adminKey])
            #expect(await purge.waitForExit(timeout: .seconds(30)) == 0)
            #expect(purge.output.contains("deleted the recordings of 1 calls of acme"), "\(purge.output)")
            #expect(try await get(acme, key: TestCluster.adminKey) == 404)
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/acme"))
            let audit = String(decoding: try await cluster.http("GET", "/v1/audit").body, as: UTF8.self)
            #expect(audit.contains("purge recordings") && audit.contains("acme"))

            // Retention: a recording last written before it is swept, a newer one stays.
            for (call, age) in [("c-old", 40.0 * 86_400), ("c-new", 3_600.0)] {
                let folder = "\(dir)/acme"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                for suffix in [".opus", ".peaks", ".json"] {
                    let file = "\(folder)/\(call)\(suffix)"
                    #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
                    try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: file)
                }
            }
            #expect(RecordingOptions(directory: dir).sweep(nowMillis: WallClock.system.unixMillis) == 1)
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/acme/c-old.opus") && FileManager.default.fileExists(atPath: "\(dir)/acme/c-new.opus"))
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}
