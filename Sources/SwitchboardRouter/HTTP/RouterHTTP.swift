import Foundation
import HTTPTypes
import Hummingbird
import SwitchboardHTTP
import Logging
import SwitchboardCore
import SwitchboardObservability

/// The router's HTTP API (Hummingbird). Every error is `{"error": {"code", "message"}}` with a fitting status;
/// see docs/api.md.
public enum RouterHTTP {
    /// Builds the application serving `router`'s API on the configured address.
    public static func application(for router: Router, onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol
    {
        let routes = Hummingbird.Router(context: RouterRequestContext.self)
        routes.add(middleware: ErrorMiddleware(metrics: router.metrics))
        let maxBody = router.configuration.maxBodyBytes
        // The operator's routes, behind one door: an admin key, or 401/403 (counted, and audited at most 5 a second).
        let operators = routes.group().add(middleware: OperatorOnly(router: router))

        routes.post("/v1/calls") { request, _ -> Response in
            var request = request
            let deadline = ContinuousClock.now + router.configuration.routeDeadline
            let body = try await HTTPBody.collect(&request, limit: maxBody)
            var route = try RouteRequest.decode(withVersion(body, tenantOptional: router.configuration.tenancy))
            if request.uri.queryParameters.get("explain") == "true" { route.explain = true }
            let tenant = try await router.tenant(authorization: request.headers[.authorization], deadline: deadline)
            let placement = try await router.route(route, tenant: tenant, deadline: deadline,
                                                   trace: TraceContext(traceparent: request.headers[HTTPField.Name("traceparent")!]))
            return json(placement, status: .created)
        }
        // The calls list: an admin key lists any tenant's; a tenant's key (tenancy on) its own alone.
        routes.get("/v1/calls") { request, _ -> Response in
            let reader = try await router.callReader(request.headers[.authorization], action: "list calls")
            var parameters: [String: String] = [:]
            for (name, value) in request.uri.queryParameters { parameters[String(name)] = String(value) }
            var query = try CallQuery.parse(parameters, nowMillis: router.wallClock.unixMillis)
            if let tenant = reader.tenant {
                guard query.tenant == nil || query.tenant == tenant else { throw SwitchboardError(.forbidden, "a tenant's key lists its own calls only") }
                query.tenant = tenant
            }
            return json(try await router.callStore.list(query))
        }
        routes.get("/ui/calls") { _, _ -> Response in page(CallsPage.html, type: "text/html; charset=utf-8") }
        routes.get("/ui/ui.js") { _, _ -> Response in page(UIPage.script, type: "text/javascript; charset=utf-8") }
        routes.get("/ui/calls-page.js") { _, _ -> Response in page(CallsPage.script, type: "text/javascript; charset=utf-8") }
        routes.get("/v1/calls/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            let tenant = try await router.tenant(authorization: request.headers[.authorization])
            return json(try await router.call(id, tenant: tenant))
        }
        routes.delete("/v1/calls/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            let tenant = try await router.tenant(authorization: request.headers[.authorization])
            _ = try await router.call(id, tenant: tenant)  // another tenant's call is not found
            return json(try await router.endCall(id))
        }
        // The operator's page of a call (the page asks for the timeline itself, with the key the operator gives).
        routes.get("/ui/calls/:id") { _, context -> Response in
            _ = try context.parameters.require("id")
            return page(CallPage.html, type: "text/html; charset=utf-8")
        }
        routes.get("/ui/call-page.js") { _, _ -> Response in page(CallPage.script, type: "text/javascript; charset=utf-8") }
        // What the pages need to know of this router's settings (nothing secret).
        routes.get("/ui/config.json") { _, _ -> Response in json(["trace_link": router.configuration.traceLink ?? ""]) }
        routes.get("/v1/calls/:id/timeline") { request, context -> Response in
            json(try await router.timeline(of: try context.parameters.require("id"), authorization: request.headers[.authorization]))
        }
        // A call's recording (Ogg Opus; Range requests), its waveform peaks and info, and deleting it or all of
        // a tenant's: with the owning tenant's key or an admin key.
        routes.get("/v1/calls/:id/recording") { request, context -> Response in
            let reader = try await router.callReader(request.headers[.authorization], action: "read a recording")
            let found = try router.recording(try context.parameters.require("id"), tenant: reader.tenant)
            return try await file(found.audioPath, type: "audio/ogg", request: request, context: context)
        }
        routes.get("/v1/calls/:id/recording/peaks") { request, context -> Response in
            let reader = try await router.callReader(request.headers[.authorization], action: "read a recording")
            let found = try router.recording(try context.parameters.require("id"), tenant: reader.tenant)
            return try await file(found.peaksPath, type: "application/octet-stream", request: request, context: context)
        }
        routes.get("/v1/calls/:id/recording/info") { request, context -> Response in
            let reader = try await router.callReader(request.headers[.authorization], action: "read a recording")
            return json(try router.recording(try context.parameters.require("id"), tenant: reader.tenant).info)
        }
        routes.delete("/v1/calls/:id/recording") { request, context -> Response in
            let reader = try await router.callReader(request.headers[.authorization], action: "delete a recording")
            let id = try context.parameters.require("id")
            return json(try await router.audited("delete recording", target: id, actor: reader.actor) { () throws(SwitchboardError) in
                try router.deleteRecording(id, tenant: reader.tenant)
            })
        }
        operators.delete("/v1/tenants/:tenant/recordings") { _, context -> Response in
            let tenant = try context.parameters.require("tenant")
            return json(try await router.audited("purge recordings", target: tenant, actor: context.actor) { () throws(SwitchboardError) in
                try router.purgeRecordings(of: tenant)
            })
        }
        routes.get("/v1/tenants/:tenant/usage") { request, context -> Response in
            json(try await router.usage(of: try context.parameters.require("tenant"), month: request.uri.queryParameters["month"].map(String.init),
                                        authorization: request.headers[.authorization]))
        }
        operators.get("/v1/workers") { _, _ -> Response in
            json(WorkersView(router.workerViews()))
        }
        operators.post("/v1/workers/:id/drain") { request, context -> Response in
            let actor = context.actor
            let id = try context.parameters.require("id")
            var request = request
            let body = try DrainBody.decode(try await HTTPBody.collect(&request, limit: maxBody))
            let deadline = try body.deadline(default: router.configuration.defaultDrainDeadline)
            let result = try await router.audited("drain", target: id, actor: actor,
                                                  detail: "deadline \(deadline), at deadline \(body.atDeadline ?? .migrate)") {
                () throws(SwitchboardError) in
                try await router.drain(id, deadline: deadline, atDeadline: body.atDeadline ?? .migrate, actor: actor)
            }
            return json(result, status: .accepted)
        }
        operators.post("/v1/workers/:id/undrain") { _, context -> Response in
            let (actor, id) = (context.actor, try context.parameters.require("id"))
            return json(try await router.audited("undrain", target: id, actor: actor) { () throws(SwitchboardError) in
                try await router.undrain(id, actor: actor)
            })
        }
        operators.post("/v1/calls/:id/migrate") { _, context -> Response in
            let (actor, id) = (context.actor, try context.parameters.require("id"))
            return json(try await router.audited("migrate", target: id, actor: actor) { () throws(SwitchboardError) in
                try await router.migrate(id, requestedBy: actor)
            })
        }
        operators.get("/v1/audit") { request, _ -> Response in
            json(AuditEntries(try await router.auditEntries(limit: try limit(request, default: 50))))
        }
        operators.get("/v1/deployment") { _, _ -> Response in
            json(try await router.deploymentStatus())
        }
        operators.put("/v1/deployment") { request, context -> Response in
            let actor = context.actor
            var request = request
            let body: DeployBody = try decodeBody(try await HTTPBody.collect(&request, limit: maxBody),
                                                  shape: #"{"version": "1.5.0", "canary_percent": 0-100, "canary_by": "call" or "tenant", "rollback_window_seconds", "drain_deadline_seconds", "at_deadline", "force", "revision"}"#)
            let change = try body.change()
            let canary = body.canaryPercent.map { " as canary at \($0)%" } ?? ""
            return json(try await router.audited("deploy", target: body.version, actor: actor,
                                                 detail: "\(body.version)\(canary)\(body.force == true ? ", forced" : "")") {
                () throws(SwitchboardError) in
                try await router.changeDeploy(change, force: body.force ?? false, expectedRevision: body.revision, actor: actor)
            })
        }
        for (path, action) in [("promote", "promote"), ("abort", "abort"), ("rollback", "rollback")] {
            operators.post("/v1/deployment/\(path)") { request, context -> Response in
                let actor = context.actor
                var request = request
                let bytes = try await HTTPBody.collect(&request, limit: maxBody)
                let body: DeployActionBody = bytes.isEmpty ? DeployActionBody()
                    : try decodeBody(bytes, shape: #"{"to": "1.4.0", "force": false, "revision": 7} (every field optional)"#)
                let change: DeployPolicy.Change = action == "promote" ? .promote : action == "abort" ? .abort : .rollback(to: body.to)
                return json(try await router.audited(action, target: action == "rollback" ? body.to ?? "previous" : "canary", actor: actor,
                                                     detail: body.force == true ? "forced" : "") { () throws(SwitchboardError) in
                    try await router.changeDeploy(change, force: body.force ?? false, expectedRevision: body.revision, actor: actor)
                })
            }
        }
        operators.get("/v1/deployment/history") { request, _ -> Response in
            json(DeployHistory(try await router.deployHistory(limit: try limit(request, default: 20))))
        }
        routes.get("/healthz") { _, _ -> Response in
            json(["status": "ok"])
        }
        routes.get("/readyz") { _, _ -> Response in
            let readiness = await router.readiness()
            return json(readiness, status: readiness.ready ? .ok : .serviceUnavailable)
        }
        routes.get("/metrics") { _, _ -> Response in
            router.updateWorkerGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: router.metrics.render())))
        }

        return Application(
            router: routes,
            configuration: .init(address: .hostname(router.configuration.httpHost, port: router.configuration.httpPort),
                                 serverName: "switchboard-router"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: router.logger
        )
    }

    /// The `limit` query parameter (the store checks its range).
    static func limit(_ request: Request, default fallback: Int) throws(SwitchboardError) -> Int {
        guard let text = request.uri.queryParameters.get("limit") else { return fallback }
        guard let limit = Int(text) else { throw SwitchboardError(.invalidArgument, "limit must be a whole number, got '\(text)'") }
        return limit
    }

    /// A JSON body of an operator request; `bad_request` showing `shape` when it is not one.
    static func decodeBody<T: Decodable>(_ body: [UInt8], shape: String) throws(SwitchboardError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch {
            throw SwitchboardError(.badMessage, "body must be \(shape)")
        }
    }

    /// HTTP clients may leave out the wire version; the path names the API version.
    /// With tenancy on, the key names the tenant and the body may leave `tenant` out.
    static func withVersion(_ body: [UInt8], tenantOptional: Bool = false) throws(SwitchboardError) -> [UInt8] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw SwitchboardError(.badMessage, body.isEmpty ? "empty request body" : "request body is not a JSON object")
        }
        let needsTenant = tenantOptional && object["tenant"] == nil
        guard object["v"] == nil || needsTenant else { return body }
        var versioned = object
        if needsTenant { versioned["tenant"] = "from-key" }  // replaced by the key's tenant
        if versioned["v"] == nil { versioned["v"] = RouteRequest.wireVersion }
        guard let data = try? JSONSerialization.data(withJSONObject: versioned) else {
            throw SwitchboardError(.badMessage, "request body cannot be read")
        }
        return [UInt8](data)
    }

    /// The operator routes' door: lets through a request with an admin key, with who asks in its context for the
    /// audit (the key's owner, its name in the router's key file, and the name the client gives in
    /// `X-Switchboard-Actor`, e.g. the CLI's user@host); a 401 or 403 for anyone else, which the router counts and
    /// audits under the route (`POST /v1/workers/{id}/drain`).
    struct OperatorOnly: RouterMiddleware {
        let router: Router

        func handle(_ request: Request, context: RouterRequestContext,
                    next: (Request, RouterRequestContext) async throws -> Response) async throws -> Response {
            let action = "\(request.method) \(context.endpointPath ?? request.uri.path)"
            let name = try await router.operatorName(authorization: request.headers[.authorization], action: action)
            let client = request.headers[HTTPField.Name("X-Switchboard-Actor")!].map { String($0.prefix(96)).filter { !$0.isNewline } }
            var context = context
            context.actor = "\(name) (admin key\(client.map { ", client \($0)" } ?? ""))"
            return try await next(request, context)
        }
    }

    /// A file, whole or the one byte range asked for (206 with its `Content-Range`), read in chunks.
    static func file(_ path: String, type: String, request: Request, context: some RequestContext) async throws -> Response {
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64 else {
            throw SwitchboardError(.notFound, "the recording's file is gone")
        }
        var headers: HTTPFields = [.contentType: type, .acceptRanges: "bytes", .cacheControl: "private, no-cache"]
        let range = try ByteRange.parse(request.headers[.range], size: size)
        guard size > 0 else { return Response(status: .ok, headers: headers) }
        let span = range ?? 0..<size
        headers[.contentLength] = "\(span.count)"
        if range != nil { headers[.contentRange] = "bytes \(span.lowerBound)-\(span.upperBound - 1)/\(size)" }
        let body = try await FileIO().loadFile(path: path, range: Int(span.lowerBound)...Int(span.upperBound - 1), context: context)
        return Response(status: range == nil ? .ok : .partialContent, headers: headers, body: body)
    }

    /// A page of the UI: served as is, with nothing allowed from elsewhere.
    static func page(_ text: String, type: String) -> Response {
        HTTPPage.response(text, type: type, contentSecurityPolicy: "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self' blob:")
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: WireCodec.encode(value))))
    }
}

