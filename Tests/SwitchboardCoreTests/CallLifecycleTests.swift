import Testing
@testable import SwitchboardCore

@Suite struct CallLifecycleTests {
    let t0 = ContinuousClock.now
    let limits = CallLifecycle.Limits(maxDuration: .seconds(60), mediaTimeout: .seconds(5), heldTimeout: .seconds(3))
    let checkpoint = Checkpoint(seq: 3, state: "{}", mediaSequence: 10, mediaTimestamp: 9_600, takenAtMillis: 1)

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    /// A new call with its start recorded and its handler started at 100 ms.
    func live() -> CallLifecycle {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        _ = call.on(.startRecorded(superseded: false), now: at(10))
        _ = call.on(.handlerStarted, now: at(100))
        return call
    }

    @Test func aNewCallIsRecordedThenCarriedThenEndedAndItsEndPublished() {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        #expect(call.start() == [.recordStart])
        #expect(call.on(.startRecorded(superseded: false), now: at(10)) == [.startTasks])
        #expect(call.phase == .starting)
        #expect(call.on(.handlerStarted, now: at(250)) == [.observeStart(.milliseconds(240))])
        #expect(call.phase == .live)
        #expect(call.on(.endRequested(.caller), now: at(900)) == [.stopTasks])
        #expect(call.on(.endRequested(.maxDuration), now: at(901)) == [], "the first reason wins")
        #expect(call.on(.tasksStopped, now: at(910)) == [.recordEnd(.caller, epoch: 1)])
        #expect(call.on(.endRecorded(.written), now: at(915))
                == [.publishEnded(.caller), .answerEndRequests(.caller), .free(.caller)])
        #expect(call.phase == .done)
    }

    @Test func anEndRedisDidNotTakeIsKeptForRepairAndStillPublished() {
        var call = live()
        _ = call.on(.endRequested(.handler), now: at(500))
        _ = call.on(.tasksStopped, now: at(501))
        #expect(call.on(.endRecorded(.failed), now: at(502))
                == [.keepEndForRepair(.handler, epoch: 1), .publishEnded(.handler), .answerEndRequests(.handler), .free(.handler)])
    }

    @Test func anEndAnotherWorkerOwnsIsAnsweredButNotPublished() {
        var call = live()
        _ = call.on(.endRequested(.handler), now: at(500))
        _ = call.on(.tasksStopped, now: at(501))
        #expect(call.on(.endRecorded(.notOwned), now: at(502)) == [.answerEndRequests(.handler), .free(.handler)])
    }

    @Test func aStartRecordFoundTakenOnLetsGoWithoutStartingAnything() {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        #expect(call.on(.startRecorded(superseded: true), now: at(5)) == [.silence, .forget])
        #expect(call.on(.endRecorded(.written), now: at(6)) == [.free(.migrated)])
    }

    @Test func anEndAskedBeforeTheStartIsRecordedWaitsForIt() {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        #expect(call.on(.endRequested(.workerStopping), now: at(1)) == [])
        #expect(call.on(.startRecorded(superseded: false), now: at(2)) == [.startTasks, .stopTasks])
        #expect(call.on(.tasksStopped, now: at(3)) == [.recordEnd(.workerStopping, epoch: 1)])
    }

    @Test func aCallMovingInIsClaimedBeforeTheYesAndItsEpochIsTheClaims() {
        var call = CallLifecycle(movingIn: "c1", limits: limits, now: t0)
        #expect(call.start() == [.claim])
        #expect(call.epoch == nil)
        #expect(call.on(.superseded, now: at(1)) == [], "no epoch of its own yet: the claim decides")
        #expect(call.on(.claimed(epoch: 7), now: at(3)) == [.answerAccepted, .startTasks])
        _ = call.on(.endRequested(.caller), now: at(9))
        _ = call.on(.tasksStopped, now: at(10))
        #expect(call.on(.endRecorded(.written), now: at(11)).contains(.publishEnded(.caller)))
        #expect(call.epoch == 7)
    }

    @Test func aFailedClaimRefusesTheOfferAndFreesTheSlotWithNoEnd() {
        var call = CallLifecycle(movingIn: "c1", limits: limits, now: t0)
        #expect(call.on(.claimFailed, now: at(3)) == [.answerRefused(.superseded), .free(nil)])
        #expect(call.on(.tick(lastHeard: t0, cutOff: false), now: at(4)) == [])
    }

    @Test func aSupersededCallIsSilencedAtOnceAndOnlyForgotten() {
        var call = live()
        #expect(call.on(.superseded, now: at(200)) == [.silence, .stopTasks])
        #expect(call.reason == .migrated)
        #expect(call.on(.tasksStopped, now: at(201)) == [.forget])
        #expect(call.on(.endRecorded(.failed), now: at(202)) == [.free(.migrated)], "no end is published or kept for a moved call")
    }

    @Test func aSupersededCallAlreadyEndingKeepsItsReasonButFallsSilent() {
        var call = live()
        _ = call.on(.endRequested(.caller), now: at(200))
        #expect(call.on(.superseded, now: at(201)) == [.silence])
        #expect(call.on(.tasksStopped, now: at(202)) == [.recordEnd(.caller, epoch: 1)])
    }

    /// A worker torn down (its tasks cancelled, no end asked for) ends nothing and writes nothing: to the routers
    /// it is a crash, and the call resumes elsewhere.
    @Test func tasksStoppedWithoutAnEndEndNothing() {
        var call = live()
        #expect(call.on(.tasksStopped, now: at(500)) == [])
        #expect(call.reason == nil && call.phase == .live)
    }

    // MARK: Moving out

    @Test func holdThenReleaseMovesTheCallOut() {
        var call = live()
        #expect(call.on(.holdRequested, now: at(200)) == [.hold])
        #expect(call.on(.holdRequested, now: at(201)).first.map { if case .replyError = $0 { true } else { false } } == true)
        #expect(call.on(.holdWritten(checkpoint), now: at(210)) == [.replyHeld(checkpoint)])
        #expect(call.phase == .held)
        #expect(call.on(.released, now: at(230)) == [.replyOK, .silence, .stopTasks])
        #expect(call.on(.tasksStopped, now: at(231)) == [.forget])
    }

    @Test func unholdSpeaksAgainAndAFailedHoldCheckpointUnholdsAtOnce() {
        var call = live()
        _ = call.on(.holdRequested, now: at(200))
        _ = call.on(.holdWritten(checkpoint), now: at(210))
        #expect(call.on(.unholdRequested, now: at(220)) == [.unhold, .replyOK])
        #expect(call.phase == .live)
        _ = call.on(.holdRequested, now: at(300))
        #expect(call.on(.holdFailed(moved: false), now: at(301))
                == [.unhold, .replyError(SwitchboardError(.unavailable, "could not checkpoint call c1"))])
        #expect(call.phase == .live)
        _ = call.on(.holdRequested, now: at(400))
        let moved = call.on(.holdFailed(moved: true), now: at(401))
        #expect(moved.suffix(2) == [.silence, .stopTasks])
    }

    @Test func aHoldBeforeTheAgentStartedReturnsToStarting() {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        #expect(call.on(.holdRequested, now: at(1)).count == 1, "not started: refused")
        _ = call.on(.startRecorded(superseded: false), now: at(2))
        _ = call.on(.holdRequested, now: at(3))
        _ = call.on(.holdWritten(checkpoint), now: at(4))
        _ = call.on(.unholdRequested, now: at(5))
        #expect(call.phase == .starting)
    }

    @Test func aHeldCallNobodyReleasesAsksWhetherItIsStillItsOwn() {
        var call = live()
        _ = call.on(.holdRequested, now: at(200))
        _ = call.on(.holdWritten(checkpoint), now: at(200))
        #expect(call.on(.tick(lastHeard: at(0), cutOff: false), now: at(3_100)) == [])
        #expect(call.on(.tick(lastHeard: at(0), cutOff: false), now: at(3_200)) == [.checkOwnership])
        #expect(call.on(.tick(lastHeard: at(0), cutOff: false), now: at(3_300)) == [], "one check at a time")
        // Redis did not answer: asked again after `recheck`.
        #expect(call.on(.ownershipChecked(owned: nil), now: at(3_400)) == [])
        #expect(call.on(.tick(lastHeard: at(0), cutOff: false), now: at(4_300)) == [])
        #expect(call.on(.tick(lastHeard: at(0), cutOff: false), now: at(4_400)) == [.checkOwnership])
        #expect(call.on(.ownershipChecked(owned: true), now: at(4_410)) == [.unhold])
        #expect(call.phase == .live)
    }

    @Test func aHeldCallAnotherWorkerClaimedLetsGo() {
        var call = live()
        _ = call.on(.holdRequested, now: at(200))
        _ = call.on(.holdWritten(checkpoint), now: at(200))
        _ = call.on(.tick(lastHeard: at(0), cutOff: false), now: at(3_200))
        #expect(call.on(.ownershipChecked(owned: false), now: at(3_210)) == [.silence, .stopTasks])
    }

    @Test func aCallThatEndedWhileItsHoldWasWrittenIsNotHandedOver() {
        var call = live()
        _ = call.on(.holdRequested, now: at(200))
        #expect(call.on(.endRequested(.caller), now: at(201)) == [.stopTasks])
        #expect(call.on(.holdWritten(checkpoint), now: at(202)) == [.replyError(SwitchboardError(.conflict, "call c1 is ending"))])
    }

    // MARK: The clock

    @Test func theCallersSilenceEndsTheCallOnlyOnceTheAgentIsLive() {
        var call = CallLifecycle(newCall: "c1", limits: limits, now: t0)
        _ = call.on(.startRecorded(superseded: false), now: at(0))
        #expect(call.on(.tick(lastHeard: t0, cutOff: false), now: at(8_000)) == [], "the agent has not started: not the caller's silence")
        _ = call.on(.handlerStarted, now: at(8_000))
        #expect(call.on(.tick(lastHeard: t0, cutOff: false), now: at(12_900)) == [])
        #expect(call.on(.tick(lastHeard: t0, cutOff: false), now: at(13_000)) == [.stopTasks])
        #expect(call.reason == .noMedia)
    }

    @Test func silenceWhileCutOffOrFrozenIsNotTheCallers() {
        var call = live()
        _ = call.on(.tick(lastHeard: at(100), cutOff: false), now: at(4_000))
        #expect(call.on(.tick(lastHeard: at(100), cutOff: true), now: at(6_000)) == [], "cut off: never ends for silence")
        #expect(call.on(.tick(lastHeard: at(100), cutOff: false), now: at(10_900)) == [], "counted from the last cut-off tick")
        #expect(call.on(.tick(lastHeard: at(100), cutOff: false), now: at(11_000)) == [.stopTasks])
    }

    @Test func heardAudioKeepsTheCallAliveAndMaxDurationEndsItAnyway() {
        var call = live()
        for ms in stride(from: 1_000, to: 59_999, by: 1_000) {
            #expect(call.on(.tick(lastHeard: at(ms - 20), cutOff: false), now: at(ms)) == [])
        }
        #expect(call.on(.tick(lastHeard: at(59_990), cutOff: false), now: at(60_000)) == [.stopTasks])
        #expect(call.reason == .maxDuration)
    }

    @Test func noMediaTimeoutMeansSilenceNeverEndsTheCall() {
        var call = CallLifecycle(newCall: "c1", limits: .init(maxDuration: .seconds(3600), mediaTimeout: nil, heldTimeout: .seconds(3)),
                                 now: t0)
        _ = call.on(.startRecorded(superseded: false), now: t0)
        _ = call.on(.handlerStarted, now: t0)
        #expect(call.on(.tick(lastHeard: t0, cutOff: false), now: at(600_000)) == [])
    }

    /// Any order of events leaves the call in a phase it can end from, frees its slot exactly once, and never
    /// records an end for a call it gave away.
    @Test func randomEventOrdersFreeTheSlotOnceAndNeverEndAMovedCall() {
        var random = SeededRandom(seed: 42)
        let events: [CallLifecycle.Event] = [
            .claimed(epoch: 4), .claimFailed, .startRecorded(superseded: false), .startRecorded(superseded: true),
            .handlerStarted, .endRequested(.caller), .endRequested(.handler), .superseded, .released, .holdRequested,
            .holdWritten(checkpoint), .holdFailed(moved: false), .holdFailed(moved: true), .unholdRequested,
            .ownershipChecked(owned: true), .ownershipChecked(owned: false), .ownershipChecked(owned: nil),
            .tick(lastHeard: t0, cutOff: false), .tick(lastHeard: t0, cutOff: true), .tasksStopped,
            .endRecorded(.written), .endRecorded(.failed), .endRecorded(.notOwned),
        ]
        for round in 0..<2_000 {
            var call = round.isMultiple(of: 2) ? CallLifecycle(newCall: "c", limits: limits, now: t0)
                                               : CallLifecycle(movingIn: "c", limits: limits, now: t0)
            var frees = 0
            var recordedEnd = false
            for step in 0..<40 {
                let event = events[Int(random.next() % UInt64(events.count))]
                let actions = call.on(event, now: at(step * 2_000))
                frees += actions.filter(\.frees).count
                if actions.contains(where: { if case .recordEnd = $0 { true } else { false } }) { recordedEnd = true }
            }
            #expect(frees <= 1)
            if call.reason == .migrated { #expect(!recordedEnd) }
            if frees == 1 { #expect(call.phase == .done) }
        }
    }
}
