import Foundation

/// What a gateway sees of one caller's leg, as timeline events on the leg's media clock: speech starting and
/// stopping on each channel (the caller's audio as it arrives, the agent's as the caller hears it), each turn's
/// response latency, and every few seconds how the agent's audio fared (played, concealed, lost, late, jitter).
/// Pure: the gateway feeds it each 20 ms frame's loudness and the jitter buffer's counts.
public struct LegObserver: Sendable {
    public let member: String
    public var statsEvery: Int64
    private var caller = SpeechDetector()
    private var agent = SpeechDetector()
    private var turns = TurnTracker()
    private var lastStats = JitterBuffer.Stats()
    private var lastStatsAt: Int64?

    public init(member: String, statsEveryMillis: Int64 = 5_000) {
        self.member = member
        statsEvery = statsEveryMillis
    }

    /// One frame of the caller's audio, arrived at `atMillis`.
    public mutating func caller(rms: Double, atMillis: Int64) -> [TimelineEvent] {
        guard let change = caller.frame(rms: rms, atMillis: atMillis) else { return [] }
        turns.caller(change)
        return [speech(change, "caller")]
    }

    /// One frame toward the caller at `atMillis` (rms 0 for a frame with nothing to play), with the jitter
    /// buffer's counts so far and its jitter estimate.
    public mutating func agent(rms: Double, atMillis: Int64, stats: JitterBuffer.Stats, jitterMillis: Double) -> [TimelineEvent] {
        var events: [TimelineEvent] = []
        if let change = agent.frame(rms: rms, atMillis: atMillis) {
            events.append(speech(change, "agent"))
            if let turn = turns.agent(change) {
                events.append(event("turn", at: turn.agentStartedAt, ["number": "\(turn.number)", "latency_ms": "\(turn.latencyMillis)",
                                                                      "caller_stopped_at_ms": "\(turn.callerStoppedAt)"]))
            }
        }
        let since = lastStatsAt ?? atMillis
        if lastStatsAt == nil { lastStatsAt = atMillis }
        if atMillis - since >= statsEvery {
            events.append(event("media", at: atMillis, [
                "played": "\(stats.played - lastStats.played)", "concealed": "\(stats.concealed - lastStats.concealed)",
                "lost": "\(stats.lost - lastStats.lost)", "late": "\(stats.late - lastStats.late)",
                "dropped": "\(stats.dropped - lastStats.dropped)", "jitter_ms": String(format: "%.1f", jitterMillis),
                "window_ms": "\(atMillis - since)",
            ]))
            lastStats = stats
            lastStatsAt = atMillis
        }
        return events
    }

    /// The leg is over: speech under way on either channel stops.
    public mutating func finish() -> [TimelineEvent] {
        [caller.finish().map { speech($0, "caller") }, agent.finish().map { speech($0, "agent") }].compactMap { $0 }
    }

    /// An event of this gateway at `at`.
    private func event(_ type: String, at: Int64, _ attributes: [String: String] = [:]) -> TimelineEvent {
        TimelineEvent(atMillis: at, source: .gateway, member: member, type: type, attributes: attributes)
    }

    private func speech(_ change: SpeechDetector.Change, _ channel: String) -> TimelineEvent {
        switch change {
        case .started(let at): event("speech_started", at: at, ["channel": channel])
        case .stopped(let at): event("speech_stopped", at: at, ["channel": channel])
        }
    }
}
