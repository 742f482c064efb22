import Foundation
import SwitchboardCore

/// Writes a secret to a file that is never readable by anyone else, not for an instant: created by `open(2)`
/// with mode 0600 (`O_EXCL`, so never through a link someone left there), written, then closed. A file already
/// there is removed first when `replace` is true.
enum SecretFile {
    static func write(_ text: String, to path: String, replace: Bool) throws(SwitchboardError) {
        if replace, unlink(path) != 0, errno != ENOENT {
            throw SwitchboardError(.invalidArgument, "cannot replace \(path): \(String(cString: strerror(errno)))")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let reason = errno == EEXIST ? "it exists already" : String(cString: strerror(errno))
            throw SwitchboardError(errno == EEXIST ? .conflict : .invalidArgument, "cannot write \(path): \(reason)")
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw SwitchboardError(.invalidArgument, "cannot write \(path): \(String(cString: strerror(errno)))") }
            written += n
        }
        // The umask may only have narrowed 0600; make it exactly that.
        guard fchmod(fd, 0o600) == 0 else { throw SwitchboardError(.invalidArgument, "cannot set the mode of \(path)") }
    }
}
