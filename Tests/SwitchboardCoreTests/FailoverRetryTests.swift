import Testing
@testable import SwitchboardCore

@Suite struct FailoverRetryTests {
    @Test func attemptsBackOffUntilTheWindowEndsThenGiveUp() {
        let t0 = ContinuousClock.now
        var retry = FailoverRetry(configuration: .init(window: .seconds(10), first: .milliseconds(250), longest: .seconds(2)), now: t0)
        var now = t0
        var waits: [Duration] = []
        while case .retry(let at) = retry.attemptFailed(now: now) {
            waits.append(at - now)
            now = at
        }
        #expect(Array(waits.prefix(5)) == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(2)])
        #expect(now == t0 + .seconds(10), "the last attempt is at the window's end")
        #expect(retry.attempts == waits.count + 1)
    }

    @Test func anAttemptAfterTheWindowGivesUpAtOnce() {
        let t0 = ContinuousClock.now
        var retry = FailoverRetry(configuration: .init(window: .seconds(1)), now: t0)
        #expect(retry.attemptFailed(now: t0 + .seconds(5)) == .giveUp(attempts: 1))
    }
}
