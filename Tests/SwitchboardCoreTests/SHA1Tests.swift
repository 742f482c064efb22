import SwitchboardCore
import Testing

@Suite struct SHA1Tests {
    @Test func knownVectors() {
        #expect(SHA1.hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(SHA1.hex(String(repeating: "a", count: 1000)) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
        // Redis names `return 1` by this SHA (SCRIPT LOAD "return 1").
        #expect(SHA1.hex("return 1") == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
