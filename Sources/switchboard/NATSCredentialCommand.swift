import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardNATS

/// Mints one worker's or gateway's own credential at its start, with a key that mints only that kind
/// (`nats-config --member-signing-keys`): for fleets whose ids are not known in advance. Run where the member
/// itself cannot read the key (a Kubernetes init container that mounts it; the worker's container does not).
struct NATSCredentialCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nats-credential",
        abstract: "Write one worker's or gateway's NATS credential, reaching only its own subjects.",
        discussion: """
            Reads a member signing key (worker-signing.json or gateway-signing.json from nats-config \
            --member-signing-keys) and writes --out (mode 0600), a .creds file for the member --id. The key can \
            mint only credentials of its kind; keep it away from the members themselves (docs/security.md).
            """)

    @Option(help: "The member signing key (worker-signing.json or gateway-signing.json).") var signingKey: String
    @Option(help: "The member's id (the worker's --id, the gateway's).") var id: String
    @Option(help: "The .creds file to write.") var out: String
    @Option(help: "Subject prefix of the cluster.") var prefix: String = Settings.string("prefix", "sb")
    @Option(help: "Seconds until the credential expires (0: never; the member must then be given a new one).")
    var expiresIn: Double = 0
    @Flag(help: "Replace the file if it exists.") var force = false

    func run() async throws {
        do throws(SwitchboardError) {
            let key = try SigningKey.read(signingKey)
            let expires = expiresIn > 0 ? (WallClock.system.unixMillis + Int64(expiresIn * 1000)) / 1000 : nil
            let credentials = try key.credentials(forMember: id, subjects: try Subjects(prefix: prefix), expires: expires)
            let url = URL(fileURLWithPath: out)
            _ = try NATSConfigCommand.writeFiles([(url.lastPathComponent, NATSJWT.credentials(jwt: credentials.jwt, seed: credentials.seed))],
                                                 to: url.deletingLastPathComponent().path, force: force)
            say("wrote \(out): \(key.scope?.rawValue ?? "member") \(id)")
        } catch {
            throw ExitCodes.fail(error)
        }
    }
}
