import Testing
@testable import SwitchboardCore

@Suite struct CallMoveTests {
    let checkpoint = Checkpoint(seq: 2, state: nil, mediaSequence: 5, mediaTimestamp: 4_800, takenAtMillis: 1)

    @Test func holdOfferReleaseMovesTheCallAndTimesThePause() {
        let t0 = ContinuousClock.now
        var move = CallMove(callID: "c1", worker: "a")
        let r1 = move.start()
        #expect(r1 == .hold)
        let r2 = move.on(.held(checkpoint), now: t0)
        #expect(r2 == .offer(checkpoint))
        let r3 = move.on(.accepted(worker: "b"), now: t0 + .milliseconds(4))
        #expect(r3 == .release(to: "b"))
        let r4 = move.on(.released, now: t0 + .milliseconds(5))
        #expect(r4 == .finish(.moved(to: "b", pause: .milliseconds(4), released: true)))
    }

    @Test func aReleaseThatGetsNoAnswerStillMovesTheCall() {
        let t0 = ContinuousClock.now
        var move = CallMove(callID: "c1", worker: "a")
        _ = move.start()
        _ = move.on(.held(checkpoint), now: t0)
        _ = move.on(.accepted(worker: "b"), now: t0)
        #expect(move.on(.releaseFailed(SwitchboardError(.timeout, "no answer")), now: t0)
                == .finish(.moved(to: "b", pause: .zero, released: false)))
    }

    @Test func noTakerUnholdsAndTheCallStaysWithTheOffersError() {
        let t0 = ContinuousClock.now
        let full = SwitchboardError(.noCapacity, "every worker offered refused")
        var move = CallMove(callID: "c1", worker: "a")
        _ = move.start()
        _ = move.on(.held(checkpoint), now: t0)
        let r5 = move.on(.offerFailed(full), now: t0)
        #expect(r5 == .readOwner)
        #expect(move.on(.ownerRead("a"), now: t0) == .unhold)
        let r6 = move.on(.unholdFailed(SwitchboardError(.timeout, "x")), now: t0)
        #expect(r6 == .finish(.notMoved(full, result: "no_capacity")))
    }

    @Test func anAcceptThatCameTooLateIsAMoveMadeAndTheFirstWorkerLetsGo() {
        let t0 = ContinuousClock.now
        var move = CallMove(callID: "c1", worker: "a")
        _ = move.start()
        _ = move.on(.held(checkpoint), now: t0)
        #expect(move.on(.offerFailed(SwitchboardError(.noCapacity, "b: timeout")), now: t0 + .milliseconds(500)) == .readOwner)
        #expect(move.on(.ownerRead("b"), now: t0 + .milliseconds(502)) == .release(to: "b"))
        #expect(move.on(.released, now: t0 + .milliseconds(503)) == .finish(.moved(to: "b", pause: .milliseconds(502), released: true)))

        // A record that cannot be read leaves the call where it was.
        var unknown = CallMove(callID: "c1", worker: "a")
        _ = unknown.start()
        _ = unknown.on(.held(checkpoint), now: t0)
        _ = unknown.on(.offerFailed(SwitchboardError(.timeout, "x")), now: t0)
        #expect(unknown.on(.ownerRead(nil), now: t0) == .unhold)
        #expect(unknown.on(.unheld, now: t0) == .finish(.notMoved(SwitchboardError(.timeout, "x"), result: "timeout")))
    }

    @Test func aHoldThatFailsUndoesNothingAndSaysWhy() {
        let t0 = ContinuousClock.now
        var gone = CallMove(callID: "c1", worker: "a")
        _ = gone.start()
        guard case .finish(.notMoved(let conflict, "hold_failed")) = gone.on(.holdFailed(SwitchboardError(.notFound, "no call")), now: t0) else {
            Issue.record("a worker that does not hold the call is a conflict")
            return
        }
        #expect(conflict.code == .conflict)
        var cutOff = CallMove(callID: "c1", worker: "a")
        _ = cutOff.start()
        guard case .finish(.notMoved(let unavailable, _)) = cutOff.on(.holdFailed(SwitchboardError(.timeout, "x")), now: t0) else {
            Issue.record("a hold that timed out is not moved")
            return
        }
        #expect(unavailable.code == .unavailable)
        var empty = CallMove(callID: "c1", worker: "a")
        _ = empty.start()
        guard case .finish(.notMoved(_, "hold_failed")) = empty.on(.held(nil), now: t0) else {
            Issue.record("a hold without a checkpoint is not moved")
            return
        }
    }
}

