import Foundation
import HTTPTypes
import Hummingbird
import SwitchboardCore
import SwitchboardObservability

/// What every HTTP server here shares: bodies read with a size limit, and errors as the JSON error body.
public enum HTTPBody {
    /// The body, refused with `too_large` over `limit` bytes.
    public static func collect(_ request: inout Request, limit: Int) async throws -> [UInt8] {
        let tooLarge = SwitchboardError(.tooLarge, "request body is over \(limit) bytes")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit { throw tooLarge }
        var bytes: [UInt8] = []
        for try await chunk in request.body {
            guard bytes.count + chunk.readableBytes <= limit else { throw tooLarge }
            bytes.append(contentsOf: chunk.readableBytesView)
        }
        return bytes
    }
}

/// A page or script the server itself ships: its type, its content security policy, never cached stale, never
/// framed by another site.
public enum HTTPPage {
    public static func response(_ text: String, type: String, contentSecurityPolicy: String) -> Response {
        Response(status: .ok, headers: [
            .contentType: type,
            .contentSecurityPolicy: contentSecurityPolicy,
            .cacheControl: "no-cache",
            HTTPField.Name("X-Frame-Options")!: "DENY",
        ], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Turns every error into the JSON error body with its status, and counts requests by status class.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: MetricsRegistry

    public init(metrics: MetricsRegistry) { self.metrics = metrics }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as SwitchboardError {
            response = Self.render(error.api.status, error.apiBody)
            if let ms = error.context["retry_after_ms"].flatMap(Int.init) {
                response.headers[.retryAfter] = String((ms + 999) / 1000)  // whole seconds, rounded up
            }
            if error.code == .rangeNotSatisfiable, let size = error.context["size"] {
                response.headers[.contentRange] = "bytes */\(size)"
            }
        } catch let error as HTTPError {
            let code: String
            switch error.status {
            case .notFound: code = "not_found"
            case .contentTooLarge: code = "too_large"
            case .methodNotAllowed: code = "method_not_allowed"
            default: code = error.status.code < 500 ? "bad_request" : "internal"
            }
            response = Self.render(error.status.code, ErrorBody(code: code, message: error.body ?? error.status.reasonPhrase))
        } catch {
            context.logger.error("request failed", metadata: [LogKey.error: "\(error)"])
            response = Self.render(500, ErrorBody(code: "internal", message: "internal error"))
        }
        metrics.increment(MetricNames.httpRequests, ["status": "\(response.status.code / 100)xx"], help: "HTTP requests by status class")
        return response
    }

    public static func render(_ status: Int, _ body: ErrorBody) -> Response {
        Response(status: HTTPResponse.Status(code: status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: WireCodec.encode(ErrorEnvelope(body)))))
    }
}

