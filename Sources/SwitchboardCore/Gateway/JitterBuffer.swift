/// The gateway's playout toward a caller: the call's packets in, one 20 ms frame out per tick, in order.
///
/// - It holds a few packets back (`target` frames, adapted to the measured arrival jitter, RFC 3550's estimate)
///   so that uneven arrival does not become gaps.
/// - A missing packet among later ones is concealed (the codec's loss concealment) and skipped.
/// - When the packets stop (a move, a stall), a few frames are concealed and then nothing is played until the
///   buffer has its target again: a gap, never a burst.
/// - A packet older than the one played last is late and dropped; when more than `target + slack` frames wait
///   (a burst after a stall), the oldest are dropped, so the caller never hears stale audio.
/// - A jump in sequence numbers (the call resumed on another worker, which skips the packets the caller never
///   got) is followed at once.
///
/// Pure: the shell gives it packets with their arrival time and ticks it every 20 ms.
public struct JitterBuffer: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Frames held back at least and at most (20 ms each).
        public var minDepth = 2
        public var maxDepth = 6
        /// Frames beyond the target that may wait before the oldest are dropped.
        public var slack = 3
        /// Frames concealed after the packets stop, before playing nothing.
        public var concealFrames = 3
        /// A gap in sequence numbers wider than this, with later packets waiting, is a jump to follow, not loss.
        public var jumpFrames = 5
        public init() {}
    }

    public enum Output: Sendable, Equatable {
        /// Play this packet.
        case packet(MediaPacket)
        /// Play the codec's concealment of a missing frame.
        case conceal
        /// Play nothing (before the first packet, or after a gap outlasted its concealment).
        case nothing
    }

    public enum Insert: Sendable, Equatable {
        case queued
        /// Older than what has been played: dropped.
        case late
        case duplicate
        /// Queued, and this many of the oldest were dropped to keep the delay bounded.
        case trimmed(Int)
    }

    public struct Stats: Sendable, Equatable {
        public var played = 0
        public var concealed = 0
        public var lost = 0
        public var late = 0
        public var dropped = 0
        public init() {}
    }

    public let settings: Settings
    /// Waiting packets, sorted by sequence number (unwrapped).
    private var queue: [(seq: Int64, packet: MediaPacket)] = []
    /// The next sequence number to play (unwrapped); nil before the first packet is played.
    private var next: Int64?
    /// Frames concealed in a row since the last packet played.
    private var missing = 0
    /// Whether frames are being played (false before the first and after a gap, until the target is queued).
    public private(set) var playing = false
    /// Interarrival jitter in milliseconds (RFC 3550, 6.4.1).
    public private(set) var jitterMillis = 0.0
    private var last: (arrival: Double, timestamp: Int64)?
    public private(set) var stats = Stats()

    public init(settings: Settings = Settings()) { self.settings = settings }

    /// Frames held back before playing starts, from the jitter: enough to cover about three times it.
    public var target: Int {
        min(settings.maxDepth, settings.minDepth + Int((3 * jitterMillis / 20).rounded(.up)))
    }

    public var depth: Int { queue.count }

    /// Takes a packet that arrived at `arrivalMillis` (any monotonic clock).
    public mutating func insert(_ packet: MediaPacket, arrivalMillis: Double) -> Insert {
        let seq = unwrap(packet.sequence)
        let ts = unwrapTimestamp(packet.timestamp)
        if let last {
            // D = difference of arrival spacing and sending spacing (timestamps tick at 48 kHz).
            let d = abs((arrivalMillis - last.arrival) - Double(ts - last.timestamp) / 48)
            if d < 1_000 { jitterMillis += (d - jitterMillis) / 16 }  // a move's jump is not jitter
        }
        last = (arrivalMillis, ts)
        if let next, seq < next {
            // Older than what has been played, unless it is a jump backwards to follow (a resumed call whose
            // numbering restarted): only when nothing newer waits.
            if next - seq <= Int64(settings.jumpFrames) * 4 || !queue.isEmpty {
                stats.late += 1
                return .late
            }
            self.next = nil
            playing = false
        }
        var i = queue.count
        while i > 0 && queue[i - 1].seq > seq { i -= 1 }
        if i > 0 && queue[i - 1].seq == seq { return .duplicate }
        queue.insert((seq, packet), at: i)
        let limit = target + settings.slack
        guard queue.count > limit else { return .queued }
        let excess = queue.count - target
        queue.removeFirst(excess)
        stats.dropped += excess
        if playing { next = queue.first?.seq }
        return .trimmed(excess)
    }

    /// The next 20 ms frame.
    public mutating func tick() -> Output {
        if !playing {
            guard queue.count >= target, let first = queue.first else { return .nothing }
            playing = true
            next = first.seq
        }
        guard var next else { return .nothing }
        if let first = queue.first, first.seq == next {
            return play()
        }
        if let first = queue.first {
            if first.seq < next {  // cannot stay: played past it
                queue.removeFirst()
                return tick()
            }
            if first.seq - next > Int64(settings.jumpFrames) {
                self.next = first.seq  // a jump (a move): follow it
                return play()
            }
            // A packet lost (or later than the others): conceal it and go on.
            next += 1
            self.next = next
            stats.lost += 1
            return conceal()
        }
        // Nothing waiting: the packets stopped, or this one is late.
        next += 1
        self.next = next
        return conceal()
    }

    /// Drops everything queued (the agent was interrupted: its queued audio must not play).
    public mutating func clear() {
        stats.dropped += queue.count
        queue.removeAll()
        playing = false
        missing = 0
    }

    private mutating func play() -> Output {
        let packet = queue.removeFirst().packet
        next = unwrap(packet.sequence) + 1
        missing = 0
        stats.played += 1
        return .packet(packet)
    }

    private mutating func conceal() -> Output {
        missing += 1
        guard missing <= settings.concealFrames else {
            playing = false
            return .nothing
        }
        stats.concealed += 1
        return .conceal
    }

    /// Sequence numbers as a line that does not wrap, near the last one seen.
    private var reference: Int64?
    private mutating func unwrap(_ sequence: UInt32) -> Int64 {
        let value = Self.near(reference, sequence)
        reference = value
        return value
    }

    private var timestampReference: Int64?
    private mutating func unwrapTimestamp(_ timestamp: UInt32) -> Int64 {
        let value = Self.near(timestampReference, timestamp)
        timestampReference = value
        return value
    }

    static func near(_ reference: Int64?, _ value: UInt32) -> Int64 {
        guard let reference else { return Int64(value) }
        let delta = Int64(Int32(bitPattern: value &- UInt32(truncatingIfNeeded: reference)))
        return reference + delta
    }
}
