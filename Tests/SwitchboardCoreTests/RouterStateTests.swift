import Testing
@testable import SwitchboardCore

/// A router's decisions through `RouterState.modify`, without servers: what it does when a worker dies with an
/// offer out, when a drain comes between an offer and its answer, and when a rollback comes in the middle of a
/// move.
@Suite struct RouterStateTests {
    let t0 = ContinuousClock.now

    /// A router that has watched the fleet for a while (it judges nobody in its first detection time).
    func router(_ workers: [Heartbeat]) -> RouterState {
        var state = RouterState(registry: .init(), scheduler: .init(), seed: 7)
        for heartbeat in workers { _ = state.modify(.heartbeat(heartbeat), now: t0) }
        _ = state.modify(.tick, now: t0)
        return state
    }

    /// Ticks every 100 ms from `from` to `to`, the `alive` workers heartbeating every second; all it decided.
    func run(_ state: inout RouterState, from: Duration, to: Duration, alive: [Heartbeat]) -> [RouterState.Action] {
        var actions: [RouterState.Action] = []
        var at = from
        while at <= to {
            if at.components.attoseconds == 0 {
                for var heartbeat in alive {
                    heartbeat.seq += UInt64(at.components.seconds)
                    actions += state.modify(.heartbeat(heartbeat), now: t0 + at)
                }
            }
            actions += state.modify(.tick, now: t0 + at)
            at += .milliseconds(100)
        }
        return actions
    }

    func chosen(_ actions: [RouterState.Action]) -> (worker: String, token: UInt64)? {
        guard case .offer(let decision, let token)? = actions.first, let worker = decision.chosen?.workerID else { return nil }
        return (worker, token)
    }

