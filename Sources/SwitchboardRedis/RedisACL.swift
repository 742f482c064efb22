import SwitchboardCore

/// Redis ACL users per role (`switchboard redis-acl`): the commands each role sends and the narrowest key patterns
/// the key layout allows. See docs/security.md ("Running Redis closed").
///
/// Still wider than one member's own: a worker's user reaches every call record and every worker's set of calls
/// (taking a call on moves it between two workers' sets, and a record's key names no worker), every tenant's
/// live-call leases (it renews its calls' leases), every tenant's months of usage (it meters its calls) and every
/// call's timeline; it cannot read tenants, their keys, rate limits, locks or the deploy policy's history, nor
/// write the policy. A gateway's user reaches calls' timelines alone.
public enum RedisACL {
    public enum Role: String, CaseIterable, Sendable {
        case router, worker, gateway, `operator`
    }

    /// Commands, by ACL category then single commands: every role starts from none (`-@all`); nothing in
    /// `@dangerous` but what is named after it (INFO and ROLE for `doctor` and Sentinel's primary check).
    static let commands = ["+@read", "+@write", "+@scripting", "+@connection", "-@dangerous", "+info", "+role", "+wait", "+time"]

    /// The key patterns of `role`.
    public static func keyPatterns(_ role: Role, keys: RedisKeys) -> [String] {
        let p = keys.prefix
        switch role {
        case .router, .operator:
            return ["\(p):*"]
        case .gateway:
            return [keys.timeline("*")]
        case .worker:
            return [keys.call("*"), keys.workerCalls("*"), keys.tenantLeases("*"), keys.usage("*", month: "*"), keys.timeline("*"), keys.drains, keys.deploy, keys.audit]
        }
    }

    /// One `users.acl` line: the user, its password's SHA-256 (never the password), its keys and commands.
    public static func line(_ role: Role, passwordSHA256: String, keys: RedisKeys) -> String {
        let commands = role == .operator ? ["+@read", "+@connection", "-@dangerous", "+info", "+role"] : Self.commands
        return (["user", role.rawValue, "on", "#" + passwordSHA256, "resetkeys"] + keyPatterns(role, keys: keys).map { "~" + $0 }
                + ["resetchannels", "-@all"] + commands).joined(separator: " ")
    }

    /// A `users.acl` file (redis.conf `aclfile`): the default user off, one user per role.
    public static func file(passwords: [Role: String], keys: RedisKeys) -> String {
        // An ACL file takes no comments: what it is is said in docs/security.md.
        var lines = ["user default off resetkeys -@all"]
        for role in Role.allCases {
            lines.append(line(role, passwordSHA256: APIKey.hash(passwords[role] ?? ""), keys: keys))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
