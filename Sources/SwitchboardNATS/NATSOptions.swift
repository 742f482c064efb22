import CNATS
import Foundation
import SwitchboardCore

/// Owns a `natsOptions *` built from our configuration; destroyed exactly once, when this object goes.
/// nats.c copies the options into the connection at connect, so this lives only through `connect`.
final class NATSOptions: @unchecked Sendable {  // immutable after init; only read by natsConnection_Connect
    let handle: OpaquePointer

    init(_ config: NATSConfiguration, sink: NATSEventSink) throws(SwitchboardError) {
        var opts: OpaquePointer?
        try check(natsOptions_Create(&opts), "creating connection options")
        guard let opts else { throw SwitchboardError(.internalError, "natsOptions_Create returned no options") }
        handle = opts
        try apply(config, sink: sink)
    }

    deinit { natsOptions_Destroy(handle) }

    private func apply(_ config: NATSConfiguration, sink: NATSEventSink) throws(SwitchboardError) {
        guard !config.servers.isEmpty else { throw SwitchboardError(.invalidArgument, "no NATS server URL given") }
        // A user and password (or a token) in a URL are taken out of it, percent-decoded, and given to nats.c
        // apart: it would not decode `%2F` or `%40`, and a URL without them is what its errors may show.
        var servers: [String] = [], urlUser: String?, urlPassword: String?
        for url in config.servers {
            let endpoint = try Endpoint.parse(url, defaultScheme: "nats", defaultPort: 4222)
            if urlUser == nil && urlPassword == nil { (urlUser, urlPassword) = (endpoint.user, endpoint.password) }
            servers.append(Endpoint(scheme: endpoint.scheme, host: endpoint.host, port: endpoint.port).redacted)
        }
        try withCStrings(servers) { urls throws(SwitchboardError) in
            try check(natsOptions_SetServers(handle, urls, Int32(servers.count)), "setting servers")
        }
        if let name = config.name { try check(natsOptions_SetName(handle, name), "setting the connection name") }
        // `nats://token@host`: a user without a password is a token, as nats.c reads URLs.
        let urlToken = urlPassword == nil ? urlUser : nil
        let user = config.user ?? (urlToken == nil ? urlUser : nil), password = config.password ?? urlPassword
        if user != nil || password != nil {
            try check(natsOptions_SetUserInfo(handle, user, password), "setting user and password")
        }
        if let token = config.token ?? urlToken { try check(natsOptions_SetToken(handle, token), "setting the token") }
        // Every credential signs through this process's own signer (see `NATSEventSink.identity`).
        if let identity = sink.identity {
            let context = Unmanaged.passUnretained(sink).toOpaque()
            if identity.jwt != nil {
                try check(natsOptions_SetUserCredentialsCallbacks(handle, onNATSUserJWT, context, onNATSSignNonce, context),
                          "setting the user credentials")
            } else {
                try check(natsOptions_SetNKey(handle, identity.key.publicKey, onNATSSignNonce, context), "setting the NKey")
            }
        }
        if let tls = config.tls {
            try check(natsOptions_SetSecure(handle, true), "enabling TLS")
            if let ca = tls.caFile {
                try check(natsOptions_LoadCATrustedCertificates(handle, ca), "loading CA file '\(ca)'")
            }
            if tls.certificateFile != nil || tls.keyFile != nil {
                guard let cert = tls.certificateFile, let key = tls.keyFile else {
                    throw SwitchboardError(.invalidArgument, "a TLS client certificate needs both a certificate file and a key file")
                }
                try check(natsOptions_LoadCertificatesChain(handle, cert, key), "loading client certificate '\(cert)'")
            }
            if let host = tls.expectedHostname {
                try check(natsOptions_SetExpectedHostname(handle, host), "setting the expected TLS host name")
            }
        }
        let reconnect = config.reconnect
        try check(natsOptions_SetAllowReconnect(handle, reconnect.enabled), "setting reconnect")
        try check(natsOptions_SetMaxReconnect(handle, Int32(reconnect.maxAttempts)), "setting reconnect attempts")
        try check(natsOptions_SetReconnectWait(handle, reconnect.wait.milliseconds), "setting reconnect wait")
        try check(natsOptions_SetReconnectJitter(handle, reconnect.jitter.milliseconds, reconnect.jitter.milliseconds),
                  "setting reconnect jitter")
        try check(natsOptions_SetReconnectBufSize(handle, Int32(reconnect.bufferBytes)), "setting the reconnect buffer")
        try check(natsOptions_SetTimeout(handle, config.connectTimeout.milliseconds), "setting the connect timeout")
        try check(natsOptions_SetMaxPendingMsgs(handle, Int32(max(1, config.pendingLimit))), "setting the pending limit")
        // Without this nats.c batches sends and a reply waits ~1 ms for its flusher (measured: p50 992 µs vs 140 µs).
        try check(natsOptions_SetSendAsap(handle, true), "setting send-as-soon-as-possible")
        // One shared pool of delivery threads, not a thread per subscription.
        try check(natsOptions_UseGlobalMessageDelivery(handle, true), "setting shared message delivery")
        try sink.install(on: handle)
    }
}

/// Calls `body` with the strings as a C array of C strings, valid only during the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>) throws(SwitchboardError) -> R) throws(SwitchboardError) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
    return try pointers.withUnsafeMutableBufferPointer { buffer throws(SwitchboardError) in try body(buffer.baseAddress!) }
}

extension NATSConfiguration {
    /// The user JWT (nil for an NKey user) and key this configuration signs in with, read from its files.
    func identity() throws(SwitchboardError) -> (jwt: String?, key: NKey)? {
        let ways = [credentialsFile != nil, credentials != nil, nkeySeedFile != nil].filter { $0 }.count
        guard ways <= 1 else { throw SwitchboardError(.invalidArgument, "give NATS one of a credentials file, credentials or an NKey seed file") }
        func read(_ path: String, _ what: String) throws(SwitchboardError) -> String {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw SwitchboardError(.invalidArgument, "cannot read the \(what) '\(path)'")
            }
            return text
        }
        if let credentialsFile {
            let credentials = try Credentials(creds: try read(credentialsFile, "NATS credentials file"))
            return (credentials.jwt, try NKey(seed: credentials.seed))
        }
        if let credentials { return (credentials.jwt, try NKey(seed: credentials.seed)) }
        if let nkeySeedFile { return (nil, try NKey(seed: try read(nkeySeedFile, "NKey seed file"))) }
        return nil
    }
}

