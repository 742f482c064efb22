import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardObservability

/// The gateway's one port: Twilio's voice webhook and media streams, the browser page and its calls, call
/// tokens for tenants' backends, and `/healthz`, `/readyz`, `/metrics` (docs/gateway.md).
public enum GatewayHTTP {
    public static func application(for gateway: Gateway, host: String, port: Int,
                                   onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let http = Router(context: BasicWebSocketRequestContext.self)
        http.middlewares.add(ErrorMiddleware(metrics: gateway.metrics))
        http.get("/healthz") { _, _ in json(#"{"ok":true}"#) }
        http.get("/readyz") { _, _ -> Response in
            let ready = gateway.isReady
            let why = gateway.isDraining ? "draining" : ready ? "ok" : "nats_disconnected"
            return json(#"{"ok":\#(ready),"state":"\#(why)"}"#, status: ready ? .ok : .serviceUnavailable)
        }
        http.get("/metrics") { _, _ -> Response in
            gateway.updateGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: gateway.metrics.render())))
        }
        for path in ["/", "/call"] {
            http.get(RouterPath(path)) { _, _ in page(BrowserPage.html, type: "text/html; charset=utf-8") }
        }
        http.get("/call.js") { _, _ in page(BrowserPage.script, type: "text/javascript; charset=utf-8") }
        http.get("/call-worklet.js") { _, _ in page(BrowserPage.worklet, type: "text/javascript; charset=utf-8") }
        http.post("/twilio/voice") { request, _ in try await gateway.voiceWebhook(request, tenant: nil) }
        http.post("/twilio/voice/:tenant") { request, context in
            try await gateway.voiceWebhook(request, tenant: context.parameters.get("tenant"))
        }
        http.post("/v1/call-tokens") { request, _ in try gateway.callToken(request) }

        let ws = Router(context: StreamRequestContext.self)
        ws.middlewares.add(ErrorMiddleware(metrics: gateway.metrics))
        for kind in LegKind.allCases {
            ws.ws(RouterPath("/\(kind.rawValue)/stream/:token")) { _, context in
                _ = try gateway.streamToken(context.parameters.get("token"), kind: kind, graceMillis: 0)
                return .upgrade([:])
            } onUpgrade: { inbound, outbound, context in
                // Checked before the upgrade; a token that expired in the milliseconds since still counts.
                guard let token = try? gateway.streamToken(context.requestContext.parameters.get("token"), kind: kind, graceMillis: 10_000) else { return }
                let channel = context.requestContext.channel
                await gateway.serve(kind: kind, tenant: token.tenant, inbound: inbound, outbound: outbound,
                                    logger: context.logger, cutOff: { channel.close(promise: nil) })
            }
        }
        return Application(
            router: http,
            server: .http1WebSocketUpgrade(webSocketRouter: ws, configuration: .init(
                // Frames up to twice the largest message taken reach the decoders, which refuse and count what is too
                // large; beyond that the connection is closed as WebSocket says (1009).
                ws: .init(maxFrameSize: 2 * TwilioStream.maxMessageBytes, autoPing: .enabled(timePeriod: .seconds(20)), closeTimeout: .seconds(2)))),
            configuration: .init(address: .hostname(host, port: port), serverName: "switchboard-gateway"),
            onServerRunning: { channel in
                // Accepted sockets inherit the listener's send buffer (Linux): a caller that stops reading holds up
                // no more than this in the kernel, and is found out by its queue filling.
                do {
                    try await channel.setOption(.socketOption(.so_sndbuf), value: SocketOptionValue(gateway.configuration.socketSendBuffer)).get()
                } catch {
                    gateway.logger.warning("the listener's send buffer cannot be set: a caller that stops reading holds up more before it is found out",
                                           metadata: [LogKey.error: "\(error)"])
                }
                await onRunning(channel.localAddress?.port ?? 0)
            },
            logger: gateway.logger
        )
    }

    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func page(_ text: String, type: String) -> Response {
        HTTPPage.response(text, type: type, contentSecurityPolicy: "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'")
    }
}

extension Gateway {
    /// Token keys per use, so a stream token cannot open a browser call or the other way round.
    func tokenSecret(_ kind: LegKind) -> [UInt8] {
        HMACSHA1.mac(key: configuration.tokenSecret, message: Array("switchboard-\(kind.rawValue)-stream".utf8))
    }

    /// A token that opens one `kind` of stream for `tenant` until `ttl` from now: `/{kind}/stream/{token}`.
    public func mintStreamToken(_ kind: LegKind, tenant: String, ttl: Duration) -> (token: String, expiresAtMillis: Int64) {
        let expires = wallClock.unixMillis + ttl.milliseconds
        return (StreamToken(tenant: tenant, expiresAtMillis: expires).encoded(secret: tokenSecret(kind)), expires)
    }

