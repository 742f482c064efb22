import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCore
import SwitchboardObservability

/// Our error answers an HTTP request itself: the status the API table gives its code (`api`), the headers its
/// context asks for, and the JSON error body `{"error": {"code", "message"}}` (docs/api.md). Hummingbird's
/// router answers with this whatever handler or middleware throws it; `ErrorMiddleware` brings every other
/// error to this shape. (Core imports no HTTP: the conformance lives here.)
extension SwitchboardError: HTTPResponseError {
    public var status: HTTPResponse.Status { HTTPResponse.Status(code: api.status) }

    /// `Retry-After` for a wait the error names (`retry_after_ms`, in whole seconds rounded up), and
    /// `Content-Range` for a range past the end of a file (`size`).
    public var headers: HTTPFields {
        var headers: HTTPFields = [:]
        if let ms = context["retry_after_ms"].flatMap(Int.init) {
            headers[.retryAfter] = String((ms + 999) / 1000)
        }
        if code == .rangeNotSatisfiable, let size = context["size"] {
            headers[.contentRange] = "bytes */\(size)"
        }
        return headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        errorResponse(status, apiBody, headers: headers)
    }
}

/// An error Hummingbird raises itself (`HTTPError`: a path no route serves, say) or another library's
/// `HTTPResponseError`, in the API's shape: its status, with our JSON body and the public code for that status.
struct FrameworkError: HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String

    init(_ error: any HTTPResponseError) {
        status = error.status
        message = (error as? HTTPError)?.body ?? error.status.reasonPhrase
    }

    var code: String {
        switch status {
        case .notFound: "not_found"
        case .contentTooLarge: "too_large"
        case .methodNotAllowed: "method_not_allowed"
        default: status.code < 500 ? "bad_request" : "internal"
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        errorResponse(status, ErrorBody(code: code, message: message), headers: [:])
    }
}

/// The JSON error body with its status.
func errorResponse(_ status: HTTPResponse.Status, _ body: ErrorBody, headers: HTTPFields) -> Response {
    var fields: HTTPFields = [.contentType: "application/json"]
    fields.append(contentsOf: headers)
    return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: WireCodec.encode(ErrorEnvelope(body)))))
}

/// Counts requests by status class, errors included, and leaves every error thrown below it in the API's
/// shape for the router to answer with: ours as they are (they render themselves), an `HTTPResponseError`
/// of Hummingbird's as a `FrameworkError`, anything else logged and answered `internal`.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: MetricsRegistry

    public init(metrics: MetricsRegistry) { self.metrics = metrics }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            count(response.status)
            return response
        } catch {
            let answer = Self.apiError(error, context: context)
            count(answer.status)
            throw answer
        }
    }

    /// `error` as the API shows it.
    static func apiError(_ error: any Error, context: Context) -> any HTTPResponseError {
        switch error {
        case let error as SwitchboardError: return error
        case let error as any HTTPResponseError: return FrameworkError(error)
        default:
            context.logger.error("request failed", metadata: [LogKey.error: "\(error)"])
            return SwitchboardError(.internalError, "internal error")
        }
    }

    private func count(_ status: HTTPResponse.Status) {
        metrics.increment(MetricNames.httpRequests, ["status": "\(status.code / 100)xx"], help: "HTTP requests by status class")
    }
}
