import Foundation
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import Synchronization
import WSCore

/// Where a caller comes from: a carrier's media stream or the gateway's browser page.
public enum LegKind: String, Sendable, CaseIterable {
    case twilio, browser

    /// The caller's audio rate: mu-law is 8 kHz; the browser page sends wideband.
    var sampleRate: Int { self == .twilio ? 8_000 : BrowserStream.sampleRate }
    var frameSamples: Int { sampleRate / 50 }
}

/// What goes to the caller's socket, in order.
enum Outgoing: Sendable {
    case text(String)
    case binary([UInt8])
    case close(WebSocketErrorCode, String)
}

/// One caller's leg: its machine, its playout and its codecs under one lock, and the queues toward its
/// socket (`outgoing`, bounded: a caller that does not read is closed) and toward its task group (`jobs`).
final class Leg: Sendable {
    let kind: LegKind
    let tenant: String
    let started = ContinuousClock.now
    /// The leg's media clock: Unix milliseconds at `started` (the gateway's wall clock), so its timeline events
    /// line up with its audio.
    let startedUnixMillis: Int64

    struct Call {
        let placement: Placement
        /// The call's own connection on a closed bus, or the gateway's.
        let nats: NATSConnection
        let owned: Bool
        let leg: CallLeg
        let audioOut: NATSSubscription
    }

    struct State {
        var machine: LegMachine
        var jitter = JitterBuffer()
        var call: Call?
        var logger: Logger
        var metadata: [String: String] = [:]
        /// Twilio's stream id, quoted for JSON.
        var quotedStreamSid = "\"\""
        /// The caller's audio, toward the call: samples waiting for a whole frame, the encoder, the numbering.
        var pending: [Int16] = []
        var encoder: OpusEncoder?
        var sequence: UInt32 = 0
        /// The call's audio, toward the caller.
        var decoder: OpusDecoder?
        var flood: TokenBucket
        /// What the leg's audio shows (speech, turns, playout), for the call's timeline.
        var observer: LegObserver
        /// Timeline events seen before the call was placed (its id not known yet); at most `maxEarlyEvents`.
        var earlyEvents: [TimelineEvent] = []
        /// The close reached the socket (a caller's queue that was full when the leg closed drops it).
        var closeWritten = false
        /// The call's recording, when its tenant's calls are recorded.
        var recording: Recording?
        /// Whether a full queue toward the caller is the caller's fault (its socket takes nothing).
        var reader: SlowReader
    }

    let state: Mutex<State>
    /// The leg's call as a span (its trace's root), when the gateway traces.
    let span: Span?
    let outgoing: AsyncStream<Outgoing>
    private let out: AsyncStream<Outgoing>.Continuation
    let jobs: AsyncStream<@Sendable () async -> Void>
    private let jobsIn: AsyncStream<@Sendable () async -> Void>.Continuation

    init(kind: LegKind, tenant: String, gatewayID: String, maxQueuedFrames: Int, slowReaderPatience: Duration,
         startedUnixMillis: Int64, logger: Logger, span: Span? = nil) {
        self.kind = kind
        self.startedUnixMillis = startedUnixMillis
        self.span = span
        self.tenant = tenant
        state = Mutex(State(machine: LegMachine(waitsForStart: kind == .twilio), logger: logger,
                            // Twilio sends 50 messages a second; a few times that in bursts is still a caller.
                            flood: TokenBucket(perSecond: 200, burst: 400), observer: LegObserver(member: gatewayID),
                            reader: SlowReader(patience: slowReaderPatience)))
        (outgoing, out) = AsyncStream.makeStream(of: Outgoing.self, bufferingPolicy: .bufferingOldest(maxQueuedFrames))
        (jobs, jobsIn) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
    }

    static let maxEarlyEvents = 16

    /// `instant` on the leg's media clock (Unix milliseconds).
    func mediaMillis(_ instant: ContinuousClock.Instant = .now) -> Int64 { startedUnixMillis + (instant - started).milliseconds }

    var logger: Logger { state.withLock { $0.logger } }
    var callID: String? { state.withLock { $0.call?.placement.callID } }

    /// Queues a message toward the caller; false when the queue is full (the caller does not read).
    @discardableResult
    func send(_ message: Outgoing) -> Bool {
        if case .dropped = out.yield(message) { return false }
        return true
    }

    /// The caller's socket took a write: a full queue is not the caller's fault while it does (`SlowReader`).
    func wrote() { state.withLock { $0.reader.wrote() } }

    /// Queues the close and ends the queue; the leg's task group ends once it is written (or in 2 s).
    func close(_ code: WebSocketErrorCode, _ reason: String) {
        out.yield(.close(code, reason))
        out.finish()
        run { [self] in
            try? await Task.sleep(for: .seconds(2))  // a caller that never reads gets no longer than this
            finish()
        }
    }

    /// Runs `job` in the leg's task group.
    func run(_ job: @escaping @Sendable () async -> Void) { jobsIn.yield(job) }

    /// Ends the leg's task group.
    func finish() { jobsIn.finish() }
}