@Suite struct PlacementAttemptTests {
    @Test func offersUntilOneAcceptsAtMostMaxOffersAndSaysWhoRefused() {
        let t0 = ContinuousClock.now
        var attempt = PlacementAttempt(needs: .init(region: "eu"), maxOffers: 2, offerTimeout: .milliseconds(500), deadline: t0 + .seconds(2))
        let r7 = attempt.next(now: t0)
        #expect(r7 == .offer(needs: .init(region: "eu"), timeout: .milliseconds(500)))
        attempt.offered("a")
        let r8 = attempt.answered("a", .refused("full"))
        #expect(!r8)
        guard case .offer(let needs, _) = attempt.next(now: t0) else { Issue.record("a second offer"); return }
        #expect(needs.tried == ["a"])
        attempt.offered("b")
        let r9 = attempt.answered("b", .failed("timeout"))
        #expect(!r9)
        guard case .giveUp(let error) = attempt.next(now: t0) else { Issue.record("gave up after 2"); return }
        #expect(error.code == .noCapacity)
        #expect(error.message == "every worker offered refused or failed (a: full; b: timeout)")
    }

    /// No candidate while this router has offers out unanswered (the fleet may only look full): it chooses again
    /// every 10 ms for one offer timeout at most, within the deadline; then, or with no offer out, it gives up.
    @Test func noCandidateWithOffersOutIsChosenAgainForAnOfferTimeoutAtMost() {
        let t0 = ContinuousClock.now
        var attempt = PlacementAttempt(needs: .init(), maxOffers: 3, offerTimeout: .milliseconds(50), deadline: t0 + .seconds(1))
        _ = attempt.next(now: t0)
        attempt.noCandidate(now: t0, offersUnanswered: true)
        #expect(attempt.next(now: t0) == .wait(until: t0 + .milliseconds(10)))
        guard case .offer = attempt.next(now: t0 + .milliseconds(10)) else { Issue.record("chosen again"); return }
        attempt.noCandidate(now: t0 + .milliseconds(10), offersUnanswered: true)
        #expect(attempt.next(now: t0 + .milliseconds(10)) == .wait(until: t0 + .milliseconds(20)))
        _ = attempt.next(now: t0 + .milliseconds(20))
        // An offer timeout after the first time it found nobody: every offer out then is answered. Given up.
        attempt.noCandidate(now: t0 + .milliseconds(45), offersUnanswered: true)
        guard case .giveUp(let late) = attempt.next(now: t0 + .milliseconds(45)) else { Issue.record("no wait past the offer timeout"); return }
        #expect(late.code == .noCapacity && late.message == "no ready worker with a free slot")

        // Nothing out: given up at once.
        var idle = PlacementAttempt(needs: .init(), maxOffers: 3, offerTimeout: .milliseconds(50), deadline: t0 + .seconds(1))
        _ = idle.next(now: t0)
        idle.noCandidate(now: t0, offersUnanswered: false)
        guard case .giveUp = idle.next(now: t0) else { Issue.record("nothing to wait for"); return }

        // The deadline ends the waiting too.
        var short = PlacementAttempt(needs: .init(), maxOffers: 3, offerTimeout: .milliseconds(500), deadline: t0 + .milliseconds(15))
        _ = short.next(now: t0)
        short.noCandidate(now: t0 + .milliseconds(8), offersUnanswered: true)
        guard case .giveUp = short.next(now: t0 + .milliseconds(8)) else { Issue.record("no wait past the deadline"); return }
    }

