/// Random identifiers for calls and processes: lowercase hex, safe as a NATS subject token and a Redis key part.
public enum Identifiers {
    /// `prefix` + 24 hex digits (96 random bits).
    public static func random(prefix: String = "", bytes: Int = 12) -> String {
        var rng = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out = Array(prefix.utf8)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &rng)
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
