import CCrypto
import Foundation
import SwitchboardCore

/// NATS JWTs (version 2, `ed25519-nkey`), as the server checks them in operator mode: an operator signs
/// accounts; an account (or one of its signing keys) signs users, and a user's claims carry its permissions.
/// See docs/decisions/0010-closed-bus.md.
public enum NATSJWT {
    /// What a user may publish and subscribe to (NATS subject patterns); `responses`: it may answer the
    /// requests it receives (publish to their reply subjects) without naming them.
    public struct Permissions: Sendable, Equatable {
        public var publish: [String]
        public var subscribe: [String]
        public var responses: Bool
        public init(publish: [String], subscribe: [String], responses: Bool = false) {
            self.publish = publish
            self.subscribe = subscribe
            self.responses = responses
        }
    }

    public static func operatorJWT(name: String, key: NKey, systemAccount: String) throws(SwitchboardError) -> String {
        try encode(claims(name: name, subject: key.publicKey, issuer: key, nats: [
            "type": "operator", "version": 2, "system_account": systemAccount,
        ]), signedBy: key)
    }

    /// A signing key of an account that may sign only users with exactly `template`'s permissions (NATS
    /// "scoped" signing keys): the users it signs carry no permissions of their own, and the server refuses one
    /// that does. `{{name()}}` in the template is the user's name, pasted unchecked by the server.
    public struct ScopedKey: Sendable, Equatable {
        public var key: String
        public var role: String
        public var template: Permissions
        public init(key: String, role: String, template: Permissions) {
            self.key = key
            self.role = role
            self.template = template
        }
    }

    /// An account signed by the operator; `signingKeys` may sign its users, each `scopedKeys` only users of its
    /// template.
    public static func accountJWT(name: String, key: NKey, signedBy operatorKey: NKey, signingKeys: [String] = [],
                                  scopedKeys: [ScopedKey] = []) throws(SwitchboardError) -> String {
        let limits: [String: Any] = ["subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
                                     "conn": -1, "leaf": -1]
        var nats: [String: Any] = ["type": "account", "version": 2, "limits": limits,
                                   "default_permissions": ["pub": [String: Any](), "sub": [String: Any]()]]
        let scoped: [Any] = scopedKeys.map { scope in
            var template: [String: Any] = ["pub": ["allow": scope.template.publish], "sub": ["allow": scope.template.subscribe],
                                           "subs": -1, "data": -1, "payload": -1]
            if scope.template.responses { template["resp"] = ["max": 1, "ttl": 0] }
            return ["kind": "user_scope", "key": scope.key, "role": scope.role, "template": template] as [String: Any]
        }
        if !signingKeys.isEmpty || !scoped.isEmpty { nats["signing_keys"] = signingKeys.map { $0 as Any } + scoped }
        return try encode(claims(name: name, subject: key.publicKey, issuer: operatorKey, nats: nats), signedBy: operatorKey)
    }

    /// A user of `account`, signed by the account's key or one of its signing keys, expiring at `expires`
    /// (Unix seconds) when given: the server closes its connection then.
    /// `permissions` nil: a user of a scoped signing key, whose permissions are the key's template.
    public static func userJWT(name: String, user: String, account: String, signedBy signer: NKey, permissions: Permissions?,
                               expires: Int64? = nil) throws(SwitchboardError) -> String {
        var nats: [String: Any] = ["type": "user", "version": 2]
        if let permissions {
            nats.merge(["subs": -1, "data": -1, "payload": -1, "pub": ["allow": permissions.publish],
                        "sub": ["allow": permissions.subscribe]]) { $1 }
            if permissions.responses { nats["resp"] = ["max": 1, "ttl": 0] }
        }
        if signer.publicKey != account { nats["issuer_account"] = account }
        var body = claims(name: name, subject: user, issuer: signer, nats: nats)
        if let expires { body["exp"] = expires }
        return try encode(body, signedBy: signer)
    }

    /// A `.creds` file: the user's JWT and its seed, as nats.c and the NATS tools read it.
    public static func credentials(jwt: String, seed: String) -> String {
        """
        -----BEGIN NATS USER JWT-----
        \(jwt)
        ------END NATS USER JWT------

        ************************* IMPORTANT *************************
        NKEY Seed printed below can be used to sign and prove identity.
        NKEYs are sensitive and should be treated as secrets.

        -----BEGIN USER NKEY SEED-----
        \(seed)
        ------END USER NKEY SEED------

        """
    }

    private static func claims(name: String, subject: String, issuer: NKey, nats: [String: Any]) -> [String: Any] {
        ["name": name, "sub": subject, "iss": issuer.publicKey, "iat": Int64(Date().timeIntervalSince1970), "nats": nats]
    }

    private static func encode(_ body: [String: Any], signedBy signer: NKey) throws(SwitchboardError) -> String {
        var body = body
        // The id: a hash of the claims without it (as the NATS tools make it).
        body["jti"] = Base32.encode(sha512_256(try json(body)))
        let header = base64URL(Array(#"{"typ":"JWT","alg":"ed25519-nkey"}"#.utf8))
        let signingInput = header + "." + base64URL(try json(body))
        return signingInput + "." + base64URL(try signer.sign(Array(signingInput.utf8)))
    }

    private static func json(_ object: [String: Any]) throws(SwitchboardError) -> [UInt8] {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            throw SwitchboardError(.internalError, "JWT claims cannot be written as JSON")
        }
        return Array(data)
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private static func sha512_256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha512_256(), nil)
        return digest
    }
}
