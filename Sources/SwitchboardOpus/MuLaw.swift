/// G.711 mu-law, the 8-bit audio of telephony media streams (ITU-T G.711, as Twilio sends and takes it).
public enum MuLaw {
    private static let bias: Int32 = 0x84
    private static let clip: Int32 = 32_635

    /// One 16-bit sample as a mu-law byte.
    @inline(__always)
    public static func encode(_ sample: Int16) -> UInt8 {
        var value = Int32(sample)
        let sign: Int32 = value < 0 ? 0x80 : 0
        if value < 0 { value = -value }
        value = min(value, clip) + bias
        var exponent: Int32 = 7
        var mask: Int32 = 0x4000
        while exponent > 0 && value & mask == 0 {
            exponent -= 1
            mask >>= 1
        }
        let mantissa = (value >> (exponent + 3)) & 0x0F
        return ~UInt8(truncatingIfNeeded: sign | (exponent << 4) | mantissa)
    }

    /// The 256 samples the mu-law bytes stand for.
    public static let decodeTable: [Int16] = (0...255).map { byte in
        let u = ~UInt8(byte)
        let sign = u & 0x80, exponent = Int32((u >> 4) & 0x07), mantissa = Int32(u & 0x0F)
        let magnitude = ((mantissa << 3) + bias) << exponent - bias
        return Int16(sign != 0 ? -magnitude : magnitude)
    }

    public static func encode(_ samples: [Int16]) -> [UInt8] { samples.map(encode) }

    public static func decode(_ bytes: some Sequence<UInt8>) -> [Int16] { bytes.map { decodeTable[Int($0)] } }
}