    @Test func aWorkerThatDiesWithAnOfferOutIsFailedOverAndTheNextOfferGoesElsewhere() throws {
        let others = ["w2", "w3", "w4"].map { beat($0, calls: 6) }
        var state = router([beat("w1")] + others)
        let offer = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(10))))
        #expect(offer.worker == "w1", "the emptiest")

        // w1 goes silent with the offer unanswered: late (probed), then suspect (pinged); never dead by silence.
        let actions = run(&state, from: .milliseconds(100), to: .seconds(2), alive: others)
        let liveness = actions.compactMap { if case .liveness(let event) = $0 { event } else { nil } }
        #expect(liveness == [.probe("w1"), .suspect("w1")], "\(liveness)")
        #expect(!actions.contains { if case .failOver = $0 { true } else { false } })
        #expect(state.registry.entries["w1"]?.reserved == 1, "its slot is still held for the offer")

        // Its ping fails: dead, its calls to be taken on. The offer's failure that follows finds nothing to undo.
        let verdict = state.modify(.pingFailed(worker: "w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), probe: false, connected: true),
                                   now: t0 + .milliseconds(2500))
        guard case .failOver("w1", "i1")? = verdict.first else { Issue.record("w1 dead: \(verdict)"); return }
        #expect(state.modify(.offerAnswered(worker: "w1", token: offer.token, .failed), now: t0 + .milliseconds(2510)).isEmpty)
        #expect(state.registry.entries["w1"] == nil)
        let next = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(2520))))
        #expect(["w2", "w3", "w4"].contains(next.worker))

        // The same silence while this router itself is cut off from NATS judges nobody.
        var cutOff = router([beat("w1")] + others)
        _ = run(&cutOff, from: .milliseconds(100), to: .seconds(2), alive: others)
        let notJudged = cutOff.modify(.pingFailed(worker: "w1", sentAt: t0 + .seconds(2), timeout: .milliseconds(500), probe: false, connected: false),
                                      now: t0 + .milliseconds(2500))
        guard case .notJudged("w1", _)? = notJudged.first else { Issue.record("not judged while cut off: \(notJudged)"); return }
        #expect(cutOff.registry.entries["w1"] != nil)
    }

    @Test func aDrainBetweenAnOfferAndItsAnswerKeepsTheCallAndPlacesNothingMoreThere() throws {
        var state = router([beat("w1"), beat("w2", calls: 5)])
        let offer = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(10))))
        #expect(offer.worker == "w1")
        let drain = DrainRequest(workerID: "w1", deadlineMillis: 60_000, atDeadline: .migrate, requestedBy: "ops", requestedAtMillis: 0)
        #expect(state.modify(.drain(worker: "w1", drain), now: t0 + .milliseconds(11)).isEmpty)
        // The worker said yes: the call stands (draining ends calls only at the deadline), its slot counted.
        _ = state.modify(.offerAnswered(worker: "w1", token: offer.token, .accepted(acceptSeq: 1)), now: t0 + .milliseconds(12))
        #expect(state.registry.entries["w1"]?.reserved == 1)
        // Nothing more goes to w1, emptier as it is, until the drain is lifted.
        for i in 0..<20 {
            let next = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(20 + i))))
            #expect(next.worker == "w2")
            _ = state.modify(.offerAnswered(worker: next.worker, token: next.token, .refused), now: t0 + .milliseconds(20 + i))
        }
        // A drain as read from Redis later, without w1's: lifted.
        _ = state.modify(.drainsRead([:]), now: t0 + .milliseconds(100))
        #expect(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(101)))?.worker == "w1")
    }

    /// A move reads its targets under the policy in force when it offers, not when it began; a call keeps to its
    /// own version first (its saved state is that version's), and new calls go to the version rolled back to.
    @Test func aRollbackDuringAMoveIsInForceForItsOfferAndForNewCalls() throws {
        let first = try DeployPolicy.none.applying(.deploy(version: "1"), liveVersions: ["1"], nowMillis: 0, actor: "ops")
        let canary = try first.applying(.deploy(version: "2", canaryPercent: 50), liveVersions: ["1", "2"], nowMillis: 1, actor: "ops")
        var state = router([beat("a", version: "2"), beat("b", version: "2", calls: 3), beat("c", version: "1", calls: 6)])
        _ = state.modify(.policy(first), now: t0)
        guard case .policyApplied? = state.modify(.policy(canary), now: t0).first else { Issue.record("the canary is in force"); return }

        // A call on the canary (version 2) is being moved off a: held, and its targets read under the canary.
        #expect(state.moveTargets(for: "2").0 == [["2"], ["1"]])
        // The rollback lands before the move's offer; an older policy arriving late changes nothing.
        let back = try canary.applying(.rollback(), liveVersions: ["1", "2"], nowMillis: 2, actor: "ops")
        guard case .policyApplied? = state.modify(.policy(back), now: t0 + .milliseconds(5)).first else { Issue.record("rolled back"); return }
        #expect(state.modify(.policy(canary), now: t0 + .milliseconds(6)).isEmpty)
        let (targets, revision) = state.moveTargets(for: "2")
        #expect(revision == back.revision)
        #expect(targets?.first == ["2"] && targets?.dropFirst().first == ["1"], "its own version first, then the active one: \(String(describing: targets))")
        // The move's offer (its own version first, the active one after) goes to b, the other worker of version 2,
        // and a new call goes to version 1 only.
        let needs = Scheduler.Needs(versions: targets?.first, fallback: Array((targets ?? []).dropFirst()), tried: ["a"])
        #expect(chosen(state.modify(.offerWanted(needs, explain: false), now: t0 + .milliseconds(7)))?.worker == "b")
        let (choice, _) = state.versionChoice(tenant: "t")
        #expect(choice.versions == ["1"] && choice.fallback.isEmpty)
        #expect(chosen(state.modify(.offerWanted(.init(versions: choice.versions), explain: false), now: t0 + .milliseconds(8)))?.worker == "c")
    }

    /// A slot freed while a dead worker's call waits goes to that call, on every router: new calls are held back
    /// while the free slots are no more than the calls waiting, the call's own offer is not, and once it is taken
    /// on its slot counts in every router's view before the worker's heartbeat shows it.
    @Test func aFreedSlotGoesToADeadWorkersWaitingCallBeforeNewCalls() throws {
        let fleet = [beat("w1", capacity: 2, calls: 2), beat("w2", capacity: 2, calls: 1)]  // one free slot, on w2
        var taking = router(fleet)  // the router taking the call on
        var other = router(fleet)   // another router, hearing its notices
        for state in [0, 1] {
            var router = state == 0 ? taking : other
            #expect(router.modify(.resumptionWaiting(callID: "c1", hold: .seconds(2)), now: t0 + .milliseconds(10)).isEmpty)
            guard case .held(waiting: 1, free: 1)? = router.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(20)).first
            else { Issue.record("a new call is held back on router \(state)"); return }
            if state == 0 { taking = router } else { other = router }
        }
        // Moves are held back too (a move's call is healthy where it is); the waiting call's own offer is not.
        guard case .held? = taking.modify(.offerWanted(.init(tried: ["w9"]), explain: false), now: t0 + .milliseconds(21)).first
        else { Issue.record("a move is held back"); return }
        let resumed = try #require(chosen(taking.modify(.offerWanted(.init(tried: ["dead"]), explain: false, resuming: true),
                                                        now: t0 + .milliseconds(30))))
        #expect(resumed.worker == "w2")
        _ = taking.modify(.offerAnswered(worker: "w2", token: resumed.token, .accepted(acceptSeq: 5)), now: t0 + .milliseconds(40))

        // Done: the other router counts the slot taken before w2's heartbeat says so, and places nothing there.
        _ = other.modify(.resumptionDone(callID: "c1", worker: "w2", acceptSeq: 5), now: t0 + .milliseconds(41))
        _ = taking.modify(.resumptionDone(callID: "c1", worker: nil, acceptSeq: nil), now: t0 + .milliseconds(41))
        for router in [taking, other] {
            #expect(router.resumptions.isEmpty)
            #expect(router.registry.placeableFreeSlots() == 0)
        }
        guard case .noCandidate? = other.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(50)).first
        else { Issue.record("the other router sees w2 full"); return }
        // w2's heartbeat with the accept: the slot is counted once, by the heartbeat.
        _ = other.modify(.heartbeat(beat("w2", capacity: 2, calls: 2, seq: 2, accepted: 5)), now: t0 + .milliseconds(60))
        #expect(other.registry.entries["w2"]?.reserved == 0 && other.registry.placeableFreeSlots() == 0)

        // A call hangs up on w1: the slot is free again, nothing waits, and a new call takes it.
        _ = other.modify(.heartbeat(beat("w1", capacity: 2, calls: 1, seq: 2)), now: t0 + .milliseconds(70))
        #expect(chosen(other.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(80)))?.worker == "w1")
    }

    /// A burst near capacity: a worker's heartbeat counts calls it accepted whose accepts have not reached this
    /// router yet, so their slots are counted twice and the fleet looks full with room on it. The router says so
    /// with its "no candidate" (offers out unanswered), and once the accepts come in the room is there again.
    @Test func acceptsNotYetHeardMakeAFleetLookFullAndTheRouterSaysOffersAreOut() throws {
        var state = router([beat("w1", capacity: 3)])
        let offers = try (0..<2).map { i in try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(10 + i)))) }
        // w1 accepted both (accepts 1 and 2) and says so in a heartbeat before this router hears either accept.
        _ = state.modify(.heartbeat(beat("w1", capacity: 3, calls: 2, seq: 2, accepted: 2)), now: t0 + .milliseconds(20))
        #expect(state.registry.placeableFreeSlots() == 0, "3 slots, 2 calls, and the same 2 again as offers out")
        guard case .noCandidate(_, offersUnanswered: true)? = state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(21)).first
        else { Issue.record("no candidate, with offers out"); return }
        // The accepts arrive: each is already in w1's heartbeat, so its reservation goes, and the free slot is back.
        for (i, offer) in offers.enumerated() {
            _ = state.modify(.offerAnswered(worker: "w1", token: offer.token, .accepted(acceptSeq: UInt64(i + 1))), now: t0 + .milliseconds(30))
        }
        #expect(state.registry.placeableFreeSlots() == 1 && !state.registry.hasUnansweredOffers)
        let third = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(31))))
        #expect(third.worker == "w1")
        // Really full, and every offer answered: nothing to wait for.
        _ = state.modify(.offerAnswered(worker: "w1", token: third.token, .accepted(acceptSeq: 3)), now: t0 + .milliseconds(40))
        guard case .noCandidate(_, offersUnanswered: false)? = state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(41)).first
        else { Issue.record("no candidate, no offer out"); return }
    }

    @Test func aWaitingCallHoldsOnlyTheSlotsItNeedsAndOnlyWhileItIsAnnounced() throws {
        var state = router([beat("w1", capacity: 4, calls: 2), beat("w2", capacity: 4, calls: 4)])  // two free slots
        #expect(state.registry.placeableFreeSlots() == 2)
        _ = state.modify(.resumptionWaiting(callID: "c1", hold: .seconds(2)), now: t0)
        // Two free for one waiting: a new call goes.
        let first = try #require(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(10))))
        #expect(first.worker == "w1")
        // One free (the offer holds the other) for one waiting: held.
        guard case .held(waiting: 1, free: 1)? = state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(20)).first
        else { Issue.record("held with one free slot for one waiting call"); return }
        // Announced again, held on; not announced for the hold's length (its router stopped or was cut off): no more.
        _ = state.modify(.resumptionWaiting(callID: "c1", hold: .seconds(2)), now: t0 + .seconds(1))
        guard case .held? = state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(2500)).first
        else { Issue.record("still held: announced again at 1 s"); return }
        #expect(state.resumptionsWaiting(now: t0 + .milliseconds(2500)) == 1)
        #expect(chosen(state.modify(.offerWanted(.init(), explain: false), now: t0 + .milliseconds(3001)))?.worker == "w1")
        #expect(state.resumptions.isEmpty && state.resumptionsWaiting(now: t0 + .milliseconds(3001)) == 0)
    }
}
