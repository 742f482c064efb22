import Foundation
import SwitchboardCore
import Testing

@Suite struct DrainTests {
    let t0 = ContinuousClock.now
    let calls: Set<String> = ["c1", "c2"]

    @Test func aDrainRefusesNewCallsAtOnceAndExitsWhenTheLastCallEnds() {
        var drain = Drain()
        #expect(!drain.isDraining)
        #expect(drain.tick(now: t0, calls: calls) == [])
        #expect(drain.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: calls) == [.refuseNewCalls])
        #expect(drain.isDraining)
        // Calls go on before the deadline; nothing to do.
        #expect(drain.tick(now: t0 + .seconds(30), calls: ["c1"]) == [])
        #expect(drain.tick(now: t0 + .seconds(31), calls: []) == [.exit])
        #expect(drain.phase == .done)
        // Done is done: later ticks and requests do nothing.
        #expect(drain.tick(now: t0 + .seconds(90), calls: []) == [])
        #expect(drain.request(deadline: t0, atDeadline: .end, now: t0 + .seconds(91), calls: []) == [])
    }

    @Test func aWorkerWithNoCallsExitsOnTheRequestItself() {
        var drain = Drain()
        #expect(drain.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: []) == [.refuseNewCalls, .exit])
    }

    @Test func atTheDeadlineCallsMigrateAndAreRetriedUntilGivenUp() {
        var drain = Drain(retryEvery: .seconds(2), giveUpAfter: .seconds(10))
        _ = drain.request(deadline: t0 + .seconds(5), atDeadline: .migrate, now: t0, calls: calls)
        #expect(drain.tick(now: t0 + .milliseconds(4999), calls: calls) == [])
        #expect(drain.tick(now: t0 + .seconds(5), calls: calls) == [.migrate(["c1", "c2"])])
        // Not again until the retry interval has passed, and then only the calls still here.
        #expect(drain.tick(now: t0 + .seconds(6), calls: ["c2"]) == [])
        #expect(drain.tick(now: t0 + .seconds(7), calls: ["c2"]) == [.migrate(["c2"])])
        // No other worker took c2 for 10 s: it is ended with a stated reason, and the drain then finishes.
        #expect(drain.tick(now: t0 + .seconds(15), calls: ["c2"]) == [.end(["c2"], .drainDeadline)])
        #expect(drain.phase == .ending)
        #expect(drain.tick(now: t0 + .seconds(16), calls: ["c2"]) == [])
        #expect(drain.tick(now: t0 + .seconds(17), calls: []) == [.exit])
    }

    @Test func atTheDeadlineWithEndCallsAreEnded() {
        var drain = Drain()
        _ = drain.request(deadline: t0 + .seconds(1), atDeadline: .end, now: t0, calls: calls)
        #expect(drain.tick(now: t0 + .seconds(1), calls: calls) == [.end(["c1", "c2"], .drainDeadline)])
        #expect(drain.tick(now: t0 + .seconds(2), calls: calls) == [])
    }

    @Test func aZeroDeadlineActsOnTheRequest() {
        var drain = Drain()
        #expect(drain.request(deadline: t0, atDeadline: .migrate, now: t0, calls: calls) == [.refuseNewCalls, .migrate(["c1", "c2"])])
    }

    @Test func aNewRequestRetimesTheDrain() {
        var drain = Drain()
        _ = drain.request(deadline: t0 + .seconds(3600), atDeadline: .migrate, now: t0, calls: calls)
        // The operator shortens it: no second "refuse", and the new deadline rules.
        #expect(drain.request(deadline: t0 + .seconds(10), atDeadline: .end, now: t0 + .seconds(1), calls: calls) == [])
        #expect(drain.tick(now: t0 + .seconds(10), calls: calls) == [.end(["c1", "c2"], .drainDeadline)])
    }

    @Test func undrainWorksUntilCallsAreBeingEnded() {
        var drain = Drain()
        #expect(drain.cancel().cancelled == false)
        _ = drain.request(deadline: t0 + .seconds(1), atDeadline: .migrate, now: t0, calls: calls)
        let first = drain.cancel()
        #expect(first.cancelled && first.actions == [.acceptNewCalls])
        #expect(drain.phase == .serving)
        #expect(drain.tick(now: t0 + .seconds(5), calls: calls) == [])
        // Migrating: still cancellable.
        _ = drain.request(deadline: t0 + .seconds(5), atDeadline: .migrate, now: t0 + .seconds(5), calls: calls)
        #expect(drain.phase == .migrating(since: t0 + .seconds(5), lastAttempt: t0 + .seconds(5)))
        let (cancelled, actions) = drain.cancel()
        #expect(cancelled && actions == [.acceptNewCalls])
        // Ending: too late.
        _ = drain.request(deadline: t0, atDeadline: .end, now: t0 + .seconds(6), calls: calls)
        #expect(drain.phase == .ending)
        #expect(drain.cancel().cancelled == false)
        #expect(drain.phase == .ending)
    }

