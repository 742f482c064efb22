import Foundation
import SwitchboardCore

/// A closed bus for one cluster: an operator, a system account and the cluster's account (in NATS operator mode
/// with the built-in memory resolver), one user credential per role with that role's permissions
/// (`BusRole`), and a signing key the routers use to give each call's caller a credential of its own (its media
/// only, for a few hours). Written by `switchboard nats-config`; see docs/security.md.
public struct BusCredentials: Sendable {
    /// A `nats-server` configuration fragment: operator, system account, resolver and its preloaded accounts.
    public let serverConfig: String
    /// A `.creds` file's text per role: shared by every member of the role (routers, operators; workers and
    /// gateways only when no members were named).
    public let roleCredentials: [BusRole: String]
    /// A `.creds` file's text per named member (`worker`/`gateway`, and its id): its own subjects only.
    public let memberCredentials: [Member: String]

    public struct Member: Hashable, Sendable {
        public var role: BusRole
        public var id: String
        public init(_ role: BusRole, _ id: String) {
            self.role = role
            self.id = id
        }
        /// The file it is written to: `worker-w1.creds`.
        public var fileName: String { "\(role.rawValue)-\(id).creds" }
    }
    /// What the routers need to mint per-call media credentials.
    public let mediaSigning: MediaSigningKey
    /// The operator's and the cluster account's seeds: needed only to change the accounts; keep them offline.
    public let operatorSeed: String
    public let accountSeed: String

    /// `members`: workers and gateways each to have a credential of their own (their ids must be plain subject
    /// tokens); a role with members named gets no shared credential.
    public static func generate(subjects: Subjects, name: String = "switchboard", members: [Member] = []) throws(SwitchboardError) -> BusCredentials {
        for member in members {
            guard member.role.hasMembers else { throw SwitchboardError(.invalidArgument, "\(member.role.rawValue)s have no members of their own") }
            do {
                try WireCheck.identifier(member.id, "\(member.role.rawValue) id")  // a plain subject token: no wildcard
            } catch {
                throw SwitchboardError(.invalidArgument, error.message)
            }
        }
        let operatorKey = try NKey.generate(.operator_)
        let system = try NKey.generate(.account), account = try NKey.generate(.account), signing = try NKey.generate(.account)
        let operatorJWT = try NATSJWT.operatorJWT(name: name, key: operatorKey, systemAccount: system.publicKey)
        let systemJWT = try NATSJWT.accountJWT(name: "SYS", key: system, signedBy: operatorKey)
        let accountJWT = try NATSJWT.accountJWT(name: name, key: account, signedBy: operatorKey, signingKeys: [signing.publicKey])
        func credential(_ role: BusRole, member: String?) throws(SwitchboardError) -> String {
            let user = try NKey.generate(.user)
            let p = role.permissions(subjects, member: member)
            let jwt = try NATSJWT.userJWT(name: "\(name)-\(role.rawValue)\(member.map { "-" + $0 } ?? "")", user: user.publicKey,
                                          account: account.publicKey, signedBy: account,
                                          permissions: .init(publish: p.publish, subscribe: p.subscribe, responses: p.responses))
            return NATSJWT.credentials(jwt: jwt, seed: user.seed)
        }
        var roles: [BusRole: String] = [:], memberCredentials: [Member: String] = [:]
        for role in BusRole.allCases where !members.contains(where: { $0.role == role }) {
            roles[role] = try credential(role, member: nil)
        }
        for member in members { memberCredentials[member] = try credential(member.role, member: member.id) }
        let config = """
            # NATS operator mode for the Switchboard cluster '\(name)' (subjects '\(subjects.prefix).*'), written by
            # `switchboard nats-config`. Include it in nats-server.conf. Every client needs a credential: the roles'
            # are beside this file; each call's caller gets its own from the router that placed the call.
            operator: "\(operatorJWT)"
            system_account: "\(system.publicKey)"
            resolver: MEMORY
            resolver_preload: {
              "\(system.publicKey)": "\(systemJWT)"
              "\(account.publicKey)": "\(accountJWT)"
            }

            """
        return BusCredentials(serverConfig: config, roleCredentials: roles, memberCredentials: memberCredentials,
                              mediaSigning: MediaSigningKey(account: account.publicKey, seed: signing.seed),
                              operatorSeed: operatorKey.seed, accountSeed: account.seed)
    }
}

/// The cluster account's signing key, with which a router gives each call's caller a credential of its own.
public struct MediaSigningKey: Codable, Sendable, Equatable {
    public var account: String
    public var seed: String

    public init(account: String, seed: String) {
        self.account = account
        self.seed = seed
    }

    /// Reads the file `nats-config` writes (`{"account": "A...", "seed": "SA..."}`).
    public static func read(_ path: String) throws(SwitchboardError) -> MediaSigningKey {
        guard let data = FileManager.default.contents(atPath: path),
              let key = try? JSONDecoder().decode(MediaSigningKey.self, from: data),
              (try? NKey(seed: key.seed))?.kind == .account, key.account.hasPrefix("A") else {
            throw SwitchboardError(.invalidArgument, "\(path) is not a media signing key (as switchboard nats-config writes it)")
        }
        return key
    }

    /// A credential for one call's caller: publish its audio and its end, receive its audio and events, nothing
    /// else; it expires at `expires` (Unix seconds).
    public func credentials(forCall callID: String, subjects: Subjects, expires: Int64) throws(SwitchboardError) -> NATSConfiguration.Credentials {
        let signer = try NKey(seed: seed)
        let user = try NKey.generate(.user)
        let p = BusRole.call(subjects, callID)
        let jwt = try NATSJWT.userJWT(name: "call-\(callID)", user: user.publicKey, account: account, signedBy: signer,
                                      permissions: .init(publish: p.publish, subscribe: p.subscribe), expires: expires)
        return NATSConfiguration.Credentials(jwt: jwt, seed: user.seed)
    }
}

/// The simpler closed bus: plain NKey users with the same per-role permissions (`authorization { users }`), no
/// accounts. There is no per-call credential in this mode, so gateways may use every call's media.
public struct BusUsers: Sendable {
    public let serverConfig: String
    /// An NKey seed file's text per role.
    public let roleSeeds: [BusRole: String]

    public static func generate(subjects: Subjects) throws(SwitchboardError) -> BusUsers {
        var users: [String] = [], seeds: [BusRole: String] = [:]
        func list(_ subjects: [String]) -> String { "[" + subjects.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
        for role in BusRole.allCases {
            let key = try NKey.generate(.user)
            var p = role.permissions(subjects)
            if role == .gateway {
                p.publish.append(subjects.mediaIn(worker: Subjects.anyWorker, call: "*"))
                p.subscribe.append(subjects.mediaOut(worker: Subjects.anyWorker, call: "*"))
            }
            users.append("""
                    {nkey: "\(key.publicKey)", permissions: {publish: {allow: \(list(p.publish))}, \
                subscribe: {allow: \(list(p.subscribe))}\(p.responses ? ", allow_responses: true" : "")}}  # \(role.rawValue)
                """)
            seeds[role] = key.seed + "\n"
        }
        let config = """
            # NATS users for the Switchboard cluster (subjects '\(subjects.prefix).*'), one NKey per role, written by
            # `switchboard nats-config --users`. Include it in nats-server.conf. Clients sign in with --nats-nkey <role>.nk.
            # (No per-call media credentials in this mode: gateways may use every call's media.)
            authorization {
              users = [
            \(users.joined(separator: "\n"))
              ]
            }

            """
        return BusUsers(serverConfig: config, roleSeeds: seeds)
    }
}

