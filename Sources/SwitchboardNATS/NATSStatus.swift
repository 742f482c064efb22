import CNATS
import SwitchboardCore

extension SwitchboardError {
    /// Turns a nats.c status into our error, keeping the library's text (and its last error detail, which
    /// names the file or the server's reason) in the message.
    static func nats(_ status: natsStatus, _ what: String, connection: OpaquePointer? = nil) -> SwitchboardError {
        let text = String(cString: natsStatus_GetText(status))
        var detail = ""
        if let connection {
            var last: UnsafePointer<CChar>?
            if natsConnection_GetLastError(connection, &last) != NATS_OK, let last, last.pointee != 0 {
                detail = String(cString: last)
            }
        } else if let last = nats_GetLastError(nil), last.pointee != 0 {
            detail = String(cString: last)
        }
        let message = detail.isEmpty || detail == text ? "\(what): \(text)" : "\(what): \(text): \(detail)"
        return SwitchboardError(code(for: status, detail: detail), message, context: ["nats_status": "\(status.rawValue)"])
    }

    private static func code(for status: natsStatus, detail: String) -> Code {
        switch status {
        case NATS_TIMEOUT: return .timeout
        case NATS_NO_RESPONDERS: return .noResponders
        case NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED, NATS_DRAINING, NATS_INVALID_SUBSCRIPTION:
            return .connectionClosed
        case NATS_NO_SERVER, NATS_IO_ERROR, NATS_STALE_CONNECTION, NATS_ADDRESS_MISSING:
            return .connectionFailed
        case NATS_CONNECTION_AUTH_FAILED, NATS_NOT_PERMITTED: return .authenticationFailed
        case NATS_SSL_ERROR, NATS_SECURE_CONNECTION_REQUIRED: return .tlsFailed
        case NATS_MAX_PAYLOAD: return .tooLarge
        case NATS_INVALID_ARG, NATS_INVALID_SUBJECT, NATS_INVALID_QUEUE_NAME: return .invalidArgument
        case NATS_SLOW_CONSUMER: return .slowConsumer
        case NATS_ERR:
            let lower = detail.lowercased()
            if lower.contains("authorization") || lower.contains("authentication") { return .authenticationFailed }
            if lower.contains("ssl") || lower.contains("tls") || lower.contains("certificate") { return .tlsFailed }
            return .serverError
        default: return .internalError
        }
    }
}

/// Throws our error unless `status` is `NATS_OK`.
@inline(__always)
func check(_ status: natsStatus, _ what: @autoclosure () -> String, connection: OpaquePointer? = nil) throws(SwitchboardError) {
    if status != NATS_OK { throw SwitchboardError.nats(status, what(), connection: connection) }
}
