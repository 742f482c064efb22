/// Validation of NATS subjects before they reach the wire: the server would close the connection on some
/// malformed subjects, so a bad one is refused here with a coded error.
public enum Subject {
    /// Longest subject we accept. The server has no hard limit; ours keeps a bad caller from sending megabytes.
    public static let maxLength = 512

    /// Throws `.invalidArgument` unless `subject` is a valid subject to publish to (no wildcards) or, with
    /// `allowWildcards`, to subscribe to (`*` as a whole token, `>` as the last token).
    public static func validate(_ subject: String, allowWildcards: Bool = false) throws(SwitchboardError) {
        let bytes = subject.utf8
        guard !bytes.isEmpty else { throw invalid(subject, "is empty") }
        guard bytes.count <= maxLength else {
            throw SwitchboardError(.invalidArgument, "subject is \(bytes.count) bytes, over the limit of \(maxLength)")
        }
        let tokens = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for (index, token) in tokens.enumerated() {
            guard !token.isEmpty else { throw invalid(subject, "has an empty token") }
            if token.contains(where: { $0 <= 32 || $0 == 127 }) {
                throw invalid(subject, "contains whitespace or a control character")
            }
            let hasWildcard = token.contains(UInt8(ascii: "*")) || token.contains(UInt8(ascii: ">"))
            guard hasWildcard else { continue }
            guard allowWildcards else { throw invalid(subject, "contains a wildcard") }
            guard token.count == 1 else { throw invalid(subject, "has a wildcard inside a token") }
            if token.first == UInt8(ascii: ">") && index != tokens.count - 1 {
                throw invalid(subject, "has tokens after '>'")
            }
        }
    }

    /// Throws `.invalidArgument` unless `name` is a valid queue group name.
    public static func validateQueueGroup(_ name: String) throws(SwitchboardError) {
        guard !name.isEmpty, name.utf8.count <= maxLength,
              !name.utf8.contains(where: { $0 <= 32 || $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: ">") })
        else { throw SwitchboardError(.invalidArgument, "invalid queue group name '\(name.prefix(64))'") }
    }

    private static func invalid(_ subject: String, _ why: String) -> SwitchboardError {
        SwitchboardError(.invalidArgument, "invalid subject '\(subject.prefix(64))': \(why)")
    }
}
