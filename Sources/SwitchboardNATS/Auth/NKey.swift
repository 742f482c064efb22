import CCrypto
import Foundation
import SwitchboardCore

/// A NATS NKey: an Ed25519 key pair whose public key and seed are written as NATS writes them (a type prefix, the
/// key, a CRC-16, in base32: `U...` for a user, `A...` an account, `O...` an operator; seeds `SU...`, `SA...`,
/// `SO...`). Ed25519 through OpenSSL. The seed is a secret: it is never logged.
public struct NKey: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case operator_ = 112  // 'O': 14 << 3
        case account = 0      // 'A'
        case user = 160       // 'U': 20 << 3
    }

    public let kind: Kind
    /// The 32-byte Ed25519 private seed.
    private let rawSeed: [UInt8]
    /// The 32-byte Ed25519 public key.
    private let rawPublic: [UInt8]

    /// A new random key pair.
    public static func generate(_ kind: Kind) throws(SwitchboardError) -> NKey {
        var seed = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&seed, 32) == 1 else { throw SwitchboardError(.internalError, "OpenSSL could not give random bytes") }
        return try NKey(kind: kind, rawSeed: seed)
    }

    private init(kind: Kind, rawSeed: [UInt8]) throws(SwitchboardError) {
        guard let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, rawSeed, 32) else {
            throw SwitchboardError(.internalError, "OpenSSL refused an Ed25519 seed")
        }
        defer { EVP_PKEY_free(key) }
        var length = 32
        var pub = [UInt8](repeating: 0, count: 32)
        guard EVP_PKEY_get_raw_public_key(key, &pub, &length) == 1, length == 32 else {
            throw SwitchboardError(.internalError, "OpenSSL could not give the Ed25519 public key")
        }
        self.kind = kind
        self.rawSeed = rawSeed
        self.rawPublic = pub
    }

    /// Reads an encoded seed (`SU...`, `SA...`, `SO...`).
    public init(seed encoded: String) throws(SwitchboardError) {
        let bad = SwitchboardError(.invalidArgument, "not an NKey seed")
        guard let raw = Base32.decode(encoded.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 36,
              CRC16.xmodem(raw[0..<34]) == UInt16(raw[34]) | UInt16(raw[35]) << 8, raw[0] & 0xF8 == 144 else { throw bad }
        let prefix = (raw[0] & 7) << 5 | (raw[1] >> 3)
        guard let kind = Kind(rawValue: prefix) else { throw bad }
        try self.init(kind: kind, rawSeed: Array(raw[2..<34]))
    }

    /// `U...`, `A...` or `O...`.
    public var publicKey: String { Self.encode([kind.rawValue] + rawPublic) }

    /// `SU...`, `SA...` or `SO...`: the secret.
    public var seed: String { Self.encode([144 | (kind.rawValue >> 5), (kind.rawValue & 31) << 3] + rawSeed) }

    /// The Ed25519 signature of `message`.
    public func sign(_ message: [UInt8]) throws(SwitchboardError) -> [UInt8] {
        guard let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, rawSeed, 32), let context = EVP_MD_CTX_new() else {
            throw SwitchboardError(.internalError, "OpenSSL could not make a signing context")
        }
        defer { EVP_PKEY_free(key); EVP_MD_CTX_free(context) }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = 64
        guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1,
              EVP_DigestSign(context, &signature, &length, message, message.count) == 1, length == 64 else {
            throw SwitchboardError(.internalError, "OpenSSL could not sign with Ed25519")
        }
        return signature
    }

    private static func encode(_ body: [UInt8]) -> String {
        let crc = CRC16.xmodem(body[...])
        return Base32.encode(body + [UInt8(crc & 0xFF), UInt8(crc >> 8)])
    }

    public static func == (a: NKey, b: NKey) -> Bool { a.kind == b.kind && a.rawSeed == b.rawSeed }
}

/// RFC 4648 base32, upper case, no padding (as NKeys and JWT ids use it).
enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer: UInt32 = 0, bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int(buffer >> UInt32(bits - 5)) & 31])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(5 - bits)) & 31]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer: UInt32 = 0, bits = 0
        for c in text.utf8 {
            guard let value = alphabet.firstIndex(of: c) else { return nil }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
        }
        return out
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), NKeys' checksum.
enum CRC16 {
    static func xmodem(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}
