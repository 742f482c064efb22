/// Puts a call's two channels side by side on the leg's media clock, 20 ms frame by 20 ms frame, for a stereo
/// recording of what the caller said (left) and heard (right). Pure: frames in with the frame slot (20 ms
/// steps from the recording's start) they belong to, stereo frames out in order.
///
/// - The agent's channel is what the playout clock played at each tick (nothing played is silence), so a
///   `clear` that dropped queued audio is cut in the file as it was for the caller, and a stall of the
///   gateway is a gap.
/// - The caller's channel runs on its own sample count from its first frame's arrival: a stall of the network
///   (up to `maxLagFrames`) then a burst writes each frame once, in its place. A longer gap (the caller sent
///   nothing) moves it to where the audio arrives again: real silences are kept. Never a frame is dropped.
/// - A channel that falls more than `maxLagFrames` behind the other is silence for what it missed. What is
///   held is bounded by that lag.
/// - Two of the playout clock's ticks in one slot (a late tick then a prompt one) keep the first; the second
///   is counted in `overlapped`.
/// - At `maxFrames` the recording stops (`capped`).
public struct StereoAligner: Sendable {
    public enum Channel: Sendable { case caller, agent }

    public let frameSamples: Int
    public let maxLagFrames: Int
    public let maxFrames: Int
    /// The next slot to emit.
    public private(set) var next = 0
    public private(set) var overlapped = 0
    public private(set) var capped = false
    private var caller: [Int: [Int16]] = [:]
    private var agent: [Int: [Int16]] = [:]
    private var callerAnchor: Int?
    private var callerFrames = 0
    /// The slot after each channel's latest frame: slots below it are final for that channel (each channel's
    /// slots only grow), a missing frame there is silence.
    private var callerReached = 0
    private var agentReached = 0

    public init(frameSamples: Int, maxLagFrames: Int = 50, maxFrames: Int) {
        self.frameSamples = frameSamples
        self.maxLagFrames = maxLagFrames
        self.maxFrames = maxFrames
    }

    /// One frame of the caller's audio, arrived during `arrivalSlot`.
    public mutating func caller(_ frame: [Int16], arrivalSlot: Int) {
        if let anchor = callerAnchor, arrivalSlot > anchor + callerFrames + maxLagFrames {
            callerAnchor = arrivalSlot - callerFrames  // it sent nothing for a while: the silence is real
        }
        if callerAnchor == nil { callerAnchor = arrivalSlot }
        if callerAnchor! + callerFrames < next { callerAnchor = next - callerFrames }  // its place was given up as silence
        let slot = callerAnchor! + callerFrames
        callerFrames += 1
        put(frame, slot: slot, channel: .caller)
    }

    /// What the caller heard at `slot`: a frame, or nil for silence.
    public mutating func agent(_ frame: [Int16]?, slot: Int) {
        put(frame ?? silence, slot: max(slot, next), channel: .agent)
    }

    private var silence: [Int16] { [Int16](repeating: 0, count: frameSamples) }

    private mutating func put(_ frame: [Int16], slot: Int, channel: Channel) {
        guard !capped else { return }
        // A longer frame than 20 ms (a peer's 40 ms packet) keeps its first 20 ms; a shorter one is padded.
        let frame = frame.count == frameSamples ? frame : Array((frame + silence).prefix(frameSamples))
        switch channel {
        case .caller:
            caller[slot] = frame
            callerReached = max(callerReached, slot + 1)
        case .agent:
            guard agent[slot] == nil else {
                overlapped += 1
                return
            }
            agent[slot] = frame
            agentReached = max(agentReached, slot + 1)
        }
    }

    /// Stereo frames (interleaved, caller left) ready in order: every slot both channels have passed, and those
    /// one channel is more than `maxLagFrames` behind the other on (its missing frame is silence).
    public mutating func take() -> [[Int16]] { emit() }

    /// Everything left, the missing frames silence: the call is over.
    public mutating func finish() -> [[Int16]] { emit(all: true) }

    private mutating func emit(all: Bool = false) -> [[Int16]] {
        let end = max(callerReached, agentReached)
        let settled = min(callerReached, agentReached)
        var out: [[Int16]] = []
        while next < end, !capped {
            guard all || next < settled || end - next > maxLagFrames else { break }
            let left = caller[next], right = agent[next]
            caller[next] = nil
            agent[next] = nil
            out.append(Self.interleave(left ?? silence, right ?? silence))
            next += 1
            if next >= maxFrames { capped = true }
        }
        return out
    }

    static func interleave(_ left: [Int16], _ right: [Int16]) -> [Int16] {
        var out = [Int16](repeating: 0, count: left.count * 2)
        for i in 0..<left.count {
            out[2 * i] = left[i]
            out[2 * i + 1] = right[i]
        }
        return out
    }

    /// One byte per channel for a stereo frame: its loudest sample, 0...255 on a square-root scale (so speech
    /// at -30 dBFS still shows), for the page's waveforms.
    public static func peaks(_ stereo: [Int16]) -> (left: UInt8, right: UInt8) {
        var left = 0, right = 0
        var i = 0
        while i + 1 < stereo.count {
            left = max(left, abs(Int(stereo[i])))
            right = max(right, abs(Int(stereo[i + 1])))
            i += 2
        }
        func scale(_ peak: Int) -> UInt8 { UInt8(min(255, (Double(peak) / 32768).squareRoot() * 255 + 0.5)) }
        return (scale(left), scale(right))
    }
}
