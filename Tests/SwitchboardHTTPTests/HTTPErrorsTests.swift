import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardObservability
import Testing

/// Errors as API clients see them, through Hummingbird's router as a server runs it (no socket: each request is
/// answered on an embedded channel).
@Suite("HTTP errors")
struct HTTPErrorsTests {
    struct Answer {
        var status: Int
        var headers: HTTPFields
        var body: String
    }

    struct Boom: Error {}

    /// A router with the routes below, behind `ErrorMiddleware` unless `middleware` is false.
    static func router(_ metrics: MetricsRegistry, middleware: Bool = true) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        if middleware { router.add(middleware: ErrorMiddleware(metrics: metrics)) }
        router.get("/ok") { _, _ in "ok" }
        router.get("/limited") { _, _ -> Response in
            throw SwitchboardError(.rateLimited, "tenant t: too many new calls", context: ["retry_after_ms": "1500"])
        }
        router.get("/range") { _, _ -> Response in
            throw SwitchboardError(.rangeNotSatisfiable, "range past the end", context: ["size": "4096"])
        }
        router.get("/lost") { _, _ -> Response in throw SwitchboardError(.noResponders, "no worker answered") }
        router.get("/boom") { _, _ -> Response in throw Boom() }
        return router
    }

    static func ask(_ router: Router<BasicRequestContext>, _ path: String) async throws -> Answer {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        let context = BasicRequestContext(source: .init(channel: channel, logger: Logger(label: "test.http")))
        let request = Request(head: HTTPRequest(method: .get, scheme: "http", authority: "localhost", path: path),
                              body: .init(buffer: ByteBuffer()))
        let response = try await router.buildResponder().respond(to: request, context: context)
        let collected = Collected()
        try await response.body.write(Collector(into: collected))
        return Answer(status: response.status.code, headers: response.headers, body: String(buffer: collected.buffer))
    }

    @Test func ourErrorsKeepTheirStatusHeadersAndBody() async throws {
        let router = Self.router(MetricsRegistry())
        let limited = try await Self.ask(router, "/limited")
        #expect(limited.status == 429 && limited.headers[.retryAfter] == "2" && limited.headers[.contentType] == "application/json")
        #expect(limited.body == #"{"error":{"code":"rate_limited","message":"tenant t: too many new calls"}}"#)
        let range = try await Self.ask(router, "/range")
        #expect(range.status == 416 && range.headers[.contentRange] == "bytes */4096" && range.headers[.retryAfter] == nil)
        #expect(range.body == #"{"error":{"code":"range_not_satisfiable","message":"range past the end"}}"#)
        let lost = try await Self.ask(router, "/lost")
        #expect(lost.status == 503 && lost.body == #"{"error":{"code":"unavailable","message":"no worker answered"}}"#)
    }

    @Test func hummingbirdsOwnErrorsAndOthersTakeTheSameShape() async throws {
        let router = Self.router(MetricsRegistry())
        let missing = try await Self.ask(router, "/nowhere")
        #expect(missing.status == 404 && missing.headers[.contentType] == "application/json")
        #expect(missing.body == #"{"error":{"code":"not_found","message":"Not Found"}}"#)
        let boom = try await Self.ask(router, "/boom")
        #expect(boom.status == 500 && boom.body == #"{"error":{"code":"internal","message":"internal error"}}"#)
    }

    /// Counted by status class, whether a handler answered or threw, and whoever threw.
    @Test func everyAnswerIsCountedByStatusClass() async throws {
        let metrics = MetricsRegistry()
        let router = Self.router(metrics)
        for path in ["/ok", "/ok", "/limited", "/range", "/nowhere", "/lost", "/boom"] { _ = try await Self.ask(router, path) }
        func count(_ status: String) -> Double? { metrics.value(MetricNames.httpRequests, ["status": status]) }
        #expect(count("2xx") == 2 && count("4xx") == 3 && count("5xx") == 2)
    }

    /// The error renders itself (`HTTPResponseError`): a router without the middleware answers the same.
    @Test func ourErrorsRenderThemselvesWithoutTheMiddleware() async throws {
        let metrics = MetricsRegistry()
        let limited = try await Self.ask(Self.router(metrics, middleware: false), "/limited")
        #expect(limited.status == 429 && limited.headers[.retryAfter] == "2")
        #expect(limited.body == #"{"error":{"code":"rate_limited","message":"tenant t: too many new calls"}}"#)
        #expect(metrics.value(MetricNames.httpRequests, ["status": "4xx"]) == nil)
    }
}

/// Where a response's body is written to, read back by the test.
final class Collected: @unchecked Sendable {  // written by one response at a time, read after it
    var buffer = ByteBuffer()
}

struct Collector: ResponseBodyWriter {
    let into: Collected

    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        into.buffer.writeBuffer(&buffer)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
