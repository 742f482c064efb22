import Foundation
import Hummingbird
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import SwitchboardObservability
import SwitchboardTestSupport
import SwitchboardWorker
import Synchronization
import Testing

/// An OTLP/HTTP collector in the test process: takes `POST /v1/traces` (JSON) and keeps the spans.
/// `withOTLPReceiver` starts one and stops it.
final class OTLPReceiver: Sendable {
    struct ReceivedSpan: Sendable, Equatable {
        var service: String
        var traceID: String
        var spanID: String
        var parentSpanID: String?
        var name: String
        var kind: Int
        var attributes: [String: String]
        var failed: Bool
    }

    private final class Store: Sendable {
        let spans = Mutex<[ReceivedSpan]>([])
    }
    private let store = Store()
    /// Every span received so far.
    var spans: [ReceivedSpan] { store.spans.withLock { $0 } }
    let task: Task<Void, any Error>
    let group: ServiceGroup
    let url: String

    fileprivate init() async throws {
        let store = self.store
        let routes = Router()
        routes.post("/v1/traces") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            guard let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                return Response(status: .badRequest)
            }
            store.spans.withLock { $0 += Self.parse(object) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
        let box = PortBox()
        let app = Application(router: routes, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { box.set($0.localAddress?.port ?? 0) }, logger: quiet)
        group = ServiceGroup(services: [app], logger: quiet)
        let group = self.group
        task = Task { try await group.run() }
        url = "http://127.0.0.1:\(try await box.wait())"
    }

    fileprivate func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    /// A tracer of `service` exporting here.
    func tracer(_ service: String) -> Tracer {
        Tracer(Tracer.Configuration(tracesURL: URL(string: url + "/v1/traces")!, serviceName: service), metrics: MetricsRegistry(), logger: quiet)
    }

    static func parse(_ object: [String: Any]) -> [ReceivedSpan] {
        func attributes(_ list: Any?) -> [String: String] {
            var out: [String: String] = [:]
            for item in list as? [[String: Any]] ?? [] {
                if let key = item["key"] as? String, let value = (item["value"] as? [String: Any])?["stringValue"] as? String { out[key] = value }
            }
            return out
        }
        var out: [ReceivedSpan] = []
        for resourceSpans in object["resourceSpans"] as? [[String: Any]] ?? [] {
            let service = attributes((resourceSpans["resource"] as? [String: Any])?["attributes"])["service.name"] ?? ""
            for scope in resourceSpans["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scope["spans"] as? [[String: Any]] ?? [] {
                    out.append(ReceivedSpan(service: service, traceID: span["traceId"] as? String ?? "", spanID: span["spanId"] as? String ?? "",
                                            parentSpanID: span["parentSpanId"] as? String, name: span["name"] as? String ?? "",
                                            kind: span["kind"] as? Int ?? 0, attributes: attributes(span["attributes"]),
                                            failed: (span["status"] as? [String: Any])?["code"] as? Int == 2))
                }
            }
        }
        return out
    }
}

/// Starts a collector, runs `body` with it, and stops it when `body` returns or throws (then rethrows).
func withOTLPReceiver(_ body: (OTLPReceiver) async throws -> Void) async throws {
    let collector = try await OTLPReceiver()
    do {
        try await body(collector)
    } catch {
        await collector.stop()
        throw error
    }
    await collector.stop()
}

/// A handler that keeps what its calls were given (their trace context) and echoes.
final class TraceCapturingHandler: CallHandler {
    let traceparents = Mutex<[String: String]>([:])

    func run(_ call: CallContext) async throws {
        if let traceparent = call.traceparent { traceparents.withLock { $0[call.callID] = traceparent } }
        try await EchoHandler().run(call)
    }
}

