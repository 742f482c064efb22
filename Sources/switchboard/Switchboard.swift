import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardNATS
import SwitchboardOpus
import SwitchboardRedis

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "Run and operate a Switchboard cluster of voice-AI call workers.",
        version: SwitchboardVersion.current,
        subcommands: [RouterCommand.self, WorkerCommand.self, GatewayCommand.self, TenantCommand.self, DevCommand.self, CallCommand.self, StatusCommand.self, NodeCommand.self, DeployCommand.self, RollbackCommand.self, AuditCommand.self, NATSConfigCommand.self, NATSCredentialCommand.self, RedisACLCommand.self, SimulateCommand.self, DoctorCommand.self, VersionCommand.self]
    )
}

enum SwitchboardVersion {
    static let current = "0.1.0-dev"
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version of switchboard and of the C libraries it uses.")

    @Option(help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() throws {
        let info: [String: String] = [
            "switchboard": SwitchboardVersion.current,
            "nats.c": LibraryVersions.nats,
            "hiredis": LibraryVersions.hiredis,
            "libopus": LibraryVersions.opus,
        ]
        switch output {
        case .json: print(jsonString(info))
        case .text:
            print("switchboard \(SwitchboardVersion.current)")
            for key in ["nats.c", "hiredis", "libopus"] { print("  \(key) \(info[key]!)") }
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

func jsonString(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "{}"
}

/// Maps our error codes to process exit codes (sysexits.h), and prints one clear line.
enum ExitCodes {
    static func code(for error: SwitchboardError) -> Int32 {
        switch error.code {
        case .invalidArgument, .badMessage, .tooLarge: return 64      // EX_USAGE / EX_DATAERR family
        case .connectionFailed, .connectionClosed, .noResponders: return 69  // EX_UNAVAILABLE
        case .authenticationFailed, .forbidden, .tlsFailed, .usageLimit: return 77  // EX_NOPERM
        case .notFound, .versionNotFound, .conflict: return 65         // EX_DATAERR: no such thing, or not in a state for it
        case .timeout, .noCapacity, .unavailable, .rateLimited, .quotaExceeded: return 75  // EX_TEMPFAIL: try again later
        default: return 1
        }
    }

    static func fail(_ error: SwitchboardError) -> ExitCode {
        if let explanation = error.explanation { print(describe(explanation)) }
        FileHandle.standardError.write(Data("error: \(error.code): \(error.message)\n".utf8))
        return ExitCode(code(for: error))
    }
}

enum LibraryVersions {
    static var nats: String { NATSConnection.libraryVersion }
    static var hiredis: String { RedisClient.libraryVersion }
    static var opus: String { opusLibraryVersion }
}
