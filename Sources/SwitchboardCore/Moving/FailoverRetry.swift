/// When to try again to take on a dead worker's call, and when to give up. Pure: time is an input.
///
/// A call is never ended for lack of room at one instant: capacity appears as calls end and workers start
/// (an autoscaler's new pod takes seconds). Attempts back off from `first` to `longest` until `window` has
/// passed since the first; only then is the call lost (`worker_lost`). `longest` is short: while a call waits,
/// routers keep freed slots for it (`RouterState`), and its caller hears nothing until its next attempt.
public struct FailoverRetry: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant

    public struct Configuration: Sendable, Equatable {
        public var window: Duration = .seconds(30)
        public var first: Duration = .milliseconds(250)
        public var longest: Duration = .milliseconds(500)
        public init(window: Duration = .seconds(30), first: Duration = .milliseconds(250), longest: Duration = .milliseconds(500)) {
            self.window = window
            self.first = first
            self.longest = longest
        }
    }

    public enum Decision: Equatable, Sendable {
        case retry(at: Instant)
        case giveUp(attempts: Int)
    }

    public let configuration: Configuration
    public let started: Instant
    public private(set) var attempts = 0
    private var delay: Duration

    public init(configuration: Configuration = Configuration(), now: Instant) {
        self.configuration = configuration
        started = now
        delay = configuration.first
    }

    /// An attempt found no worker to take the call (or could not reach one).
    public mutating func attemptFailed(now: Instant) -> Decision {
        attempts += 1
        let end = started + configuration.window
        guard now < end else { return .giveUp(attempts: attempts) }
        let next = min(now + delay, end)
        delay = min(delay * 2, configuration.longest)
        return .retry(at: next)
    }
}
