import Foundation

/// A server address parsed from a URL such as `nats://user:pass@127.0.0.1:4222` or
/// `redis://:secret@localhost:6379/2`. Pure parsing, shared by every client and by the CLI.
public struct Endpoint: Sendable, Hashable {
    public var scheme: String
    public var host: String
    public var port: Int
    public var user: String?
    public var password: String?
    /// The path after the port without its slash (a Redis database number), or nil.
    public var path: String?

    public init(scheme: String, host: String, port: Int, user: String? = nil, password: String? = nil, path: String? = nil) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.path = path
    }

    /// Parses `scheme://[user[:password]@]host[:port][/path]`. A missing scheme or port takes the default. The
    /// user and password are percent-decoded (`%2F` for `/`, `%40` for `@`); a password may also hold `/` or `@`
    /// as they are (the user info runs to the last `@`). No error repeats the password.
    public static func parse(_ text: String, defaultScheme: String, defaultPort: Int) throws(SwitchboardError) -> Endpoint {
        let shown = redact(text)  // what errors may show
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        guard !rest.isEmpty else { throw SwitchboardError(.invalidArgument, "empty server address") }
        var scheme = defaultScheme
        if let range = rest.range(of: "://") {
            scheme = String(rest[..<range.lowerBound]).lowercased()
            rest = rest[range.upperBound...]
        }
        var path: String?
        // The path starts at the first `/` after the user info.
        let hostStart = rest.lastIndex(of: "@").map { rest.index(after: $0) } ?? rest.startIndex
        if let slash = rest[hostStart...].firstIndex(of: "/") {
            let p = rest[rest.index(after: slash)...]
            path = p.isEmpty ? nil : String(p)
            rest = rest[..<slash]
        }
        let (user, password) = takeUserInfo(from: &rest)
        var host = String(rest)
        var port = defaultPort
        if rest.hasPrefix("[") {  // [::1]:4222
            guard let close = rest.firstIndex(of: "]") else {
                throw SwitchboardError(.invalidArgument, "unclosed '[' in server address '\(shown)'")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { port = try parsePort(after.dropFirst(), in: shown) }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            port = try parsePort(rest[rest.index(after: colon)...], in: shown)
        }
        guard !host.isEmpty else { throw SwitchboardError(.invalidArgument, "no host in server address '\(shown)'") }
        return Endpoint(scheme: scheme, host: host, port: port, user: user, password: password, path: path)
    }

    /// Takes `[user][:password]@` off the front of a URL's authority (up to the last `@`, so a password may
    /// hold one); nil for what is not there.
    public static func takeUserInfo(from authority: inout Substring) -> (user: String?, password: String?) {
        guard let at = authority.lastIndex(of: "@") else { return (nil, nil) }
        let info = authority[..<at]
        authority = authority[authority.index(after: at)...]
        func decoded(_ part: Substring) -> String { String(part).removingPercentEncoding ?? String(part) }
        guard let colon = info.firstIndex(of: ":") else { return (decoded(info), nil) }
        return (info[..<colon].isEmpty ? nil : decoded(info[..<colon]), decoded(info[info.index(after: colon)...]))
    }

    /// `text` with any password in its user info (`scheme://user:password@...`) replaced by `***`: for errors
    /// and logs about a URL that may not even parse.
    public static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://"), let at = text[schemeEnd.upperBound...].lastIndex(of: "@") else { return text }
        let info = text[schemeEnd.upperBound..<at]
        guard let colon = info.firstIndex(of: ":") else { return text }
        return String(text[..<info.index(after: colon)]) + "***" + String(text[at...])
    }

    private static func parsePort(_ text: Substring, in whole: String) throws(SwitchboardError) -> Int {
        guard let port = Int(text), (1...65535).contains(port) else {
            throw SwitchboardError(.invalidArgument, "bad port '\(text)' in server address '\(whole)'")
        }
        return port
    }

    /// The address as a URL, with the password hidden, for logs and status output.
    public var redacted: String {
        let auth = user.map { "\($0)\(password == nil ? "" : ":***")@" } ?? (password == nil ? "" : ":***@")
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(auth)\(hostPart):\(port)\(path.map { "/\($0)" } ?? "")"
    }
}
