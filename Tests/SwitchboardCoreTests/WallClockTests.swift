import Foundation
import Synchronization
import SwitchboardCore
import Testing

@Suite("WallClock")
struct WallClockTests {
    @Test func theSystemClockIsTheMachinesUnixTime() {
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let now = WallClock.system.unixMillis
        let after = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(before <= now && now <= after)
    }

    @Test func aFixedClockStaysPutAndAnAdvancedOneKeepsItsOffset() {
        let clock = WallClock.fixed(1_767_225_599_000)
        #expect(clock.unixMillis == 1_767_225_599_000 && clock.unixMillis == 1_767_225_599_000)
        #expect(clock.advanced(by: .seconds(1)).unixMillis == 1_767_225_600_000)
        #expect(clock.advanced(by: .milliseconds(-500)).unixMillis == 1_767_225_598_500)
        #expect(UsagePeriod.month(clock.advanced(by: .seconds(1)).unixMillis) == "2026-01")
    }

    /// A test's own source: each read asks it again, so a test can move time along as it goes.
    @Test func aClockReadsItsSourceEachTime() {
        let now = ManualTime(1_000)
        let clock = WallClock { now.millis.withLock { $0 } }
        #expect(clock.unixMillis == 1_000)
        now.millis.withLock { $0 += 86_400_000 }
        #expect(clock.unixMillis == 86_401_000)
    }

    final class ManualTime: Sendable {
        let millis: Mutex<Int64>
        init(_ millis: Int64) { self.millis = Mutex(millis) }
    }
}
