import CSpeexDSP
import SwitchboardCore

/// Converts mono 16-bit PCM from one sample rate to another with libspeexdsp's resampler (the callers' 48 kHz
/// and a telephony agent's 8 kHz). A stream: it keeps its filter's history from one call of `process` to the
/// next, so frames fed one at a time come out as one continuous signal.
///
/// Owns its `SpeexResamplerState *` and frees it once. Not thread-safe: one resampler belongs to one direction
/// of one call.
public final class Resampler {
    private let handle: OpaquePointer
    public let inputRate: Int
    public let outputRate: Int
    private var output: [Int16]

    /// `quality` 0 ... 10; 3 is speexdsp's VoIP setting (about 0.1% of a core per 8 kHz <-> 48 kHz stream pair).
    public init(from inputRate: Int, to outputRate: Int, quality: Int = 3) throws(SwitchboardError) {
        guard (8_000...192_000).contains(inputRate), (8_000...192_000).contains(outputRate), (0...10).contains(quality) else {
            throw SwitchboardError(.invalidArgument, "resampler from \(inputRate) Hz to \(outputRate) Hz at quality \(quality) is out of range")
        }
        var status: Int32 = 0
        guard let state = speex_resampler_init(1, spx_uint32_t(inputRate), spx_uint32_t(outputRate), Int32(quality), &status),
              status == 0 else {
            let text = speex_resampler_strerror(status).map { String(cString: $0) } ?? "status \(status)"
            throw SwitchboardError(.codecError, "cannot create a resampler: \(text)", context: ["speexdsp_status": "\(status)"])
        }
        handle = state
        self.inputRate = inputRate
        self.outputRate = outputRate
        output = []
    }

    deinit { speex_resampler_destroy(handle) }

    /// Resamples `samples`; the result holds `samples.count * outputRate / inputRate` samples (exactly, for whole
    /// 20 ms frames between 8, 16 and 48 kHz), delayed by the filter's latency (under a millisecond at quality 3).
    public func process(_ samples: [Int16]) -> [Int16] {
        guard !samples.isEmpty else { return [] }
        let capacity = samples.count * outputRate / inputRate + 64
        if output.count < capacity { output = [Int16](repeating: 0, count: capacity) }
        var inLength = spx_uint32_t(samples.count)
        var outLength = spx_uint32_t(capacity)
        samples.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                _ = speex_resampler_process_int(handle, 0, input.baseAddress, &inLength, out.baseAddress, &outLength)
            }
        }
        return Array(output[0..<Int(outLength)])
    }
}
