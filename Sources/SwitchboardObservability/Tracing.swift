import Foundation
import Logging
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A W3C trace context (`traceparent: 00-<trace id>-<span id>-<flags>`): which trace a span belongs to and which
/// span is its parent. It crosses NATS in message headers, HTTP in the `traceparent` header, and reaches an
/// agent in its start message's `customParameters`.
public struct TraceContext: Sendable, Equatable, Hashable {
    /// 32 lowercase hex digits, not all zero.
    public let traceID: String
    /// 16 lowercase hex digits, not all zero.
    public let spanID: String

    /// A new trace's first span.
    public static func root() -> TraceContext { TraceContext(traceID: hex(16), spanID: hex(8)) }

    /// A new span in this trace.
    public func child() -> TraceContext { TraceContext(traceID: traceID, spanID: Self.hex(8)) }

    private init(traceID: String, spanID: String) {
        self.traceID = traceID
        self.spanID = spanID
    }

    /// Reads a `traceparent` header; nil for anything that is not a valid version-00 one (a bad header starts
    /// a new trace, as the W3C spec says, rather than failing the request).
    public init?(traceparent: String?) {
        guard let text = traceparent?.trimmingCharacters(in: .whitespaces), text.utf8.count == 55 else { return nil }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
              parts.dropFirst().allSatisfy({ $0.utf8.allSatisfy(Self.isHex) }),
              parts[1].contains(where: { $0 != "0" }), parts[2].contains(where: { $0 != "0" })
        else { return nil }
        traceID = String(parts[1])
        spanID = String(parts[2])
    }

    /// The `traceparent` header for this span (always sampled: a member that traces exports every span).
    public var traceparent: String { "00-\(traceID)-\(spanID)-01" }

    private static func isHex(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) || (0x61...0x66).contains(byte) }

    private static func hex(_ bytes: Int) -> String {
        var out = ""
        repeat {
            out = (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        } while !out.contains(where: { $0 != "0" })
        return out
    }
}

/// One operation of a call on one member, exported when it ends.
public final class Span: Sendable {
    public enum Kind: Int, Sendable {
        case `internal` = 1, server = 2, client = 3
    }

    public let name: String
    public let kind: Kind
    public let context: TraceContext
    public let parentSpanID: String?
    let startNanos: UInt64
    private let tracer: Tracer?

    private struct State {
        var attributes: [String: String] = [:]
        var error: String?
        var ended = false
    }
    private let state = Mutex(State())

    init(name: String, kind: Kind, context: TraceContext, parentSpanID: String?, attributes: [String: String], tracer: Tracer?) {
        self.name = name
        self.kind = kind
        self.context = context
        self.parentSpanID = parentSpanID
        self.tracer = tracer
        startNanos = Tracer.nowNanos()
        state.withLock { $0.attributes = attributes }
    }

    public func set(_ key: String, _ value: String) {
        state.withLock { $0.attributes[key] = String(value.utf8.prefix(256)) ?? "" }
    }

    /// The operation failed: the span's status is an error with this message.
    public func fail(_ message: String) {
        state.withLock { $0.error = String(message.utf8.prefix(256)) ?? "" }
    }

    /// Ends the span (once) and queues it for export.
    public func end() {
        let ended = state.withLock { state -> (attributes: [String: String], error: String?)? in
            guard !state.ended else { return nil }
            state.ended = true
            return (state.attributes, state.error)
        }
        guard let ended, let tracer else { return }
        tracer.export(FinishedSpan(name: name, kind: kind, context: context, parentSpanID: parentSpanID, startNanos: startNanos,
                                   endNanos: Tracer.nowNanos(), attributes: ended.attributes, error: ended.error))
    }
}

struct FinishedSpan: Sendable {
    var name: String
    var kind: Span.Kind
    var context: TraceContext
    var parentSpanID: String?
    var startNanos: UInt64
    var endNanos: UInt64
    var attributes: [String: String]
    var error: String?
}

