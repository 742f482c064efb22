import Foundation
@testable import SwitchboardCore
@testable import SwitchboardRedis
@testable import SwitchboardRouter
import Testing

/// Every decoder that takes bytes from outside (NATS messages, media packets, the heartbeat fast path, HTTP
/// bodies, records read back from Redis, config files), fed 100,000 hostile inputs each. A decoder must answer
/// a value or a coded error, never trap; a value it accepts must survive what the code then does with it (the
/// arithmetic of deadlines, clocks, media positions, rates and scores) and must encode and decode to itself.
@Suite("Decoders under fuzzing")
struct DecoderFuzzTests {
    static let cases = 100_000

    /// Runs `cases` inputs from `samples` through `body`; returns how many it accepted.
    @discardableResult
    static func fuzz(_ name: String, seed: UInt64, samples: [[UInt8]], cases: Int = cases,
                     _ body: ([UInt8]) throws -> Bool) rethrows -> Int {
        var mutator = Mutator(seed: seed, samples: samples)
        var accepted = 0
        for sample in samples { #expect(try body(sample), "\(name): a valid sample is refused") }
        for _ in 0..<cases where try body(mutator.next()) { accepted += 1 }
        // Each suite must reach past the first check, or it tests error paths alone.
        #expect(accepted > cases / 1000, "\(name): only \(accepted) of \(cases) accepted")
        return accepted
    }

    /// Decodes with `decode`; an accepted value is re-encoded and must decode to itself.
    static func roundTrip<T: WireMessage & Equatable>(_ bytes: [UInt8], _ decode: ([UInt8]) throws(SwitchboardError) -> T,
                                                      then use: (T) -> Void = { _ in }) -> Bool {
        guard let value = try? decode(bytes) else { return false }
        use(value)
        #expect((try? decode(value.encoded())) == value, "\(T.self) does not survive its own encoding")
        return true
    }

    static let now = WallClock.system.unixMillis
    static let checkpoint = Checkpoint(seq: 7, state: #"{"frequency":440,"phase":0.5}"#, mediaSequence: 100, mediaTimestamp: 96_000,
                                       takenAtMillis: now)
    static let drain = DrainRequest(workerID: "w-1", deadlineMillis: now + 60_000, atDeadline: .migrate, requestedBy: "ops",
                                    requestedAtMillis: now)
    static let policy = DeployPolicy(revision: 3, active: "1.4.0", canary: .init(version: "1.5.0", percent: 20), previous: ["1.3.0"],
                                     retired: ["1.3.0": now], action: .deploy, changedAtMillis: now, changedBy: "ops")

    @Test func heartbeatsFastPathAndFullDecoder() {
        let beat = Heartbeat(workerID: "w-1", version: "1.4.0", region: "eu", zone: "eu-a", state: .ready, capacity: 20, activeCalls: 7,
                             cpu: 0.31, memoryUsedBytes: 73_400_320, memoryLimitBytes: 2_147_483_648, seq: 1042, incarnation: "9f2c",
                             accepted: 5310)
        var registry = WorkerRegistry()
        var scheduler = Scheduler()
        var random = SeededRandom(seed: 1)
        let t0 = ContinuousClock.now
        var n = 0
        var withGPU = beat
        withGPU.gpu = .init(utilization: 0.4, memoryUsedBytes: 1 << 30, memoryTotalBytes: 16 << 30)
        Self.fuzz("heartbeat", seed: 1, samples: [beat.encoded(), { var b = beat; b.state = .outdated; return b.encoded() }(),
                                                  withGPU.encoded()]) { bytes in
            Self.roundTrip(bytes, Heartbeat.decode) { hb in
                // What a router does with one: the registry, a decision, a view with load and score.
                n += 1
                registry.ingest(hb, now: t0 + .milliseconds(n))
                _ = registry.tick(now: t0 + .milliseconds(n))
                _ = scheduler.choose(.init(versions: [hb.version], fallback: [["x"]]), in: registry, using: &random)
                if let entry = registry.entries[hb.workerID] { _ = WorkerView(entry, scheduler: scheduler, now: t0) }
                if registry.entries.count > 64 { registry = WorkerRegistry() }
            }
        }
    }

    @Test func offersAndWhatAWorkerDoesWithThem() {
        let offer = Offer(callID: "c-1", tenant: "acme", region: "eu", metadata: ["from": "+33"], routerID: "r-1", deployRevision: 4)
        var resumed = offer
        resumed.resume = Resume(reason: .failover, fromWorker: "w-2", checkpoint: Self.checkpoint, epoch: 3)
        var slots = WorkerSlots(capacity: 1_000_000)
        Self.fuzz("offer", seed: 2, samples: [offer.encoded(), resumed.encoded()]) { bytes in
            Self.roundTrip(bytes, Offer.decode) { offer in
                _ = slots.offer(offer.callID, resume: offer.resume != nil, deployRevision: offer.deployRevision)
                if let checkpoint = offer.resume?.checkpoint { Self.use(checkpoint) }
                _ = slots.end(offer.callID)
            }
        }
    }

    static func use(_ checkpoint: Checkpoint) {
        _ = checkpoint.mediaPosition(elapsedMillis: WallClock.system.unixMillis.subtractingReportingOverflow(checkpoint.takenAtMillis).partialValue)
    }

    @Test func checkpointsFromOffersAndFromRedis() {
        Self.fuzz("checkpoint", seed: 3, samples: [Self.checkpoint.encoded()]) { bytes in
            guard case .success(let checkpoint)? = Checkpoint.parse(String(decoding: bytes, as: UTF8.self)) else { return false }
            Self.use(checkpoint)
            return true
        }
    }

    @Test func controlMessagesAndDrains() {
        let samples = [WorkerControl(.drain, drain: Self.drain).encoded(), WorkerControl(.hold, callID: "c-1").encoded(),
                       DrainNotice(workerID: "w-1", drain: Self.drain).encoded(),
                       ResumptionNotice.waiting("c-1", router: "r-1", hold: .seconds(2)).encoded(),
                       ResumptionNotice.done("c-1", router: "r-1", worker: "w-2", acceptSeq: 3).encoded()]
        Self.fuzz("control", seed: 4, samples: samples) { bytes in
            if let control = try? WorkerControl.decode(bytes) {
                _ = control.drain?.deadline(now: .now, unixNowMillis: WallClock.system.unixMillis)
                #expect((try? WorkerControl.decode(control.encoded())) == control)
                return true
            }
            if let notice = try? ResumptionNotice.decode(bytes) {
                var state = RouterState(registry: .init(), scheduler: .init(), seed: 1)
                let event: RouterState.Event = notice.holdMillis.map { .resumptionWaiting(callID: notice.callID, hold: .milliseconds($0)) }
                    ?? .resumptionDone(callID: notice.callID, worker: notice.workerID, acceptSeq: notice.acceptSeq)
                _ = state.modify(event, now: .now)
                _ = state.modify(.offerWanted(.init(), explain: false), now: .now)
                #expect((try? ResumptionNotice.decode(notice.encoded())) == notice)
                return true
            }
            return Self.roundTrip(bytes, DrainNotice.decode) { _ = $0.drain?.deadline(now: .now, unixNowMillis: WallClock.system.unixMillis) }
        }
        Self.fuzz("stored drain", seed: 5, samples: [WireCodec.encode(Self.drain)]) { bytes in
            guard let request = try? DrainRequest.decodeStored(String(decoding: bytes, as: UTF8.self)) else { return false }
            var drain = Drain()
            let now = ContinuousClock.now
            _ = drain.request(deadline: request.deadline(now: now, unixNowMillis: WallClock.system.unixMillis), atDeadline: request.atDeadline,
                              now: now, calls: ["c"])
            _ = drain.tick(now: now + .seconds(1), calls: ["c"])
            return true
        }
    }

    @Test func callMessages() {
        Self.fuzz("route request", seed: 6, samples: [RouteRequest(tenant: "acme", region: "eu", zone: "eu-a", locality: .preferred,
                                                                   metadata: ["k": "v"]).encoded()]) { Self.roundTrip($0, RouteRequest.decode) }
        Self.fuzz("call end", seed: 60, samples: [CallEnd(callID: "c-1", reason: .caller).encoded()]) { Self.roundTrip($0, CallEnd.decode) }
        Self.fuzz("migrate request", seed: 61, samples: [MigrateRequest(callID: "c-1", requestedBy: "drain:w-1").encoded()]) {
            Self.roundTrip($0, MigrateRequest.decode)
        }
        Self.fuzz("call event", seed: 62, samples: [CallEvent(callID: "c-1", event: .resumed, workerID: "w-2", fromWorker: "w-1",
                                                              atMillis: Self.now).encoded()]) { Self.roundTrip($0, CallEvent.decode) }
        Self.fuzz("offer reply", seed: 63, samples: [OfferReply.accept(workerID: "w-1", version: "1", region: "eu", acceptSeq: 9).encoded(),
                                                     OfferReply.refuse(.outdated, workerID: "w-1", version: "1", region: "eu").encoded()]) {
            Self.roundTrip($0, OfferReply.decode)
        }
        Self.fuzz("control reply", seed: 64, samples: [WorkerControlReply(ok: true, state: .ready, activeCalls: 3, checkpoint: Self.checkpoint).encoded()]) {
            Self.roundTrip($0, WorkerControlReply.decode) { if let c = $0.checkpoint { Self.use(c) } }
        }
        Self.fuzz("route reply", seed: 65, samples: [RouteReply(error: SwitchboardError(.noCapacity, "none")).encoded()]) {
            Self.roundTrip($0, RouteReply.decode)
        }
    }

    @Test func mediaPackets() {
        let packet = MediaPacket(sequence: 41, timestamp: 39_360, payload: Array(repeating: 0xAB, count: 60))
        let key = MediaPacket.dtmf("#", sequence: 41, timestamp: 39_360)
        Self.fuzz("media", seed: 7, samples: [packet.encoded(), key.encoded()]) { bytes in
            guard let decoded = try? MediaPacket.decode(bytes) else { return false }
            _ = decoded.sequence &- 40
            if decoded.kind == .dtmf { #expect(decoded.digit.map(MediaStream.dtmfDigits.contains) == true) }
            #expect((try? MediaPacket.decode(decoded.encoded())) == decoded)
            return true
        }
    }

    /// What agents send a worker (Twilio Media Streams and the checkpoint extension), and what the worker then
    /// does with it: the playout queue takes the audio and marks, a checkpoint must stay under 64 KiB.
    @Test func agentMessages() {
        let samples: [[UInt8]] = [
            #"{"event":"media","streamSid":"MZ1","media":{"payload":"/////w=="}}"#,
            #"{"event":"mark","streamSid":"MZ1","mark":{"name":"turn-1"}}"#,
            #"{"event":"clear","streamSid":"MZ1"}"#,
            #"{"event":"checkpoint","state":{"turns":[1,2],"note":"x\u00e9","n":1.5e3,"ok":true,"none":null}}"#,
        ].map { Array($0.utf8) }
        var playout = AgentPlayout(frameSamples: 160, maxQueuedSamples: 8_000)
        Self.fuzz("agent message", seed: 11, samples: samples) { bytes in
            guard let event = try? MediaStream.decodeAgentMessage(bytes) else { return false }
            switch event {
            case .media(let payload): playout.enqueue(payload.map { Int16($0) })
            case .mark(let name): _ = playout.enqueue(mark: name)
            case .clear: _ = playout.clear()
            case .checkpoint(let state): #expect(state.utf8.count <= Checkpoint.maxStateBytes)
            case .other(let name): #expect(!name.isEmpty)
            }
            _ = playout.tick()
            #expect(playout.queuedSamples <= playout.maxQueuedSamples)
            return true
        }
    }

    /// What a gateway takes from Twilio and from stream URLs: form bodies, stream messages and stream tokens.
    @Test func twilioFormsAndStreamTokens() {
        let forms: [[UInt8]] = ["CallSid=CA1&From=%2B1234&To=%2B1800&AccountSid=AC1", "Caller+Name=A+B%26C&Empty=&Flag"].map { Array($0.utf8) }
        Self.fuzz("twilio form", seed: 21, samples: forms) { bytes in
            guard let fields = try? TwilioWebhook.form(bytes) else { return false }
            #expect(fields.count <= 256)
            _ = TwilioWebhook.signature(authToken: "t", url: "https://gw/twilio/voice", parameters: fields)
            return true
        }
        let sid = JSONText.quoted("MZ1")
        let stream: [[UInt8]] = [
            MediaStream.connected(),
            MediaStream.start(.init(accountSid: "AC1", streamSid: "MZ1", callSid: "CA1", customParameters: ["token": "v1.t.1.x", "from": "+1"])),
            MediaStream.media(quotedStreamSid: sid, sequence: 3, chunk: 2, timestampMillis: 40, payload: [UInt8](repeating: 0xff, count: 160)),
            MediaStream.dtmf(quotedStreamSid: sid, sequence: 4, digit: "7"),
            MediaStream.mark(quotedStreamSid: sid, sequence: 5, name: "turn-1"),
            MediaStream.stop(quotedStreamSid: sid, sequence: 6, accountSid: "AC1", callSid: "CA1"),
        ].map { Array($0.utf8) }
        Self.fuzz("twilio stream message", seed: 23, samples: stream) { bytes in
            guard let event = try? TwilioStream.decode(bytes) else { return false }
            switch event {
            case .media(_, let payload): #expect(payload.count <= TwilioStream.maxMediaBytes)
            case .start(let start): #expect(start.customParameters.count <= 32)
            case .connected, .dtmf, .mark, .stop: break
            }
            return true
        }
        let secret = Array("s3cret".utf8)
        let tokens = [Array(StreamToken(tenant: "acme", expiresAtMillis: Int64.max).encoded(secret: secret).utf8)]
        // Never a trap, and a changed token is accepted only when it is the same token: the signature covers every
        // byte (so this one is not held to the others' share of accepted inputs).
        var mutator = Mutator(seed: 22, samples: tokens)
        for _ in 0..<Self.cases {
            guard let text = String(validating: mutator.next(), as: UTF8.self),
                  let token = try? StreamToken.verify(text, secret: secret, nowMillis: 0) else { continue }
            #expect(token.encoded(secret: secret) == text)
        }
    }

    /// What a gateway takes from its browser page (text events, audio frames), and the call's packets through its
    /// jitter buffer: never a trap, the buffer never holds more than its bound.
    @Test func browserStreamsAndTheGatewaysPlayout() {
        let texts: [[UInt8]] = [#"{"event":"dtmf","digit":"5"}"#, #"{"event":"hangup"}"#].map { Array($0.utf8) }
        Self.fuzz("browser text", seed: 31, samples: texts) { bytes in
            guard let event = try? BrowserStream.decode(bytes) else { return false }
            if case .dtmf(let digit) = event { #expect(MediaStream.dtmfDigits.contains(digit)) }
            return true
        }
        let frame = BrowserStream.encode((0..<BrowserStream.frameSamples).map { Int16($0 * 97 % 30_000) })
        Self.fuzz("browser audio", seed: 32, samples: [frame]) { bytes in
            guard let samples = try? BrowserStream.audio(bytes) else { return false }
            #expect(BrowserStream.encode(samples) == bytes)
            return true
        }
        var jitter = JitterBuffer()
        var arrival = 0.0
        let packets = (0..<3).map { MediaPacket(sequence: UInt32($0), timestamp: UInt32($0 * 960), payload: [0xF8, 0xFF, 0xFE]).encoded() }
        Self.fuzz("media packet into the jitter buffer", seed: 33, samples: packets) { bytes in
            guard let packet = try? MediaPacket.decode(bytes) else { return false }
            arrival += 7
            _ = jitter.insert(packet, arrivalMillis: arrival)
            _ = jitter.tick()
            #expect(jitter.depth <= jitter.settings.maxDepth + jitter.settings.slack)
            return true
        }
    }

    @Test func deployPoliciesFromNATSAndRedis() throws {
        var split = CanarySplit()
        let change: [DeployPolicy.Change] = [.deploy(version: "9"), .deploy(version: "9", canaryPercent: 33), .promote, .abort,
                                             .rollback(), .rollback(to: "1.3.0")]
        func use(_ policy: DeployPolicy) {
            // What routers and workers do with one: split, standing, move targets, every change.
            _ = split.choose(policy, tenant: "t")
            for version in ["1.4.0", "1.3.0", "x"] {
                var standing = DeployStanding(version: version)
                _ = standing.apply(policy, nowMillis: Self.now)
                _ = standing.tick(nowMillis: Self.now &+ policy.rollbackWindowMillis)
                _ = policy.moveTargets(for: version)
            }
            for c in change { _ = try? policy.applying(c, liveVersions: ["9", "1.3.0"], force: true, nowMillis: Self.now, actor: "fuzz") }
        }
        Self.fuzz("deploy notice", seed: 8, samples: [DeployNotice(policy: Self.policy).encoded()]) { bytes in
            Self.roundTrip(bytes, DeployNotice.decode) { use($0.policy) }
        }
        Self.fuzz("stored policy", seed: 9, samples: [WireCodec.encode(Self.policy)]) { bytes in
            guard let policy = try? DeployStore.decodePolicy(String(decoding: bytes, as: UTF8.self)) else { return false }
            use(policy)
            return true
        }
    }

    @Test func tenantRecordsFromRedis() throws {
        let record = TenantStore.Record(policy: TenantPolicy(id: "acme", callsPerSecond: 50, burst: 10, maxLiveCalls: 100, regions: ["eu"],
                                                             whenRedisDown: .open(localCap: 20)),
                                        keyHashes: [APIKey.hash("k")])
        Self.fuzz("tenant record", seed: 10, samples: [WireCodec.encode(record)]) { bytes in
            guard let record = try? TenantStore.record(String(decoding: bytes, as: UTF8.self), "acme") else { return false }
            // The admission arithmetic (rate interval and burst tolerance) runs on every route of the tenant.
            let gcra = record.policy.gcra
            _ = gcra.decide(tat: nil, now: 1_000_000)
            _ = gcra.decide(tat: 1_000_000 + gcra.tolerance, now: 1_000_000)
            return true
        }
    }

    @Test func httpBodies() {
        let route = Array(#"{"tenant":"acme","region":"eu","metadata":{"k":"v"}}"#.utf8)
        Self.fuzz("POST /v1/calls", seed: 11, samples: [route]) { bytes in
            guard let body = try? RouterHTTP.withVersion(bytes, tenantOptional: true), let request = try? RouteRequest.decode(body) else {
                return false
            }
            #expect((try? RouteRequest.decode(request.encoded())) == request)
            return true
        }
        Self.fuzz("drain body", seed: 110, samples: [Array(#"{"deadline_seconds":90,"at_deadline":"end"}"#.utf8)]) { bytes in
            guard let body = try? DrainBody.decode(bytes), let deadline = try? body.deadline(default: .seconds(3600)) else { return false }
            _ = WallClock.system.unixMillis + deadline.milliseconds
            return true
        }
        let deploy = WireCodec.encode(DeployBody(version: "1.5.0", canaryPercent: 20, canaryBy: .tenant, rollbackWindowSeconds: 60,
                                                 drainDeadlineSeconds: 600, atDeadline: .migrate, force: true, revision: 4))
        Self.fuzz("deploy body", seed: 111, samples: [deploy]) { bytes in
            guard let body: DeployBody = try? RouterHTTP.decodeBody(bytes, shape: ""), let change = try? body.change() else { return false }
            _ = try? Self.policy.applying(change, liveVersions: [body.version], nowMillis: Self.now, actor: "fuzz")
            return true
        }
        Self.fuzz("deploy action body", seed: 112, samples: [WireCodec.encode(DeployActionBody(to: "1.4.0", force: false, revision: 2))]) { bytes in
            guard let body: DeployActionBody = try? RouterHTTP.decodeBody(bytes, shape: "") else { return false }
            _ = try? Self.policy.applying(.rollback(to: body.to), liveVersions: ["1.3.0"], force: body.force ?? false, nowMillis: Self.now,
                                          actor: "fuzz")
            return true
        }
    }

    @Test func configFiles() {
        let sample = Array(#"{"nats-url":"nats://10.0.0.5:4222","capacity":40,"heartbeat-interval":0.5,"tenancy":true}"#.utf8)
        Self.fuzz("config file", seed: 12, samples: [sample]) { bytes in
            (try? ConfigFile.parse(Data(bytes))) != nil
        }
    }
}
