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
        /// Answers to give the next posts, in order, before taking any (then 200 and the spans are kept).
        let refusals: Mutex<[HTTPResponse.Status]>
        let posts = Mutex(0)
        init(refusals: [HTTPResponse.Status]) { self.refusals = Mutex(refusals) }
    }
    private let store: Store
    /// Every span received so far.
    var spans: [ReceivedSpan] { store.spans.withLock { $0 } }
    /// How many exports were posted here, refused ones included.
    var posts: Int { store.posts.withLock { $0 } }
    let task: Task<Void, any Error>
    let group: ServiceGroup
    let url: String

    fileprivate init(refusing refusals: [HTTPResponse.Status] = []) async throws {
        let store = Store(refusals: refusals)
        self.store = store
        let routes = Router()
        routes.post("/v1/traces") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 20)
            store.posts.withLock { $0 += 1 }
            if let refusal = store.refusals.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return Response(status: refusal) }
            guard let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                return Response(status: .badRequest)
            }
            // A batch sent again after a timeout the collector did answer in the end arrives twice, as OTLP allows:
            // kept once, as a store keyed by span id would.
            store.spans.withLock { spans in spans += Self.parse(object).filter { !spans.contains($0) } }
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
    func tracer(_ service: String, metrics: MetricsRegistry = MetricsRegistry()) -> Tracer {
        Tracer(Tracer.Configuration(tracesURL: URL(string: url + "/v1/traces")!, serviceName: service), metrics: metrics, logger: quiet)
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

/// Starts a collector (which first answers `refusing`, one a post), runs `body` with it, and stops it when `body`
/// returns or throws (then rethrows).
func withOTLPReceiver(refusing: [HTTPResponse.Status] = [], _ body: (OTLPReceiver) async throws -> Void) async throws {
    let collector = try await OTLPReceiver(refusing: refusing)
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

                let hungUp = ContinuousClock.now
                var spans: [OTLPReceiver.ReceivedSpan] = []
                var missing: [String] = []
                // Members export in batches of their own, and a batch not taken (a loaded machine's 5 s timeout) goes again
                // a second later: wait until every span's parent has arrived too. A move asked again after a 503 leaves a
                // failed attempt's spans besides the one that went through. A 503 can also come with the move made: when the
                // router read the record before worker b's late accept wrote it, the move's span fails and names no
                // `to_worker`, and the trace shows the move by its offer to b and b's start under it.
                try await eventually(timeout: .seconds(30), "every member's spans of the call, each with its parent",
                                     detail: "missing \(missing), of \(spans.map { "\($0.service)/\($0.name)" })") {
                    spans = collector.spans
                    let names = Set(spans.map(\.name)), ids = Set(spans.map(\.spanID))
                    missing = ["call", "route", "placement", "offer", "start", "move", "end"].filter { !names.contains($0) }
                    if spans.filter({ $0.name == "start" }).count < 2 { missing.append("a second start") }
                    if !spans.contains(where: { $0.name == "call" && $0.service == "switchboard-gateway" }) { missing.append("the gateway's call") }
                    if moveToB(spans) == nil { missing.append("a move from a with an offer to b, b's start under it") }
                    missing += spans.filter { span in span.parentSpanID.map { !ids.contains($0) } ?? false }
                        .map { "the parent of \($0.service)/\($0.name)" }
                    return missing.isEmpty
                }
                print("traces: every span in \(ContinuousClock.now - hungUp) after the hang-up; \(collector.posts) exports")
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
                let move = try #require(moveToB(trace), "the move from a to b")
                #expect(move.failed || move.attributes["switchboard.to_worker"] == "b", "a move that went through names where to: \(move)")
                #expect(trace.filter { $0.name == "move" && !$0.failed }.allSatisfy { $0.attributes["switchboard.to_worker"] != nil })
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

    /// A collector that is briefly unavailable (503, 429) gets the spans on a later try, with none counted lost; one
    /// that refuses a batch as bad (400) has it dropped at once and counted, and the spans after it still go.
    @Test func spansACollectorCouldNotTakeForAMomentAreSentAgain() async throws {
        func spans(_ tracer: Tracer, _ names: [String]) { for name in names { tracer.start(name, parent: nil).end() } }
        try await withOTLPReceiver(refusing: [.serviceUnavailable, .tooManyRequests]) { collector in
            let metrics = MetricsRegistry()
            let tracer = collector.tracer("switchboard-worker", metrics: metrics)
            spans(tracer, ["a", "b", "c"])
            await tracer.flush(retryingLater: true)
            #expect(collector.posts == 1 && collector.spans.isEmpty, "refused once, kept for later")
            spans(tracer, ["d"])
            await tracer.flush(retryingLater: true)
            #expect(collector.posts == 2 && collector.spans.isEmpty)
            await tracer.flush(retryingLater: true)
            #expect(collector.spans.map(\.name) == ["a", "b", "c", "d"], "sent in the order made, once")
            #expect(metrics.value(MetricNames.spans, ["result": "exported"]) == 4 && metrics.value(MetricNames.spans, ["result": "failed"]) == nil)
        }
        try await withOTLPReceiver(refusing: [.badRequest]) { collector in
            let metrics = MetricsRegistry()
            let tracer = collector.tracer("switchboard-worker", metrics: metrics)
            spans(tracer, ["a"])
            await tracer.flush(retryingLater: true)
            spans(tracer, ["b"])
            await tracer.flush(retryingLater: true)
            #expect(collector.spans.map(\.name) == ["b"] && collector.posts == 2)
            #expect(metrics.value(MetricNames.spans, ["result": "failed"]) == 1 && metrics.value(MetricNames.spans, ["result": "exported"]) == 1)
        }
        // Unavailable for longer than the tries: dropped after `maxTries`, counted; nothing is kept for a stop's flush.
        try await withOTLPReceiver(refusing: Array(repeating: .serviceUnavailable, count: Tracer.maxTries + 1)) { collector in
            let metrics = MetricsRegistry()
            let tracer = collector.tracer("switchboard-worker", metrics: metrics)
            spans(tracer, ["a"])
            for _ in 0..<Tracer.maxTries { await tracer.flush(retryingLater: true) }
            #expect(collector.posts == Tracer.maxTries && metrics.value(MetricNames.spans, ["result": "failed"]) == 1)
            spans(tracer, ["b"])
            await tracer.flush(retryingLater: false)
            #expect(collector.posts == Tracer.maxTries + 1 && metrics.value(MetricNames.spans, ["result": "failed"]) == 2 && collector.spans.isEmpty)
        }
    }

    /// The span of the move from worker a that took the call to b: an offer to b under it, and b's start under
    /// that offer.
    private func moveToB(_ spans: [OTLPReceiver.ReceivedSpan]) -> OTLPReceiver.ReceivedSpan? {
        spans.first { move in
            move.name == "move" && move.attributes["switchboard.from_worker"] == "a" && spans.contains { offer in
                offer.name == "offer" && offer.parentSpanID == move.spanID && offer.attributes["switchboard.worker_id"] == "b"
                    && spans.contains { $0.name == "start" && $0.parentSpanID == offer.spanID && $0.attributes["switchboard.worker_id"] == "b" }
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
