/// At most `perSecond` events a second on average, `burst` at once. Pure: time is an input.
public struct TokenBucket: Sendable, Equatable {
    public typealias Instant = ContinuousClock.Instant
    public let perSecond: Double
    public let burst: Double
    private var tokens: Double
    private var last: Instant?

    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = Double(burst)
        tokens = Double(burst)
    }

    /// Takes one token if there is one.
    public mutating func take(now: Instant) -> Bool {
        if let last {
            let elapsed = Double((now - last).components.seconds) + Double((now - last).components.attoseconds) / 1e18
            tokens = min(burst, tokens + max(0, elapsed) * perSecond)
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
