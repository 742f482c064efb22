import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardNATS

/// Writes what a closed bus needs: the nats-server configuration (operator mode) and a credential per role.
struct NATSConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nats-config",
        abstract: "Write a closed NATS bus for a cluster: a nats-server config and one credential per role.",
        discussion: """
            Writes to --out: nats-auth.conf (include it in nats-server.conf), router.creds, worker.creds, \
            gateway.creds and operator.creds (each role may publish and subscribe only what the protocol gives it; \
            see docs/security.md); with --workers and --gateways, worker-<id>.creds and gateway-<id>.creds instead \
            of the shared worker.creds and gateway.creds, each reaching only its own member's subjects; media-signing.json (for the routers' --media-signing-key: a key that mints only \
            credentials for one call's media, which each placement then carries), with --member-signing-keys \
            worker-signing.json and gateway-signing.json (keys that mint only one member's credential, for \
            switchboard nats-credential), and operator.nk and account.nk (needed only to change \
            the accounts: keep them offline). Secrets are written mode 0600 and never printed.
            """)

    @Option(help: "Directory to write to (made if missing).") var out: String
    @Option(help: "Subject prefix of the cluster.") var prefix: String = Settings.string("prefix", "sb")
    @Option(help: "Name of the cluster's NATS operator and account.") var name: String = "switchboard"
    @Option(help: ArgumentHelp("Worker ids, comma-separated: one credential each (worker-<id>.creds) that reaches only that worker's subjects, instead of one worker.creds for all.", valueName: "ids"))
    var workers: String = ""
    @Option(help: ArgumentHelp("Gateway ids, comma-separated: one credential each (gateway-<id>.creds) that reads only that gateway's own replies, instead of one gateway.creds for all.", valueName: "ids"))
    var gateways: String = ""
    @Flag(help: "Also write worker-signing.json and gateway-signing.json: keys that mint one worker's or gateway's credential at its start (switchboard nats-credential), for fleets whose ids are not known now (Kubernetes).")
    var memberSigningKeys = false
    @Flag(help: "Plain NKey users per role instead of operator mode (no per-call media credentials; gateways may use every call's media).")
    var users = false
    @Flag(help: "Replace files that exist.") var force = false

    func run() async throws {
        do throws(SwitchboardError) {
            let subjects = try Subjects(prefix: prefix)
            let members = Self.ids(workers).map { BusCredentials.Member(.worker, $0) } + Self.ids(gateways).map { BusCredentials.Member(.gateway, $0) }
            if users && !members.isEmpty {
                throw SwitchboardError(.invalidArgument, "--workers and --gateways need operator mode (not --users)")
            }
            let written = users ? try Self.writeUsers(to: out, subjects: subjects, force: force)
                                : try Self.write(to: out, subjects: subjects, name: name, members: members,
                                                 memberSigningKeys: memberSigningKeys, force: force)
            say("wrote \(written.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")) to \(out)")
            say(users ? "nats-server: include \(out)/nats-auth.conf; each process: --nats-nkey <role>.nk (router, worker, gateway, operator)"
                      : "nats-server: include \(out)/nats-auth.conf; routers: --nats-creds router.creds --media-signing-key media-signing.json; workers: --nats-creds worker.creds; gateways: gateway.creds; operator tools: operator.creds")
        } catch {
            throw ExitCodes.fail(error)
        }
    }

    /// Writes operator mode's files; returns their paths.
    static func write(to directory: String, subjects: Subjects, name: String, members: [BusCredentials.Member] = [],
                      memberSigningKeys: Bool = false, force: Bool) throws(SwitchboardError) -> [String] {
        let bus = try BusCredentials.generate(subjects: subjects, name: name, members: members)
        var files: [(String, String)] = [("nats-auth.conf", bus.serverConfig)]
        for role in BusRole.allCases { if let creds = bus.roleCredentials[role] { files.append(("\(role.rawValue).creds", creds)) } }
        for member in members { files.append((member.fileName, bus.memberCredentials[member]!)) }
        files.append(("media-signing.json", String(decoding: WireCodec.encode(bus.mediaSigning), as: UTF8.self)))
        if memberSigningKeys {
            for role in [BusRole.worker, .gateway] {
                files.append(("\(role.rawValue)-signing.json", String(decoding: WireCodec.encode(bus.memberSigning[role]!), as: UTF8.self)))
            }
        }
        files += [("operator.nk", bus.operatorSeed + "\n"), ("account.nk", bus.accountSeed + "\n")]
        return try writeFiles(files, to: directory, force: force)
    }

    static func ids(_ list: String) -> [String] {
        list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Writes the plain-users mode's files; returns their paths.
    static func writeUsers(to directory: String, subjects: Subjects, force: Bool) throws(SwitchboardError) -> [String] {
        let bus = try BusUsers.generate(subjects: subjects)
        return try writeFiles([("nats-auth.conf", bus.serverConfig)] + BusRole.allCases.map { ("\($0.rawValue).nk", bus.roleSeeds[$0]!) },
                              to: directory, force: force)
    }

    static func writeFiles(_ files: [(String, String)], to directory: String, force: Bool) throws(SwitchboardError) -> [String] {
        let manager = FileManager.default
        do {
            try manager.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SwitchboardError(.invalidArgument, "cannot make \(directory): \(error.localizedDescription)")
        }
        let paths = files.map { directory + "/" + $0.0 }
        if !force, let existing = paths.first(where: { manager.fileExists(atPath: $0) }) {
            throw SwitchboardError(.conflict, "\(existing) exists already (--force replaces the whole set)")
        }
        for ((_, text), path) in zip(files, paths) { try SecretFile.write(text, to: path, replace: force) }
        return paths
    }
}