/// The router API's request context: Hummingbird's, and who asks on an operator route.
public struct RouterRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The admin key's owner and the client's name, for the audit; set on operator routes (`OperatorOnly`).
    public var actor = ""

    public init(source: Source) { coreContext = .init(source: source) }
}

/// `POST /v1/workers/{id}/drain`: both fields optional (an empty body takes the defaults).
public struct DrainBody: Codable, Sendable {
    public var deadlineSeconds: Double?
    public var atDeadline: AtDeadline?

    public init(deadlineSeconds: Double? = nil, atDeadline: AtDeadline? = nil) {
        self.deadlineSeconds = deadlineSeconds
        self.atDeadline = atDeadline
    }

    enum CodingKeys: String, CodingKey {
        case deadlineSeconds = "deadline_seconds", atDeadline = "at_deadline"
    }

    static func decode(_ body: [UInt8]) throws(SwitchboardError) -> DrainBody {
        guard !body.isEmpty else { return DrainBody() }
        do {
            return try JSONDecoder().decode(DrainBody.self, from: Data(body))
        } catch {
            throw SwitchboardError(.badMessage, "drain body must be {\"deadline_seconds\": number, \"at_deadline\": \"migrate\" or \"end\"}")
        }
    }

    func deadline(default fallback: Duration) throws(SwitchboardError) -> Duration {
        guard let deadlineSeconds else { return fallback }
        try DrainRequest.checkDeadline(seconds: deadlineSeconds)
        return .milliseconds(Int64((deadlineSeconds * 1000).rounded()))
    }
}
