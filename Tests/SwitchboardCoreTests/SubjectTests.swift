import SwitchboardCore
import Testing

@Suite struct SubjectTests {
    @Test(arguments: ["a", "sb.route", "sb.media.c-1.in", "_INBOX.abc.42", "a-b_c.d$e"])
    func validPublishSubjects(_ subject: String) throws {
        try Subject.validate(subject)
    }

    @Test(arguments: ["", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\u{0}b", "a.*", "a.>", "*"])
    func invalidPublishSubjects(_ subject: String) {
        #expect(throws: SwitchboardError.self) { try Subject.validate(subject) }
        do { try Subject.validate(subject) } catch { #expect(error.code == .invalidArgument) }
    }

    @Test func wildcardsOnlyWhereAllowed() throws {
        try Subject.validate("sb.media.*.in", allowWildcards: true)
        try Subject.validate("sb.>", allowWildcards: true)
        try Subject.validate(">", allowWildcards: true)
        for bad in ["sb.>.x", "sb.a*", "sb.*a", "sb.>>"] {
            #expect(throws: SwitchboardError.self, "\(bad)") { try Subject.validate(bad, allowWildcards: true) }
        }
    }

    @Test func lengthLimit() throws {
        try Subject.validate(String(repeating: "a", count: Subject.maxLength))
        #expect(throws: SwitchboardError.self) { try Subject.validate(String(repeating: "a", count: Subject.maxLength + 1)) }
    }

    @Test func queueGroups() throws {
        try Subject.validateQueueGroup("routers")
        for bad in ["", "a b", "a*", ">"] {
            #expect(throws: SwitchboardError.self) { try Subject.validateQueueGroup(bad) }
        }
    }
}
