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
    /// What the routers need to mint per-call media credentials: a key scoped to one call's subjects.
    public let mediaSigning: SigningKey
    /// Keys that mint one member's credential (a worker's, a gateway's) and nothing wider, for fleets whose ids
    /// are known only at start (`switchboard nats-credential`; a Kubernetes init step).
    public let memberSigning: [BusRole: SigningKey]
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
        let system = try NKey.generate(.account), account = try NKey.generate(.account)
        let callKey = try NKey.generate(.account), workerKey = try NKey.generate(.account), gatewayKey = try NKey.generate(.account)
        // Each minting key signs only users of its template: `{{name()}}` is the minted user's name (the call's
        // id, the member's id).
        func template(_ p: BusRole.Permissions) -> NATSJWT.Permissions {
            NATSJWT.Permissions(publish: p.publish, subscribe: p.subscribe, responses: p.responses)
        }
        let named = "{{name()}}"
        let scoped = [
            NATSJWT.ScopedKey(key: callKey.publicKey, role: SigningKey.Scope.call.rawValue, template: template(BusRole.call(subjects, named))),
            NATSJWT.ScopedKey(key: workerKey.publicKey, role: SigningKey.Scope.worker.rawValue,
                              template: template(BusRole.worker.permissions(subjects, member: named))),
            NATSJWT.ScopedKey(key: gatewayKey.publicKey, role: SigningKey.Scope.gateway.rawValue,
                              template: template(BusRole.gateway.permissions(subjects, member: named))),
        ]
        let operatorJWT = try NATSJWT.operatorJWT(name: name, key: operatorKey, systemAccount: system.publicKey)
        let systemJWT = try NATSJWT.accountJWT(name: "SYS", key: system, signedBy: operatorKey)
        let accountJWT = try NATSJWT.accountJWT(name: name, key: account, signedBy: operatorKey, scopedKeys: scoped)
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
                              mediaSigning: SigningKey(account: account.publicKey, seed: callKey.seed, scope: .call),
                              memberSigning: [.worker: SigningKey(account: account.publicKey, seed: workerKey.seed, scope: .worker),
                                              .gateway: SigningKey(account: account.publicKey, seed: gatewayKey.seed, scope: .gateway)],
                              operatorSeed: operatorKey.seed, accountSeed: account.seed)
    }
}

/// A signing key of the cluster's account that mints one kind of credential only (a NATS scoped signing key):
/// a call's caller's (the routers hold it), or one worker's or gateway's (an init step holds it). The users it
/// signs carry no permissions of their own: the server gives them the key's template with their name in it,
/// and refuses one that claims any.
///
/// What a stolen key can still do: mint its kind for any name, and the server pastes names unchecked, so a user
/// named `*` reaches every call's media (with the call key) or every worker's subjects (with the worker key);
/// nothing outside its kind.
public struct SigningKey: Codable, Sendable, Equatable {
    public enum Scope: String, Codable, Sendable {
        case call, worker, gateway
    }

    public var account: String
    public var seed: String
    /// What it mints. Nil: a key from before scoped keys, which may sign anything in the account (its users get
    /// their permissions written in).
    public var scope: Scope?

    public init(account: String, seed: String, scope: Scope?) {
        self.account = account
        self.seed = seed
        self.scope = scope
    }

    /// Reads the file `nats-config` writes (`{"account": "A...", "seed": "SA...", "scope": "call"}`); `expected`:
    /// the scope it must have.
    public static func read(_ path: String, expected: Scope? = nil) throws(SwitchboardError) -> SigningKey {
        guard let data = FileManager.default.contents(atPath: path),
              let key = try? JSONDecoder().decode(SigningKey.self, from: data),
              (try? NKey(seed: key.seed))?.kind == .account, key.account.hasPrefix("A") else {
            throw SwitchboardError(.invalidArgument, "\(path) is not a signing key (as switchboard nats-config writes it)")
        }
        if let expected, let scope = key.scope, scope != expected {
            throw SwitchboardError(.invalidArgument, "\(path) mints \(scope.rawValue) credentials, not \(expected.rawValue) ones")
        }
        return key
    }

    /// A credential named `name` (a call's or a member's id, a plain subject token), expiring at `expires` (Unix
    /// seconds) when given. `legacy`: the permissions written into it when the key is not scoped.
    func mint(name: String, expires: Int64?, legacy: BusRole.Permissions) throws(SwitchboardError) -> NATSConfiguration.Credentials {
        do {
            try WireCheck.identifier(name, "name")  // never a wildcard: the server would paste it into the template
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        let signer = try NKey(seed: seed)
        let user = try NKey.generate(.user)
        let permissions = scope == nil ? NATSJWT.Permissions(publish: legacy.publish, subscribe: legacy.subscribe, responses: legacy.responses)
                                       : nil
        let jwt = try NATSJWT.userJWT(name: name, user: user.publicKey, account: account, signedBy: signer, permissions: permissions,
                                      expires: expires)
        return NATSConfiguration.Credentials(jwt: jwt, seed: user.seed)
    }

    /// A credential for one call's caller: publish its audio and its end, receive its audio and events, on any
    /// worker, nothing else; it expires at `expires` (Unix seconds).
    public func credentials(forCall callID: String, subjects: Subjects, expires: Int64) throws(SwitchboardError) -> NATSConfiguration.Credentials {
        try mint(name: callID, expires: expires, legacy: BusRole.call(subjects, callID))
    }

    /// A credential for one member (`scope` worker or gateway): its own subjects only.
    public func credentials(forMember id: String, subjects: Subjects, expires: Int64? = nil) throws(SwitchboardError) -> NATSConfiguration.Credentials {
        guard let scope, scope != .call, let role = BusRole(rawValue: scope.rawValue) else {
            throw SwitchboardError(.invalidArgument, "this key does not mint workers' or gateways' credentials")
        }
        return try mint(name: id, expires: expires, legacy: role.permissions(subjects, member: id))
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