    @Test func deadlinesAreCheckedAndMappedToThisClock() throws {
        #expect(throws: SwitchboardError.self) { try DrainRequest.checkDeadline(seconds: -1) }
        #expect(throws: SwitchboardError.self) { try DrainRequest.checkDeadline(seconds: .nan) }
        #expect(throws: SwitchboardError.self) { try DrainRequest.checkDeadline(seconds: 8 * 24 * 3600) }
        try DrainRequest.checkDeadline(seconds: 0)
        try DrainRequest.checkDeadline(seconds: 3600)
        let request = DrainRequest(workerID: "w", deadlineMillis: 10_000, atDeadline: .end, requestedBy: "ops", requestedAtMillis: 0)
        #expect(request.deadline(now: t0, unixNowMillis: 4_000) == t0 + .seconds(6))
        // A deadline already past (clocks apart, or a late start) is now, never before.
        #expect(request.deadline(now: t0, unixNowMillis: 20_000) == t0)
    }
}

@Suite struct DrainInTheRegistryTests {
    let t0 = ContinuousClock.now
    let request = DrainRequest(workerID: "a", deadlineMillis: 1, atDeadline: .migrate, requestedBy: "ops", requestedAtMillis: 0)

    @Test func aDrainTakesAWorkerOutOfPlacementBeforeItsHeartbeatSaysSo() {
        var registry = WorkerRegistry()
        registry.ingest(beat("a"), now: t0)
        registry.ingest(beat("b"), now: t0)
        registry.setDrain("a", request)
        #expect(registry.entries["a"]?.isPlaceable == false)
        var scheduler = Scheduler(configuration: .init())
        var random = SeededRandom(seed: 1)
        for _ in 0..<50 {
            #expect(scheduler.choose(Scheduler.Needs(), in: registry, using: &random).chosen?.workerID == "b")
        }
        // Heartbeats still saying "ready" do not undo it; undrain does.
        registry.ingest(beat("a", seq: 2), now: t0)
        #expect(registry.entries["a"]?.isPlaceable == false)
        registry.setDrain("a", nil)
        #expect(registry.entries["a"]?.isPlaceable == true)
    }

    @Test func aDrainKnownBeforeTheWorkerJoinsAppliesWhenItDoes() {
        var registry = WorkerRegistry()
        registry.setDrain("a", request)
        registry.ingest(beat("a"), now: t0)
        #expect(registry.entries["a"]?.drain == request)
        #expect(registry.entries["a"]?.isPlaceable == false)
        let view = WorkerView(registry.entries["a"]!, scheduler: Scheduler(configuration: .init()), now: t0)
        #expect(view.state == "draining")
        #expect(WorkersView([view]).totals["draining"] == 1)
    }
}