    /// The tenant a stream's token names. - Throws: `authentication_failed` (401) for a token that is not one
    /// of this gateway's, or that expired more than `graceMillis` ago.
    func streamToken(_ text: String?, kind: LegKind, graceMillis: Int64) throws(SwitchboardError) -> StreamToken {
        do {
            return try StreamToken.verify(text ?? "", secret: tokenSecret(kind), nowMillis: wallClock.unixMillis - graceMillis)
        } catch {
            refuse("bad_token")
            throw SwitchboardError(.authenticationFailed, "stream token refused: \(error.message)")
        }
    }

    /// The address callers reach this gateway at, from `--public-url` or the request's Host.
    func publicBase(_ request: Request) -> String {
        if let url = configuration.publicURL { return url.hasSuffix("/") ? String(url.dropLast()) : url }
        return "http://" + (request.head.authority ?? "localhost")
    }

    static func webSocketBase(_ base: String) -> String {
        if base.hasPrefix("https://") { return "wss://" + base.dropFirst("https://".count) }
        if base.hasPrefix("http://") { return "ws://" + base.dropFirst("http://".count) }
        return base
    }

    /// `POST /twilio/voice[/{tenant}]`: checks Twilio's signature, picks the tenant (the path's, or the called
    /// number's), and answers TwiML that connects the call to this gateway's media stream with a short-lived
    /// token in the stream's path.
    func voiceWebhook(_ request: Request, tenant pathTenant: String?) async throws -> Response {
        guard let authToken = configuration.twilioAuthToken else {
            refuse("twilio_not_configured")
            throw SwitchboardError(.unavailable, "this gateway has no Twilio auth token (--twilio-auth-token-file)")
        }
        var request = request
        let body = try await HTTPBody.collect(&request, limit: TwilioWebhook.maxBodyBytes)
        let form = try TwilioWebhook.form(body)
        let url = publicBase(request) + (request.uri.path) + (request.uri.query.map { "?" + $0 } ?? "")
        guard TwilioWebhook.isSigned(request.headers[HTTPField.Name("X-Twilio-Signature")!], authToken: authToken, url: url, parameters: form) else {
            refuse("bad_signature")
            metrics.increment(GatewayMetrics.webhooks, ["result": "bad_signature"], help: "Voice webhooks, by result")
            logger.warning("webhook refused: its X-Twilio-Signature does not match", metadata: ["url": "\(url)"])
            throw SwitchboardError(.authenticationFailed, "X-Twilio-Signature does not match this request")
        }
        let field = { (name: String) in form.first { $0.0 == name }?.1 }
        let tenant: String
        if let pathTenant {
            try WireCheck.identifier(pathTenant, "tenant")
            tenant = pathTenant
        } else if let to = field("To"), let mapped = configuration.numbers[to] {
            tenant = mapped
        } else {
            refuse("unknown_number")
            metrics.increment(GatewayMetrics.webhooks, ["result": "unknown_number"], help: "Voice webhooks, by result")
            logger.warning("webhook for a number no tenant has: rejecting the call", metadata: ["to": "\(field("To") ?? "-")"])
            return Response(status: .ok, headers: [.contentType: "text/xml"],
                            body: .init(byteBuffer: ByteBuffer(string: #"<?xml version="1.0" encoding="UTF-8"?><Response><Reject/></Response>"#)))
        }
        let token = mintStreamToken(.twilio, tenant: tenant, ttl: configuration.streamTokenTTL).token
        let streamURL = Self.webSocketBase(publicBase(request)) + "/twilio/stream/" + token
        let passed = ["From", "To", "CallSid"].compactMap { name in field(name).map { (name.lowercased(), $0) } }
        metrics.increment(GatewayMetrics.webhooks, ["result": "ok"], help: "Voice webhooks, by result")
        return Response(status: .ok, headers: [.contentType: "text/xml"],
                        body: .init(byteBuffer: ByteBuffer(string: TwilioWebhook.connectStream(url: streamURL, parameters: passed))))
    }

    /// `POST /v1/call-tokens` with a tenant's key: a short-lived token for one browser call of that tenant, so the
    /// key itself never reaches the browser.
    func callToken(_ request: Request) throws -> Response {
        let given = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)).trimmingCharacters(in: .whitespaces) : nil }
        var tenant: String?
        if let given {
            for (name, key) in configuration.tenantKeys.sorted(by: { $0.key < $1.key }) where ConstantTime.equal(given, key) { tenant = name }
        }
        guard let tenant else {
            refuse("bad_key")
            throw SwitchboardError(.authenticationFailed, "a tenant's key this gateway knows is needed: Authorization: Bearer <key>")
        }
        let (token, expires) = mintStreamToken(.browser, tenant: tenant, ttl: configuration.callTokenTTL)
        let url = Self.webSocketBase(publicBase(request)) + "/browser/stream/" + token
        return GatewayHTTP.json(#"{"token":"\#(token)","expires_at_ms":\#(expires),"url":"\#(url)","page":"\#(publicBase(request))/#token=\#(token)"}"#,
                                status: .created)
    }
}

/// The streams' request context: Hummingbird's, plus the caller's connection, so that a leg whose caller stopped
/// reading can be cut off (WebSocket's closing handshake would wait on its full socket for good).
struct StreamRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}
