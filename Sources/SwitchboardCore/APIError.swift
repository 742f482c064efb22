/// How an error is shown to API clients (HTTP and NATS alike): an HTTP status and a public code.
///
/// Input errors of every kind are `bad_request` to a client; connection trouble inside the cluster is
/// `unavailable`. The table is the API contract (docs/api.md).
extension SwitchboardError {
    public var api: (status: Int, code: String) {
        switch code {
        case .badMessage, .invalidArgument: return (400, "bad_request")
        case .authenticationFailed: return (401, "unauthorized")
        case .forbidden: return (403, "forbidden")
        case .notFound: return (404, "not_found")
        case .versionNotFound: return (404, "version_not_found")
        case .tooLarge: return (413, "too_large")
        case .conflict: return (409, "conflict")
        case .rateLimited: return (429, "rate_limited")
        case .quotaExceeded: return (429, "quota_exceeded")
        // Not 429: retrying does not help before the month turns or the limit is raised.
        case .usageLimit: return (403, "usage_limit")
        case .rangeNotSatisfiable: return (416, "range_not_satisfiable")
        case .noCapacity: return (503, "no_capacity")
        case .unavailable, .connectionFailed, .connectionClosed, .noResponders, .timeout, .tlsFailed: return (503, "unavailable")
        default: return (500, "internal")
        }
    }

    /// An error as an API answered it, with our code for its public one (the inverse of `api`, where the
    /// public code names several of ours it gives the usual one).
    public init(api body: ErrorBody) {
        let code: Code
        switch body.code {
        case "bad_request": code = .invalidArgument
        case "unavailable": code = .unavailable
        case "unauthorized": code = .authenticationFailed
        default: code = Code(rawValue: body.code)
        }
        self.init(code, body.message)
        explanation = body.explain
    }

    /// The error as API clients see it, with its public code.
    public var apiBody: ErrorBody { ErrorBody(code: api.code, message: message, explain: explanation) }
}

/// `{"error": {"code": "...", "message": "..."}}`
public struct ErrorEnvelope: Codable, Sendable, Equatable {
    public var error: ErrorBody
    public init(_ error: ErrorBody) { self.error = error }
}
