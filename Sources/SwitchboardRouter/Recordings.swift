import Foundation
import SwitchboardCore

/// A call's recording found on the recordings volume: its info and its files' absolute paths.
public struct StoredRecording: Sendable {
    public var info: RecordingInfo
    public var audioPath: String
    public var peaksPath: String
    public var infoPath: String
}

/// `DELETE /v1/calls/{id}/recording` and `DELETE /v1/tenants/{t}/recordings`: what went.
public struct RecordingsDeleted: Codable, Sendable, Equatable {
    public var tenant: String
    public var calls: [String]
    public var bytes: Int64
}

extension Router {
    /// Who may list calls and read or delete recordings: a tenant's key (its own calls: `tenant`), or an admin
    /// key (any). Tenancy off, only an admin key opens them.
    func callReader(_ authorization: String?, action: String) async throws(SwitchboardError) -> (tenant: String?, actor: String) {
        if configuration.tenancy {
            do throws(SwitchboardError) {
                if let policy = try await tenant(authorization: authorization) { return (policy.id, "tenant \(policy.id) (its key)") }
            } catch where error.code == .authenticationFailed {
                // An admin key is not a tenant's: asked below.
            }
        }
        return (nil, try await operatorName(authorization: authorization, action: action))
    }

    private func recordingsRoot() throws(SwitchboardError) -> URL {
        guard let directory = configuration.recordingsDirectory else {
            throw SwitchboardError(.notFound, "this router serves no recordings (no --recordings-dir)")
        }
        return URL(fileURLWithPath: directory)
    }

    /// The recording of `callID`, if `tenant` (when given) owns it; `not_found` otherwise, as if absent.
    public func recording(_ callID: String, tenant: String?) throws(SwitchboardError) -> StoredRecording {
        do {
            try WireCheck.identifier(callID, "call id")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        let root = try recordingsRoot()
        let notFound = SwitchboardError(.notFound, "no recording of call \(callID)")
        let tenants = tenant.map { [$0] } ?? ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).sorted()
        for owner in tenants {
            guard let paths = try? RecordingInfo.paths(tenant: owner, callID: callID),
                  let bytes = FileManager.default.contents(atPath: root.appendingPathComponent(paths.info).path)
            else { continue }
            let info: RecordingInfo
            do {
                info = try RecordingInfo.decodeStored(Array(bytes))
            } catch {
                logger.warning("a recording's info file cannot be read", metadata: ["path": "\(paths.info)", "error": "\(error)"])
                throw notFound
            }
            guard info.callID == callID, info.tenant == owner else { throw notFound }
            return StoredRecording(info: info, audioPath: root.appendingPathComponent(paths.audio).path,
                                   peaksPath: root.appendingPathComponent(paths.peaks).path, infoPath: root.appendingPathComponent(paths.info).path)
        }
        throw notFound
    }

    /// Deletes one call's recording (`tenant`: only if it owns it).
    public func deleteRecording(_ callID: String, tenant: String?) throws(SwitchboardError) -> RecordingsDeleted {
        let found = try recording(callID, tenant: tenant)
        let bytes = try remove([found.audioPath, found.peaksPath, found.infoPath])
        return RecordingsDeleted(tenant: found.info.tenant, calls: [callID], bytes: bytes)
    }

    /// Deletes every recording of `tenant`.
    public func purgeRecordings(of tenant: String) throws(SwitchboardError) -> RecordingsDeleted {
        do {
            try WireCheck.identifier(tenant, "tenant")
        } catch {
            throw SwitchboardError(.invalidArgument, error.message)
        }
        let folder = try recordingsRoot().appendingPathComponent(tenant)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        let calls = names.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(".json".count)) }.sorted()
        let bytes = try remove(names.map { folder.appendingPathComponent($0).path })
        try? FileManager.default.removeItem(at: folder)
        return RecordingsDeleted(tenant: tenant, calls: calls, bytes: bytes)
    }

    /// Removes the files; the bytes they held. - Throws: `internal_error` naming a file that is still there.
    private func remove(_ paths: [String]) throws(SwitchboardError) -> Int64 {
        var bytes: Int64 = 0
        var left: [String] = []
        for path in paths {
            let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int64 ?? 0
            do {
                try FileManager.default.removeItem(atPath: path)
                bytes += size
            } catch {
                if FileManager.default.fileExists(atPath: path) {
                    logger.error("a recording's file cannot be deleted", metadata: ["path": "\(path)", "error": "\(error)"])
                    left.append(path)
                }
            }
        }
        guard left.isEmpty else { throw SwitchboardError(.internalError, "\(left.count) files could not be deleted, e.g. \(left[0])") }
        return bytes
    }
}
