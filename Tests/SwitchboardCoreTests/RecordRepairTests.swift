import Testing
@testable import SwitchboardCore

@Suite struct RecordRepairTests {
    @Test func aStrayIsRepairedOnlyWhenSeenAtTwoRefreshesInARow() {
        var repair = RecordRepair()
        // The worker reads what it holds after the set, so a call listed and held is never a stray; c3 is one.
        #expect(repair.listed(["c1", "c3"], holding: ["c1"]).isEmpty, "seen once")
        #expect(repair.listed(["c1", "c3"], holding: ["c1"]) == ["c3"])
        // A call that looked stray once (its end was in flight) and then left the set is not repaired.
        #expect(repair.listed(["c4"], holding: []).isEmpty)
        #expect(repair.listed([], holding: []).isEmpty)
        #expect(repair.listed(["c4"], holding: []).isEmpty, "not in a row")
    }

    @Test func aPendingEndIsWrittenWithItsOwnReasonNotTakenForAStray() {
        var repair = RecordRepair()
        repair.endFailed(.init(callID: "c1", tenant: "t", epoch: 2, reason: .caller))
        #expect(repair.listed(["c1"], holding: []).isEmpty)
        #expect(repair.listed(["c1"], holding: []).isEmpty)
        #expect(repair.pendingEnds["c1"]?.reason == .caller)
        repair.endWritten("c1")
        #expect(repair.pendingEnds.isEmpty)
        #expect(repair.listed(["c1"], holding: []).isEmpty, "first time seen stray")
    }

    @Test func pendingEndsAreBoundedOldestFirst() {
        var repair = RecordRepair(maxPending: 2)
        #expect(repair.endFailed(.init(callID: "a", tenant: "t", epoch: 1, reason: .caller)) == nil)
        #expect(repair.endFailed(.init(callID: "b", tenant: "t", epoch: 1, reason: .caller)) == nil)
        #expect(repair.endFailed(.init(callID: "a", tenant: "t", epoch: 1, reason: .api)) == nil, "a again: replaced")
        #expect(repair.endFailed(.init(callID: "c", tenant: "t", epoch: 1, reason: .caller))?.callID == "a")
        #expect(Set(repair.pendingEnds.keys) == ["b", "c"])
    }
}

@Suite struct TokenBucketTests {
    @Test func aBurstThenTheRate() {
        let t0 = ContinuousClock.now
        var bucket = TokenBucket(perSecond: 5, burst: 10)
        #expect((0..<15).filter { _ in bucket.take(now: t0) }.count == 10)
        let early = bucket.take(now: t0 + .milliseconds(100))
        let onTime = bucket.take(now: t0 + .milliseconds(200))
        #expect(!early && onTime, "one token per 200 ms")
        #expect((0..<20).filter { _ in bucket.take(now: t0 + .seconds(60)) }.count == 10, "never more than the burst")
    }
}
