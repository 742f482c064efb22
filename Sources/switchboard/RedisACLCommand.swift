import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardRedis

/// Writes Redis ACL users per role: a `users.acl` for redis-server and a password file per role.
struct RedisACLCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis-acl",
        abstract: "Write Redis ACL users per role (router, worker, gateway, operator) and their passwords.",
        discussion: """
            Writes to --out: users.acl (redis.conf: aclfile <path>; the default user is turned off) and \
            router.redis-password, worker.redis-password, gateway.redis-password and operator.redis-password (mode 0600; give each process \
            its own: --redis-url redis://router@host:6379 --redis-password-file router.redis-password). Each user may \
            send only the commands its role sends, on the narrowest key patterns the key layout allows \
            (docs/security.md says where they are still wider than one worker's own).
            """)

    @Option(help: "Directory to write to (made if missing).") var out: String
    @Option(name: .customLong("key-prefix"), help: "Redis key prefix of the cluster.") var keyPrefix: String = Settings.string("key-prefix", "sb")
    @Flag(help: "Replace files that exist.") var force = false

    func run() async throws {
        do throws(SwitchboardError) {
            let keys = try RedisKeys(prefix: keyPrefix)
            var passwords: [RedisACL.Role: String] = [:]
            for role in RedisACL.Role.allCases { passwords[role] = "sbr_" + Identifiers.random(bytes: 24) }
            var files = [("users.acl", RedisACL.file(passwords: passwords, keys: keys))]
            for role in RedisACL.Role.allCases { files.append(("\(role.rawValue).redis-password", passwords[role]! + "\n")) }
            let written = try NATSConfigCommand.writeFiles(files, to: out, force: force)
            say("wrote \(written.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")) to \(out)")
            say("redis-server: aclfile \(out)/users.acl; routers: --redis-url redis://router@HOST:6379 --redis-password-file router.redis-password; workers: worker@ and worker.redis-password; gateways: gateway@ and gateway.redis-password")
        } catch {
            throw ExitCodes.fail(error)
        }
    }
}
