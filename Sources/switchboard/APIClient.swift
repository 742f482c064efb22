import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SwitchboardCore

/// The operator commands' client for a router's HTTP API. API errors come back as `SwitchboardError` with the
/// API's code, so the CLI prints one clear line and exits with a fitting code.
struct APIClient {
    let base: String
    /// Sent as `Authorization: Bearer <key>`: a tenant's API key, or the operator's admin key.
    var key: String? = nil

    func get(_ path: String) async throws -> Data { try await send("GET", path, body: nil) }
    func delete(_ path: String) async throws -> Data { try await send("DELETE", path, body: nil) }
    func post(_ path: String, json body: some Encodable) async throws -> Data {
        try await send("POST", path, body: WireCodec.encode(body))
    }
    func post(_ path: String) async throws -> Data { try await send("POST", path, body: nil) }
    func put(_ path: String, json body: some Encodable) async throws -> Data {
        try await send("PUT", path, body: WireCodec.encode(body))
    }

    private func send(_ method: String, _ path: String, body: [UInt8]?) async throws -> Data {
        guard let url = URL(string: base.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path) else {
            throw SwitchboardError(.invalidArgument, "bad router URL '\(base)'")
        }
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = method
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        request.setValue(Self.actor, forHTTPHeaderField: "X-Switchboard-Actor")
        if let body {
            request.httpBody = Data(body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response): (Data, URLResponse)
        do {
            // In a task of its own, never cancelled: FoundationNetworking on Linux can crash ("a task that is not
            // in the registry") when the task awaiting a request is cancelled mid-flight, as `switchboard dev`
            // does to its callers on Ctrl-C. The request's own timeout bounds the wait.
            (data, response) = try await Task { [request] in try await URLSession.shared.data(for: request) }.value
        } catch {
            throw SwitchboardError(.connectionFailed, "cannot reach the router at \(base): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            if let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: data) {
                var error = SwitchboardError(api: envelope.error)
                error.context["http_status"] = "\(status)"
                throw error
            }
            throw SwitchboardError(.serverError, "router answered HTTP \(status)")
        }
        return data
    }

    /// Who runs this command, for the router's audit of operator actions: `user@host`.
    static let actor: String = {
        let user = ProcessInfo.processInfo.environment["USER"] ?? NSUserName()
        return "\(user)@\(ProcessInfo.processInfo.hostName)"
    }()
}
