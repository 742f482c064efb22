import Foundation
import HTTPTypes
import Hummingbird
import SwitchboardCore

/// What every HTTP server here shares: bodies read with a size limit (errors: `HTTPErrors.swift`).
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
