import Foundation

/// The wall clock: the time now in Unix milliseconds, what records, events, timelines, drains, tokens and the
/// audit store. Never used to measure a duration or to wait: `ContinuousClock` does that (each shell holds one
/// as `clock`), and Redis's own clock decides admission and metering.
///
/// The pure core takes wall time as a parameter; the shells (router, worker, gateway, the Redis stores that
/// stamp times) read it only through one of these, given in their configuration: `.system` unless a test
/// gives another, so a test can stamp records and pick months without waiting for the calendar.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Int64

    /// A clock that asks `read` for the time (Unix milliseconds) each time it is read.
    public init(_ read: @escaping @Sendable () -> Int64) {
        self.read = read
    }

    /// The machine's clock.
    public static let system = WallClock { Int64(Date().timeIntervalSince1970 * 1000) }

    /// A clock stopped at `unixMillis`.
    public static func fixed(_ unixMillis: Int64) -> WallClock {
        WallClock { unixMillis }
    }

    /// The time now, in Unix milliseconds.
    public var unixMillis: Int64 { read() }

    /// This clock, `offset` ahead (behind, for a negative one).
    public func advanced(by offset: Duration) -> WallClock {
        let read = read
        let millis = offset.milliseconds
        return WallClock { read() &+ millis }
    }
}