@Suite("Traces", .serialized)
struct TracingTests {
    /// A Twilio call through a gateway, moved once, then hung up: the gateway, the router and both workers send
    /// their spans to one collector, all in the call's one trace, each span's parent among them; the worker gives
    /// the call's handler its trace context (an agent gets it as `customParameters.traceparent`).
    @Test func aCallsSpansFromEveryMemberFormOneTraceWithItsParentLinksIntact() async throws {
        try await withOTLPReceiver { collector in
            try await withTestCluster { cluster in
                try await cluster.addRouter(tracer: collector.tracer("switchboard-router")) { $0.traceLink = "https://tempo.example/trace/{trace_id}" }
                let handler = TraceCapturingHandler()
                try await cluster.addWorker(id: "a", handler: handler, tracer: collector.tracer("switchboard-worker"))
                try await cluster.waitForWorkers(1)
                let gw = try await cluster.addGateway(tracer: collector.tracer("switchboard-gateway"))
                let (path, _) = try RunningGateway.stream(in: String(decoding: try await gw.webhook().body, as: UTF8.self))
                let twilio = try await FakeTwilio(port: gw.port, path: path)
                try await twilio.start()
                let speaking = Task { try await twilio.speak(seconds: 3) }
                try await eventually(timeout: .seconds(5), "placed") { !gw.gateway.liveCalls.isEmpty }
                let callID = gw.gateway.liveCalls[0]
                try await cluster.addWorker(id: "b", handler: handler, tracer: collector.tracer("switchboard-worker"))
                try await cluster.waitForWorkers(2)
                try await Task.sleep(for: .seconds(1))
                let moved = try await cluster.migrate(callID)
                #expect(moved.status == 200, "\(String(decoding: moved.body, as: UTF8.self))")
                try await speaking.value
                try await twilio.stop()

                var spans: [OTLPReceiver.ReceivedSpan] = []
                // Members export in batches of their own: wait until every span's parent has arrived too (a move asked
                // again after a 503 leaves a failed attempt's spans besides the one that went through; a 503 can also come
                // after the move was made, and the move's span then says so).
                try await eventually(timeout: .seconds(15), "every member's spans of the call, each with its parent") {
                    spans = collector.spans
                    let names = Set(spans.map(\.name)), ids = Set(spans.map(\.spanID))
                    return ["call", "route", "placement", "offer", "start", "move", "end"].allSatisfy(names.contains)
                        && spans.filter { $0.name == "start" }.count >= 2 && spans.contains { $0.name == "call" && $0.service == "switchboard-gateway" }
                        && spans.contains { $0.name == "move" && $0.attributes["switchboard.from_worker"] == "a" && $0.attributes["switchboard.to_worker"] == "b" }
                        && spans.allSatisfy { span in span.parentSpanID.map(ids.contains) ?? true }
                }
                let root = try #require(spans.first { $0.name == "call" && $0.parentSpanID == nil })
                let trace = spans.filter { $0.traceID == root.traceID }
                #expect(trace.count == spans.count, "one trace: \(spans.map { "\($0.service)/\($0.name)" })")
                let ids = Set(trace.map(\.spanID))
                #expect(ids.count == trace.count, "span ids are unique")
                for span in trace where span.spanID != root.spanID {
                    #expect(span.parentSpanID.map(ids.contains) == true, "\(span.service)/\(span.name)'s parent is in the trace")
                }
                func one(_ name: String, _ service: String) throws -> OTLPReceiver.ReceivedSpan {
                    try #require(trace.first { $0.name == name && $0.service == service }, "\(service)/\(name)")
                }
                // gateway call > gateway route > router route > placement > offer > worker start (and the move's offer >
                // the other worker's start); the end hangs off the call's start on the worker that ended it.
                let gatewayRoute = try one("route", "switchboard-gateway"), routerRoute = try one("route", "switchboard-router")
                #expect(gatewayRoute.parentSpanID == root.spanID && routerRoute.parentSpanID == gatewayRoute.spanID)
                #expect(gatewayRoute.kind == 3 && routerRoute.kind == 2, "client and server")
                let placement = try one("placement", "switchboard-router")
                #expect(placement.parentSpanID == routerRoute.spanID && routerRoute.attributes["switchboard.call_id"] == callID)
                let offers = trace.filter { $0.name == "offer" }, starts = trace.filter { $0.name == "start" }
                #expect(starts.allSatisfy { start in offers.contains { $0.spanID == start.parentSpanID } }, "each start is an offer's")
                let move = try #require(trace.first { $0.name == "move" && $0.attributes["switchboard.from_worker"] == "a" && $0.attributes["switchboard.to_worker"] == "b" },
                                        "the move from a to b")
                #expect(move.attributes["switchboard.from_worker"] == "a" && move.attributes["switchboard.to_worker"] == "b")
                #expect(offers.contains { $0.parentSpanID == move.spanID && $0.attributes["switchboard.worker_id"] == "b" })
                let end = try one("end", "switchboard-worker")
                #expect(starts.contains { $0.spanID == end.parentSpanID && $0.attributes["switchboard.worker_id"] == "b" })
                #expect(end.attributes["switchboard.end_reason"] == "caller" && !end.failed && !root.failed)
                // The handler on each worker got its start span's context, in the call's trace.
                let given = handler.traceparents.withLock { $0[callID] }
                let context = try #require(TraceContext(traceparent: given))
                #expect(context.traceID == root.traceID && starts.contains { $0.spanID == context.spanID })
                // The call's page finds its trace: the id on the timeline's placement, the link from the router's settings.
                let timeline = try decodeJSON(Timeline.self, try await cluster.http("GET", "/v1/calls/\(callID)/timeline").body)
                #expect(timeline.events.first { $0.type == "placed" }?.attributes["trace_id"] == root.traceID)
                let config = String(decoding: try await cluster.http("GET", "/ui/config.json").body, as: UTF8.self)
                #expect(config.contains("https://tempo.example/trace/{trace_id}"), "\(config)")
                try Agents.requireVenv()
                let shown = try await Agents.browser("call_page.py", ["--url", "\(cluster.routers[0].url)/ui/calls/\(callID)#key=\(TestCluster.adminKey)"])
                #expect(shown["trace"] as? String == "trace \(root.traceID)", "\(shown)")
                #expect(shown["trace_href"] as? String == "https://tempo.example/trace/\(root.traceID)", "\(shown)")
            }
        }
    }

    @Test func traceContextsAreReadAsW3CSaysAndBadOnesStartANewTrace() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let context = TraceContext(traceparent: good)
        #expect(context?.traceID == "4bf92f3577b34da6a3ce929d0e0e4736" && context?.spanID == "00f067aa0ba902b7")
        #expect(context?.traceparent == good)
        for bad in [nil, "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01"] {
            #expect(TraceContext(traceparent: bad) == nil, "\(bad ?? "nil")")
        }
        let child = context!.child()
        #expect(child.traceID == context!.traceID && child.spanID != context!.spanID)
        let root = TraceContext.root()
        #expect(TraceContext(traceparent: root.traceparent) == root)
    }

    @Test func tracingFollowsTheStandardVariables() throws {
        #expect(try Tracer.Configuration.fromEnvironment([:], defaultServiceName: "s") == nil, "off by default")
        let on = try #require(try Tracer.Configuration.fromEnvironment(
            ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "gw-eu",
             "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20x,team=voice", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"],
            defaultServiceName: "switchboard-gateway"))
        #expect(on.tracesURL.absoluteString == "http://collector:4318/v1/traces" && on.serviceName == "gw-eu")
        #expect(on.headers == ["authorization": "Bearer x", "team": "voice"] && on.resource == ["deployment.environment": "prod"])
        let direct = try Tracer.Configuration.fromEnvironment(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/x"], defaultServiceName: "s")
        #expect(direct?.tracesURL.absoluteString == "https://c/x" && direct?.serviceName == "s")
        #expect(try Tracer.Configuration.fromEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"],
                                                         defaultServiceName: "s") == nil)
        #expect(try Tracer.Configuration.fromEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"],
                                                         defaultServiceName: "s") == nil)
        #expect(throws: TracingError.self) {
            try Tracer.Configuration.fromEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"],
                                                     defaultServiceName: "s")
        }
        #expect(throws: TracingError.self) { try Tracer.Configuration.fromEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://c"], defaultServiceName: "s") }
    }
}