    /// Just back on the bus, a router hears nobody on a worker's offer subject: the worker may be there a moment
    /// later, or dead (the router cannot judge yet). Every other worker is offered the call first; only then the
    /// unheard one again, every 100 ms, until the deadline.
    @Test func anUnheardWorkerIsOfferedAgainOnlyOnceNoOtherIsLeftAndWithinTheDeadline() {
        let t0 = ContinuousClock.now
        var attempt = PlacementAttempt(needs: .init(), maxOffers: 3, offerTimeout: .milliseconds(500), deadline: t0 + .milliseconds(350))
        _ = attempt.next(now: t0)
        attempt.offered("a")
        let placed = attempt.answered("a", .unheard)
        #expect(!placed)
        guard case .offer(let needs, _) = attempt.next(now: t0) else { Issue.record("b is offered"); return }
        #expect(needs.tried == ["a"], "the unheard worker is not chosen again while another may take the call")
        attempt.offered("b")
        _ = attempt.answered("b", .refused("full"))
        // Nobody else: a wait, then a, and only a, again.
        attempt.noCandidate(now: t0 + .milliseconds(10))
        let first = attempt.next(now: t0 + .milliseconds(10))
        #expect(first == .wait(until: t0 + .milliseconds(110)))
        guard case .offer(let again, _) = attempt.next(now: t0 + .milliseconds(110)) else { Issue.record("a again"); return }
        #expect(again.tried == ["b"])
        attempt.offered("a")
        _ = attempt.answered("a", .unheard)
        attempt.noCandidate(now: t0 + .milliseconds(220))
        let second = attempt.next(now: t0 + .milliseconds(220))
        #expect(second == .wait(until: t0 + .milliseconds(320)))
        _ = attempt.next(now: t0 + .milliseconds(320))
        attempt.offered("a")
        _ = attempt.answered("a", .unheard)
        // No room for another wait before the deadline: given up, and the answer says why.
        attempt.noCandidate(now: t0 + .milliseconds(330))
        guard case .giveUp(let error) = attempt.next(now: t0 + .milliseconds(330)) else { Issue.record("the deadline ends it"); return }
        #expect(error.code == .noCapacity)
        #expect(error.message == "every worker offered refused or failed (a: unheard; b: full)")

        // With the offers used up by unheard and refusing workers, the unheard ones are still asked again.
        var used = PlacementAttempt(needs: .init(), maxOffers: 1, offerTimeout: .milliseconds(500), deadline: t0 + .seconds(1))
        _ = used.next(now: t0)
        used.offered("a")
        _ = used.answered("a", .unheard)
        let wait = used.next(now: t0)
        #expect(wait == .wait(until: t0 + .milliseconds(100)))
        // A failure is one, unheard or not: with one offer allowed, the next is a give-up.
        var failed = PlacementAttempt(needs: .init(), maxOffers: 1, offerTimeout: .milliseconds(500), deadline: t0 + .seconds(1))
        _ = failed.next(now: t0)
        failed.offered("a")
        _ = failed.answered("a", .failed("no_responders"))
        guard case .giveUp = failed.next(now: t0) else { Issue.record("one offer only"); return }
    }

    @Test func theLastOfferGetsOnlyWhatIsLeftOfTheDeadlineAndNoneAfterIt() {
        let t0 = ContinuousClock.now
        var attempt = PlacementAttempt(needs: .init(tried: ["moving-from"]), maxOffers: 3, offerTimeout: .milliseconds(500),
                                       deadline: t0 + .milliseconds(300))
        let r10 = attempt.next(now: t0 + .milliseconds(100))
        #expect(r10 == .offer(needs: .init(tried: ["moving-from"]), timeout: .milliseconds(200)))
        var late = attempt
        guard case .giveUp(let error) = late.next(now: t0 + .milliseconds(300)) else { Issue.record("deadline passed"); return }
        #expect(error.message == "no ready worker with a free slot")
        attempt.offered("a")
        let r11 = attempt.answered("a", .accepted)
        #expect(r11)
    }
}
