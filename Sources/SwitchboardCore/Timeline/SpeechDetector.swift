/// Voice activity on one channel of a call, from its 20 ms frames' loudness: speech starts with `onFrames`
/// loud frames in a row and stops after `hangoverFrames` quiet ones, so a breath inside a sentence is not an
/// end. Times are the caller's leg's media clock, in milliseconds. Pure: the gateway feeds it frame by frame.
public struct SpeechDetector: Sendable, Equatable {
    public enum Change: Sendable, Equatable {
        /// Speech began with the first loud frame of the run.
        case started(atMillis: Int64)
        /// Speech ended with the last loud frame's end.
        case stopped(atMillis: Int64)
    }

    /// RMS (of 32,767) above which a frame is loud: about -36 dBFS.
    public var threshold: Double
    public var onFrames: Int
    public var hangoverFrames: Int
    public private(set) var speaking = false
    private var loudRun = 0
    private var runStart: Int64 = 0
    private var quietRun = 0
    private var lastLoudEnd: Int64 = 0

    public init(threshold: Double = 500, onFrames: Int = 3, hangoverFrames: Int = 15) {
        self.threshold = threshold
        self.onFrames = onFrames
        self.hangoverFrames = hangoverFrames
    }

    /// One frame of `durationMillis` starting at `atMillis`, of loudness `rms`.
    public mutating func frame(rms: Double, atMillis: Int64, durationMillis: Int64 = 20) -> Change? {
        let loud = rms >= threshold
        if loud {
            if loudRun == 0 { runStart = atMillis }
            loudRun += 1
            quietRun = 0
            lastLoudEnd = atMillis + durationMillis
            if !speaking && loudRun >= onFrames {
                speaking = true
                return .started(atMillis: runStart)
            }
        } else {
            loudRun = 0
            quietRun += 1
            if speaking && quietRun >= hangoverFrames {
                speaking = false
                return .stopped(atMillis: lastLoudEnd)
            }
        }
        return nil
    }

    /// Ends speech under way (the call ended): its stop, if it was speaking.
    public mutating func finish() -> Change? {
        guard speaking else { return nil }
        speaking = false
        loudRun = 0
        return .stopped(atMillis: lastLoudEnd)
    }
}

/// Turns of a call from both channels' speech: each time the agent starts speaking after the caller stopped,
/// the response latency is the gap between the two (caller's speech end to the agent's first audio), on one
/// media clock. A caller who speaks again before the agent answers is still in the same turn.
public struct TurnTracker: Sendable, Equatable {
    public struct Turn: Sendable, Equatable {
        public var number: Int
        public var callerStoppedAt: Int64
        public var agentStartedAt: Int64
        public var latencyMillis: Int64 { agentStartedAt - callerStoppedAt }
        public init(number: Int, callerStoppedAt: Int64, agentStartedAt: Int64) {
            self.number = number
            self.callerStoppedAt = callerStoppedAt
            self.agentStartedAt = agentStartedAt
        }
    }

    private var callerStoppedAt: Int64?
    private var callerSpeaking = false
    public private(set) var turns = 0

    public init() {}

    public mutating func caller(_ change: SpeechDetector.Change) {
        switch change {
        case .started:
            callerSpeaking = true
            callerStoppedAt = nil
        case .stopped(let at):
            callerSpeaking = false
            callerStoppedAt = at
        }
    }

    /// The agent's speech changed: a new turn when it starts answering a caller who has stopped.
    public mutating func agent(_ change: SpeechDetector.Change) -> Turn? {
        guard case .started(let at) = change, !callerSpeaking, let stopped = callerStoppedAt, at >= stopped else { return nil }
        callerStoppedAt = nil
        turns += 1
        return Turn(number: turns, callerStoppedAt: stopped, agentStartedAt: at)
    }
}
