import SwitchboardOpus

/// Speaks a steady tone for the whole call, one 20 ms frame every 20 ms, and ignores what it hears: load
/// tests and demos get real audio at a real pace. The frequency comes from the call's metadata `tone_hz`
/// (default 440). Its state is the tone generator itself (frequency, phase, samples so far): a call moved to
/// another worker goes on with the same tone from the same phase.
public struct ToneHandler: CallHandler {
    public init() {}

    public func run(_ call: CallContext) async throws {
        let frequency = call.metadata["tone_hz"].flatMap(Double.init).map { min(max($0, 50), 4000) } ?? 440
        var tone = try call.restoredState(as: ToneGenerator.self)
            ?? ToneGenerator(frequency: frequency, sampleRate: call.sampleRate)
        call.save(tone)
        let clock = ContinuousClock()
        var next = clock.now
        // Drain what the caller sends so it does not pile up.
        let listener = Task { for await _ in call.audio {} }
        defer { listener.cancel() }
        while !Task.isCancelled {
            let frame = tone.next(call.frameSamples)
            try call.send(frame, saving: tone)
            next += .milliseconds(20)
            try await Task.sleep(until: next, clock: clock)
        }
    }
}
