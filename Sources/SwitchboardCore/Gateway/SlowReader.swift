/// Judges a caller's socket by its own progress, not by the gateway's queue alone.
///
/// A queue toward the caller can fill for two reasons. One is a caller that stopped reading: its socket takes
/// nothing. The other is a gateway that fell behind: a starved process whose playout clock catches up in a
/// burst, while the caller reads fine. Only the first is a slow reader. So a full queue drops the frame (the
/// caller misses 20 ms), and the leg is closed only when the queue has stayed full for `patience` with no write
/// taken by the socket in between.
public struct SlowReader: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        /// Drop this frame; the leg goes on.
        case drop
        /// The caller has not read for `patience`: close the leg.
        case slowReader
    }

    public let patience: Duration
    /// When the queue was first found full since the socket last took a write.
    private var fullSince: ContinuousClock.Instant?
    public private(set) var dropped = 0

    public init(patience: Duration) {
        self.patience = patience
    }

    /// The socket took a write.
    public mutating func wrote() {
        fullSince = nil
    }

    /// The queue toward the caller is full at `now`.
    public mutating func queueFull(at now: ContinuousClock.Instant) -> Verdict {
        let since = fullSince ?? now
        fullSince = since
        if now - since >= patience { return .slowReader }
        dropped += 1
        return .drop
    }
}
