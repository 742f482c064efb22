import Foundation
import SwitchboardCore
import SwitchboardRouter

/// Where a router's operator keys come from: a key file (`name:key` per line), `--admin-key` (named `admin`), or,
/// with neither, a key generated at start and kept in a file only this user can read; that is allowed on a
/// loopback address only, so a router on a network never runs with a key nobody chose. `--insecure-no-auth`
/// opens operator endpoints to anyone, loudly.
enum AdminKeys {
    static func resolve(file: String?, key: String?, insecure: Bool, routerID: String,
                        httpHost: String) throws(SwitchboardError) -> (keys: [AdminKey], insecure: Bool) {
        if insecure {
            say("WARNING: --insecure-no-auth: anyone who reaches http://\(httpHost) can drain workers, move calls and deploy")
            return ([], true)
        }
        var keys: [AdminKey] = []
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw SwitchboardError(.invalidArgument, "cannot read the admin key file \(file): \(error.localizedDescription)")
            }
            keys = try AdminKey.parseFile(text)
        }
        if let key { keys.append(try AdminKey(name: "admin", key: key)) }
        guard keys.isEmpty else { return (keys, false) }
        guard ["127.0.0.1", "::1", "localhost"].contains(httpHost) else {
            throw SwitchboardError(.invalidArgument, "an HTTP API on \(httpHost) needs an admin key: --admin-key-file FILE (name:key lines) or --admin-key KEY (or, never on a network, --insecure-no-auth)")
        }
        let generated = try AdminKey(name: "admin", key: "sba_" + Identifiers.random(bytes: 24))
        let path = try write(generated, for: routerID)
        say("no admin key given: generated one for this router, in \(path) (readable by this user only); use it with --api-key-file \(path)")
        return ([generated], false)
    }

    /// Writes `name:key` to `<state dir>/<router id>.admin-key`, mode 0600 from its creation.
    private static func write(_ key: AdminKey, for routerID: String) throws(SwitchboardError) -> String {
        let environment = ProcessInfo.processInfo.environment
        let directory = environment["SWITCHBOARD_STATE_DIR"]
            ?? environment["XDG_STATE_HOME"].map { $0 + "/switchboard" }
            ?? environment["HOME"].map { $0 + "/.local/state/switchboard" }
            ?? NSTemporaryDirectory() + "switchboard-\(getuid())"
        let path = directory + "/" + routerID.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" } + ".admin-key"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SwitchboardError(.invalidArgument, "cannot keep the generated admin key in \(directory): \(error.localizedDescription)")
        }
        try SecretFile.write("\(key.name):\(key.key)\n", to: path, replace: true)
        return path
    }
}
