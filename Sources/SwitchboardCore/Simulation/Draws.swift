import Foundation

extension SeededRandom {
    /// An independent stream for `stream` under `seed`: the seed and the stream number are mixed through one
    /// SplitMix64 step, so neighbouring seeds or streams do not give shifted copies of one sequence.
    public init(seed: UInt64, stream: UInt64) {
        var mixer = SeededRandom(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        self.init(seed: mixer.next())
    }
}

/// The random draws of the simulator, from a `SeededRandom`.
enum Draw {
    /// Uniform in [0, 1).
    static func unit(_ random: inout SeededRandom) -> Double {
        Double(random.next() >> 11) * 0x1p-53
    }

    /// Exponential with `rate` events per unit: the gap between Poisson arrivals.
    static func exponential(rate: Double, _ random: inout SeededRandom) -> Double {
        -log1p(-unit(&random)) / rate
    }

    /// Standard normal (Box-Muller, one of the pair).
    static func normal(_ random: inout SeededRandom) -> Double {
        let u1 = 1 - unit(&random)  // (0, 1]
        let u2 = unit(&random)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Log-normal with the given mean and sigma of the log.
    static func logNormal(mean: Double, sigma: Double, _ random: inout SeededRandom) -> Double {
        exp(log(mean) - sigma * sigma / 2 + sigma * normal(&random))
    }

    /// An index drawn with probability proportional to `weights` (their running sums).
    static func weighted(_ cumulative: [Double], _ random: inout SeededRandom) -> Int {
        let x = unit(&random) * cumulative[cumulative.count - 1]
        return cumulative.firstIndex { x < $0 } ?? cumulative.count - 1
    }
}