/// Where a member's spans go: OTLP over HTTP with JSON (`<endpoint>/v1/traces`), batched every second by
/// `run()`, at most `maxQueued` waiting (more are dropped and counted). A batch the collector could not take for
/// a passing reason (no answer, 429, 502, 503, 504, as OTLP says) is sent again on the next ticks, `maxTries` in
/// all. Nil when tracing is off (the default): members then make no spans at all.
public final class Tracer: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// `http://collector:4318`: spans are POSTed to `<endpoint>/v1/traces` (or `tracesURL` when given).
        public var tracesURL: URL
        public var serviceName: String
        public var headers: [String: String] = [:]
        /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
        public var resource: [String: String] = [:]

        public init(tracesURL: URL, serviceName: String) {
            self.tracesURL = tracesURL
            self.serviceName = serviceName
        }

        /// From the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
        /// `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`), `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`,
        /// `OTEL_RESOURCE_ATTRIBUTES`. Nil (off) without an endpoint, or with `OTEL_SDK_DISABLED=true` or
        /// `OTEL_TRACES_EXPORTER=none`. Only `http/json` is spoken: another `OTEL_EXPORTER_OTLP_PROTOCOL` is an
        /// error at start, not a silent nothing.
        public static func fromEnvironment(_ environment: [String: String], defaultServiceName: String) throws -> Configuration? {
            if environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" || environment["OTEL_TRACES_EXPORTER"]?.lowercased() == "none" {
                return nil
            }
            let url: URL
            if let traces = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], !traces.isEmpty {
                guard let parsed = URL(string: traces), parsed.scheme == "http" || parsed.scheme == "https" else {
                    throw TracingError("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must be an http(s) URL, not '\(traces)'")
                }
                url = parsed
            } else if let base = environment["OTEL_EXPORTER_OTLP_ENDPOINT"], !base.isEmpty {
                guard let parsed = URL(string: base.hasSuffix("/") ? base + "v1/traces" : base + "/v1/traces"),
                      parsed.scheme == "http" || parsed.scheme == "https"
                else { throw TracingError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, not '\(base)'") }
                url = parsed
            } else {
                return nil
            }
            let protocolName = environment["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? environment["OTEL_EXPORTER_OTLP_PROTOCOL"] ?? "http/json"
            guard protocolName == "http/json" else {
                throw TracingError("this build exports OTLP traces as http/json only; OTEL_EXPORTER_OTLP_PROTOCOL is '\(protocolName)'")
            }
            var configuration = Configuration(tracesURL: url, serviceName: environment["OTEL_SERVICE_NAME"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultServiceName)
            configuration.headers = pairs(environment["OTEL_EXPORTER_OTLP_HEADERS"])
            configuration.resource = pairs(environment["OTEL_RESOURCE_ATTRIBUTES"])
            return configuration
        }

        /// `k1=v1,k2=v2` (values percent-decoded), as the OTel variables write them.
        static func pairs(_ text: String?) -> [String: String] {
            var out: [String: String] = [:]
            for item in (text ?? "").split(separator: ",") {
                guard let eq = item.firstIndex(of: "=") else { continue }
                let key = item[..<eq].trimmingCharacters(in: .whitespaces), value = String(item[item.index(after: eq)...])
                if !key.isEmpty { out[key] = value.removingPercentEncoding ?? value }
            }
            return out
        }
    }

    public let configuration: Configuration
    private let metrics: MetricsRegistry
    private let logger: Logger
    /// The spans waiting, oldest first, and how often the first batch of them was tried.
    private struct Queue {
        var spans: [FinishedSpan] = []
        var headTries = 0
    }
    private let queue = Mutex(Queue())
    public static let maxQueued = 10_000
    static let maxBatch = 512
    public static let maxTries = 5

    public init(_ configuration: Configuration, metrics: MetricsRegistry, logger: Logger) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    /// Starts a span: a child of `parent` (in its trace), or the first span of a new trace.
    public func start(_ name: String, kind: Span.Kind = .internal, parent: TraceContext?, attributes: [String: String] = [:]) -> Span {
        Span(name: name, kind: kind, context: parent?.child() ?? .root(), parentSpanID: parent?.spanID, attributes: attributes, tracer: self)
    }

    func export(_ span: FinishedSpan) {
        let accepted = queue.withLock { queue -> Bool in
            guard queue.spans.count < Self.maxQueued else { return false }
            queue.spans.append(span)
            return true
        }
        if !accepted { count("dropped", 1) }
    }

    private func count(_ result: String, _ n: Int) {
        metrics.increment(MetricNames.spans, ["result": result], by: Double(n), help: "Trace spans, by what became of them")
    }

    /// Sends what is queued every second, until cancelled; then once more, without keeping what fails.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            await flush(retryingLater: true)
        }
        await flush(retryingLater: false)
    }

    /// Sends the queued spans, in batches. A batch the collector does not take is dropped (counted, logged), unless
    /// it failed for a passing reason and `retryingLater`: then it goes back to the queue's head and this flush
    /// stops, to try again on the next, up to `maxTries` in all.
    public func flush(retryingLater: Bool = false) async {
        while true {
            let batch = queue.withLock { queue -> [FinishedSpan] in
                let batch = Array(queue.spans.prefix(Self.maxBatch))
                queue.spans.removeFirst(batch.count)
                return batch
            }
            guard !batch.isEmpty else { return }
            let failure = await send(batch)
            guard let failure else {
                queue.withLock { $0.headTries = 0 }
                count("exported", batch.count)
                continue
            }
            let kept = queue.withLock { queue -> (tries: Int, dropped: Int)? in
                queue.headTries += 1
                guard retryingLater, failure.passing, queue.headTries < Self.maxTries else {
                    queue.headTries = 0
                    return nil
                }
                // Put back before what came since; what no longer fits is the newest.
                queue.spans.insert(contentsOf: batch, at: 0)
                let over = max(0, queue.spans.count - Self.maxQueued)
                queue.spans.removeLast(over)
                return (queue.headTries, over)
            }
            if let kept {
                if kept.dropped > 0 { count("dropped", kept.dropped) }
                logger.info("trace spans not exported yet; trying again",
                            metadata: ["spans": "\(batch.count)", "try": "\(kept.tries)", "error": "\(failure.error)"])
                return
            }
            count("failed", batch.count)
            logger.warning("trace spans not exported", metadata: ["spans": "\(batch.count)", "error": "\(failure.error)"])
        }
    }

    /// POSTs one batch; nil when the collector took it, else why not and whether trying again may help.
    private func send(_ batch: [FinishedSpan]) async -> (error: any Error, passing: Bool)? {
        var request = URLRequest(url: configuration.tracesURL, timeoutInterval: 5)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        for (name, value) in configuration.headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = Data(Self.otlpJSON(batch, configuration: configuration))
        let status: Int
        do {
            // In a task of its own, never cancelled: FoundationNetworking on Linux can crash when the task
            // awaiting a request is cancelled mid-flight. The request's timeout bounds the wait.
            let (_, response) = try await Task { [request] in try await URLSession.shared.data(for: request) }.value
            status = (response as? HTTPURLResponse)?.statusCode ?? 0
        } catch {
            return (error, true)
        }
        if (200..<300).contains(status) { return nil }
        return (TracingError("the collector answered HTTP \(status)"), Self.passingStatuses.contains(status))
    }

    /// The answers OTLP/HTTP says to send again after.
    static let passingStatuses: Set<Int> = [429, 502, 503, 504]

    /// An OTLP `ExportTraceServiceRequest` in JSON (ids in hex, times as decimal strings, as OTLP/JSON says).
    static func otlpJSON(_ spans: [FinishedSpan], configuration: Configuration) -> [UInt8] {
        func attributes(_ values: [String: String]) -> [[String: Any]] {
            values.sorted { $0.key < $1.key }.map { ["key": $0.key, "value": ["stringValue": $0.value]] }
        }
        var resource = configuration.resource
        resource["service.name"] = configuration.serviceName
        let body: [String: Any] = [
            "resourceSpans": [[
                "resource": ["attributes": attributes(resource)],
                "scopeSpans": [[
                    "scope": ["name": "switchboard"],
                    "spans": spans.map { span -> [String: Any] in
                        var out: [String: Any] = [
                            "traceId": span.context.traceID, "spanId": span.context.spanID, "name": span.name,
                            "kind": span.kind.rawValue, "startTimeUnixNano": String(span.startNanos),
                            "endTimeUnixNano": String(span.endNanos), "attributes": attributes(span.attributes),
                            "status": span.error.map { ["code": 2, "message": $0] as [String: Any] } ?? ["code": 1],
                        ]
                        if let parent = span.parentSpanID { out["parentSpanId"] = parent }
                        return out
                    },
                ]],
            ]],
        ]
        return (try? [UInt8](JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))) ?? []
    }

    static func nowNanos() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1e9)) }
}

public struct TracingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Optional where Wrapped == Tracer {
    /// A span when tracing is on; nil (and nothing done) when off.
    public func start(_ name: String, kind: Span.Kind = .internal, parent: TraceContext?, attributes: [String: String] = [:]) -> Span? {
        self?.start(name, kind: kind, parent: parent, attributes: attributes)
    }
}