@Suite struct CheckpointTests {
    @Test func aCheckpointRoundTripsAndItsStateIsBounded() throws {
        let checkpoint = Checkpoint(seq: 3, state: #"{"phase":0.25}"#, mediaSequence: 100, mediaTimestamp: 96_000, takenAtMillis: 5)
        let text = String(decoding: checkpoint.encoded(), as: UTF8.self)
        #expect(try Checkpoint.parse(text)?.get() == checkpoint)
        #expect(Checkpoint.parse(nil) == nil)
        let big = Checkpoint(seq: 1, state: String(repeating: "x", count: Checkpoint.maxStateBytes + 1), mediaSequence: 0,
                             mediaTimestamp: 0, takenAtMillis: 0)
        #expect(throws: SwitchboardError.self) { try big.validate() }
        if case .failure(let error)? = Checkpoint.parse(String(decoding: big.encoded(), as: UTF8.self)) {
            #expect(error.code == .tooLarge)
        } else {
            Issue.record("an oversized checkpoint was accepted")
        }
        guard case .failure(let error)? = Checkpoint.parse("{not json") else {
            Issue.record("a malformed checkpoint was accepted")
            return
        }
        #expect(error.code == .badMessage)
    }

    @Test func mediaResumesInNumberAndTimeAfterTheCheckpoint() {
        let checkpoint = Checkpoint(seq: 1, state: nil, mediaSequence: 10, mediaTimestamp: 9_600, takenAtMillis: 1_000)
        #expect(checkpoint.mediaPosition(elapsedMillis: 0) == (10, 9_600))
        #expect(checkpoint.mediaPosition(elapsedMillis: 19) == (10, 9_600))
        // A second later: 50 frames the caller never got are skipped, not sent twice.
        #expect(checkpoint.mediaPosition(elapsedMillis: 1_000) == (60, 9_600 + 50 * 960))
        #expect(checkpoint.mediaPosition(elapsedMillis: -5) == (10, 9_600))
    }

    @Test func controlMessagesNeedWhatTheirOperationNeeds() throws {
        #expect(throws: SwitchboardError.self) { try WorkerControl.decode(Array(#"{"v":1,"op":"hold"}"#.utf8)) }
        #expect(throws: SwitchboardError.self) { try WorkerControl.decode(Array(#"{"v":1,"op":"drain"}"#.utf8)) }
        #expect(throws: SwitchboardError.self) { try WorkerControl.decode(Array(#"{"v":1,"op":"explode","call_id":"c"}"#.utf8)) }
        #expect(throws: SwitchboardError.self) { try WorkerControl.decode(Array(#"{"v":1,"op":"release","call_id":"a.b"}"#.utf8)) }
        #expect(try WorkerControl.decode(Array(#"{"v":1,"op":"hold","call_id":"c1"}"#.utf8)).callID == "c1")
        #expect(try WorkerControl.decode(Array(#"{"v":1,"op":"undrain"}"#.utf8)).op == .undrain)
        // An offer carrying an oversized checkpoint is refused as too large, not taken on.
        var offer = Offer(callID: "c1", tenant: "t", region: nil, metadata: [:], routerID: "r",
                          resume: Resume(reason: .failover, fromWorker: "w", checkpoint:
                            Checkpoint(seq: 1, state: String(repeating: "y", count: Checkpoint.maxStateBytes + 1),
                                       mediaSequence: 0, mediaTimestamp: 0, takenAtMillis: 0)))
        #expect(throws: SwitchboardError.self) { try Offer.decode(offer.encoded()) }
        offer.resume?.checkpoint.state = "{}"
        #expect(try Offer.decode(offer.encoded()).resume?.reason == .failover)
    }
}

/// A drain that does not leave (`--when-drained stay`, for workers under a Kubernetes Deployment).
@Suite struct DrainStayTests {
    let t0 = ContinuousClock.now

    @Test func aDrainThatStaysEndsIdleNotDoneAndAnUndrainServesAgain() {
        var drain = Drain()
        #expect(drain.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: ["c1"], leave: false) == [.refuseNewCalls])
        #expect(drain.tick(now: t0 + .seconds(1), calls: []) == [.idle])
        #expect(drain.phase == .drained)
        #expect(drain.isDraining)  // still takes no calls
        #expect(drain.tick(now: t0 + .seconds(120), calls: []) == [])  // nothing more, however long
        let (cancelled, actions) = drain.cancel()
        #expect(cancelled && actions == [.acceptNewCalls])
        #expect(drain.phase == .serving)
    }

    @Test func aSignalLeavesAtOnceFromIdleAndAtTheLastCallFromADrainThatStays() {
        var idle = Drain()
        #expect(idle.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: [], leave: false) == [.refuseNewCalls, .idle])
        // Another stay request changes nothing; one that leaves exits now.
        #expect(idle.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: [], leave: false) == [])
        #expect(idle.request(deadline: t0 + .seconds(300), atDeadline: .migrate, now: t0, calls: [], leave: true) == [.exit])
        #expect(idle.phase == .done)

        var busy = Drain()
        _ = busy.request(deadline: t0 + .seconds(60), atDeadline: .migrate, now: t0, calls: ["c1"], leave: false)
        #expect(busy.request(deadline: t0 + .seconds(300), atDeadline: .migrate, now: t0, calls: ["c1"], leave: true) == [])
        // Leaving is not taken back by a later request that would stay.
        _ = busy.request(deadline: t0 + .seconds(300), atDeadline: .migrate, now: t0, calls: ["c1"], leave: false)
        #expect(busy.tick(now: t0 + .seconds(2), calls: []) == [.exit])
    }

    @Test func aSignalWhileCallsAreBeingEndedMakesTheDrainLeave() {
        var drain = Drain()
        _ = drain.request(deadline: t0 + .seconds(1), atDeadline: .end, now: t0, calls: ["c1"], leave: false)
        #expect(drain.tick(now: t0 + .seconds(1), calls: ["c1"]) == [.end(["c1"], .drainDeadline)])
        #expect(drain.request(deadline: t0 + .seconds(300), atDeadline: .migrate, now: t0 + .seconds(1), calls: ["c1"], leave: true) == [])
        #expect(drain.tick(now: t0 + .seconds(2), calls: []) == [.exit])
        // Without the signal, the same drain stays.
        var staying = Drain()
        _ = staying.request(deadline: t0 + .seconds(1), atDeadline: .end, now: t0, calls: ["c1"], leave: false)
        _ = staying.tick(now: t0 + .seconds(1), calls: ["c1"])
        #expect(staying.tick(now: t0 + .seconds(2), calls: []) == [.idle])
    }
}
