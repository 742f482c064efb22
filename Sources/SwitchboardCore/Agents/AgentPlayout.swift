/// The audio an agent has queued for its caller, played out one 20 ms frame per tick, with the agent's marks
/// in between (Twilio Media Streams' playout rules, as a value):
/// - audio arrives in pieces of any length and leaves in frames of `frameSamples`; a piece shorter than a frame
///   waits one tick for more before it is sent padded with silence (the end of a sentence, or a late agent);
/// - a mark is returned once every sample queued before it has left, at once when nothing is queued before it;
/// - `clear` drops everything queued at once and returns the marks that were waiting, in order (barge-in).
/// The queue is bounded: audio beyond `maxQueuedSamples` is dropped and counted, not buffered without end.
public struct AgentPlayout: Sendable {
    /// What one tick sends: a frame (nil when nothing is queued) and the marks to return after it, in order.
    public struct Tick: Equatable, Sendable {
        public var frame: [Int16]?
        public var marks: [String]

        public init(frame: [Int16]?, marks: [String]) {
            self.frame = frame
            self.marks = marks
        }
    }

    private enum Item: Sendable {
        case audio([Int16])
        case mark(String)
    }

    public let frameSamples: Int
    public let maxQueuedSamples: Int
    private var items: [Item] = []
    /// Index of the first item still queued, and how far into it (an audio item) playout has got.
    private var head = 0
    private var offset = 0
    public private(set) var queuedSamples = 0
    /// Samples dropped for the queue being full.
    public private(set) var droppedSamples = 0
    /// Last tick had less than a frame queued and sent nothing: this one sends what there is.
    private var waitedForMore = false

    /// 8 kHz, 20 ms frames, at most 30 s queued (an agent paces its audio at real time; 30 s is far ahead).
    public init(frameSamples: Int = 160, maxQueuedSamples: Int = 8_000 * 30) {
        precondition(frameSamples > 0 && maxQueuedSamples >= frameSamples)
        self.frameSamples = frameSamples
        self.maxQueuedSamples = maxQueuedSamples
    }

    public var isEmpty: Bool { head == items.count }

    /// Queues audio; what would overflow the queue is dropped (and counted).
    public mutating func enqueue(_ samples: [Int16]) {
        let room = maxQueuedSamples - queuedSamples
        let kept = samples.count <= room ? samples : Array(samples.prefix(room))
        droppedSamples += samples.count - kept.count
        guard !kept.isEmpty else { return }
        queuedSamples += kept.count
        items.append(.audio(kept))
    }

    /// Queues a mark; returns it at once when no audio is queued before it.
    public mutating func enqueue(mark name: String) -> [String] {
        guard queuedSamples > 0 else { return releaseLeadingMarks() + [name] }
        items.append(.mark(name))
        return []
    }

    /// Drops every queued sample now; returns the marks that waited, in order.
    public mutating func clear() -> [String] {
        var marks: [String] = []
        for item in items[head...] { if case .mark(let name) = item { marks.append(name) } }
        items.removeAll(keepingCapacity: true)
        head = 0
        offset = 0
        queuedSamples = 0
        waitedForMore = false
        return marks
    }

    /// One tick of playout (every 20 ms): the next frame, and the marks whose audio has now all left.
    public mutating func tick() -> Tick {
        let available = samplesBeforeNextMark(upTo: frameSamples)
        guard available > 0 else {
            waitedForMore = false
            return Tick(frame: nil, marks: releaseLeadingMarks())
        }
        // Less than a frame, and no mark right after it that it would hold back: give the agent one tick to send more.
        if available < frameSamples && !markFollowsQueuedAudio && !waitedForMore {
            waitedForMore = true
            return Tick(frame: nil, marks: [])
        }
        waitedForMore = false
        var frame = [Int16]()
        frame.reserveCapacity(frameSamples)
        while frame.count < frameSamples, head < items.count, case .audio(let samples) = items[head] {
            let take = min(frameSamples - frame.count, samples.count - offset)
            frame.append(contentsOf: samples[offset..<offset + take])
            offset += take
            if offset == samples.count {
                head += 1
                offset = 0
            }
        }
        queuedSamples -= frame.count
        if frame.count < frameSamples { frame.append(contentsOf: repeatElement(0, count: frameSamples - frame.count)) }
        let marks = releaseLeadingMarks()
        compact()
        return Tick(frame: frame, marks: marks)
    }

    /// Audio queued before the first mark (or the end), from the playout position, counted up to `limit` (a
    /// frame: every tick asks, and 30 s of small pieces need not be walked for it).
    private func samplesBeforeNextMark(upTo limit: Int) -> Int {
        var total = 0, index = head
        while total < limit, index < items.count, case .audio(let samples) = items[index] {
            total += samples.count - (index == head ? offset : 0)
            index += 1
        }
        return total
    }

    /// A mark waits behind the audio queued now.
    private var markFollowsQueuedAudio: Bool {
        var index = head
        while index < items.count, case .audio = items[index] { index += 1 }
        return index < items.count
    }

    private mutating func releaseLeadingMarks() -> [String] {
        var marks: [String] = []
        while head < items.count, case .mark(let name) = items[head] {
            marks.append(name)
            head += 1
        }
        compact()
        return marks
    }

    private mutating func compact() {
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 {
            items.removeFirst(head)
            head = 0
        }
    }
}
