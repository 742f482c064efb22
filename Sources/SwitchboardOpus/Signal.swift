import Foundation

/// A sine tone produced frame by frame, its phase carried from one frame to the next so the tone is
/// continuous. A value, so a call can checkpoint it and resume the tone where it was.
public struct ToneGenerator: Codable, Sendable, Equatable {
    public var frequency: Double
    public var sampleRate: Int
    /// Peak amplitude, 0 ... 32767.
    public var amplitude: Double
    /// Phase in cycles, 0 ..< 1.
    public private(set) var phase: Double = 0
    /// Samples produced so far.
    public private(set) var samplesProduced: Int64 = 0

    public init(frequency: Double = 440, sampleRate: Int = 48_000, amplitude: Double = 8_000) {
        self.frequency = frequency
        self.sampleRate = sampleRate
        self.amplitude = amplitude
    }

    /// The next `count` samples of the tone.
    public mutating func next(_ count: Int) -> [Int16] {
        let step = frequency / Double(sampleRate)
        var out = [Int16](repeating: 0, count: count)
        for i in 0..<count {
            out[i] = Int16(amplitude * sin(2 * .pi * phase))
            phase += step
            if phase >= 1 { phase -= 1 }
        }
        samplesProduced += Int64(count)
        return out
    }
}

/// Measures a signal: its energy and its dominant frequency. For tests and demos that check that audio
/// came through a codec round trip as the same sound, not just as bytes.
public enum SignalAnalysis {
    /// Root mean square of the samples.
    public static func rms(_ samples: [Int16]) -> Double {
        guard !samples.isEmpty else { return 0 }
        let sum = samples.reduce(0.0) { $0 + Double($1) * Double($1) }
        return (sum / Double(samples.count)).squareRoot()
    }

    /// Power of `samples` at `frequency` (Goertzel), normalised by length.
    public static func power(_ samples: [Int16], at frequency: Double, sampleRate: Int) -> Double {
        let coefficient = 2 * cos(2 * .pi * frequency / Double(sampleRate))
        var s1 = 0.0, s2 = 0.0
        for sample in samples {
            let s0 = Double(sample) + coefficient * s1 - s2
            s2 = s1
            s1 = s0
        }
        let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
        return power / Double(samples.count * samples.count)
    }

    /// The frequency with the most power among `from`...`to`, to within `step` Hz: a 10 Hz sweep, then a fine
    /// sweep around its best (a pure tone's power falls off steadily away from its frequency).
    public static func dominantFrequency(_ samples: [Int16], sampleRate: Int, from: Double = 50, to: Double = 4_000,
                                         step: Double = 0.5) -> Double {
        func best(_ from: Double, _ to: Double, _ step: Double) -> Double {
            var best = (frequency: from, power: -1.0)
            var f = from
            while f <= to {
                let p = power(samples, at: f, sampleRate: sampleRate)
                if p > best.power { best = (f, p) }
                f += step
            }
            return best.frequency
        }
        let coarse = best(from, to, Swift.max(step, 10))
        return best(Swift.max(from, coarse - 10), Swift.min(to, coarse + 10), step)
    }
}
