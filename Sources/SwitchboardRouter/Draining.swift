import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

/// The answer to a drain or undrain: the drain now in force (nil after undrain), and whether the worker
/// itself confirmed (a worker cut off from NATS applies the drain from Redis when it is back).
public struct DrainResult: Codable, Sendable, Equatable {
    public var workerID: String
    public var drain: DrainRequest?
    public var confirmed: Bool
    public var state: String?
    public var activeCalls: Int?

    enum CodingKeys: String, CodingKey {
        case drain, confirmed, state
        case workerID = "worker_id", activeCalls = "active_calls"
    }
}

extension Router {
    // MARK: - Drains

    /// Drains a worker: kept in Redis (it outlives this router and the worker's reconnects), applied in every
    /// router's view at once (no new call lands there from the moment this returns), and sent to the worker,
    /// which refuses offers from then on and leaves when its last call is gone.
    public func drain(_ workerID: String, deadline: Duration, atDeadline: AtDeadline, actor: String) async throws(SwitchboardError) -> DrainResult {
        try WireCheck.identifier(workerID, "worker_id")
        try DrainRequest.checkDeadline(seconds: Double(deadline.milliseconds) / 1000)
        guard state.withLock({ $0.known.registry.entries[workerID] != nil }) else {
            throw SwitchboardError(.notFound, "no worker \(workerID) is known (see switchboard node list)")
        }
        let now = wallClock.unixMillis
        let request = DrainRequest(workerID: workerID, deadlineMillis: now + deadline.milliseconds, atDeadline: atDeadline,
                                   requestedBy: actor, requestedAtMillis: now)
        do {
            try await drainStore.save(request)
        } catch {
            throw SwitchboardError(.unavailable, "the drain cannot be kept in Redis: \(error.message)")
        }
        setDrain(workerID, request)
        metrics.increment(MetricNames.drainRequests, ["op": "drain"], help: "Drain and undrain requests")
        let reply = try? await control(workerID, WorkerControl(.drain, drain: request))
        logger.notice("worker draining", metadata: [LogKey.workerID: "\(workerID)", "deadline_ms": "\(request.deadlineMillis)",
                                                    "at_deadline": "\(atDeadline.rawValue)", "by": "\(actor)",
                                                    "confirmed": "\(reply != nil)"])
        return DrainResult(workerID: workerID, drain: request, confirmed: reply != nil, state: reply?.state.rawValue,
                           activeCalls: reply?.activeCalls)
    }

    /// Cancels a worker's drain; `conflict` when it is too late (its calls are being ended, or it is leaving).
    public func undrain(_ workerID: String, actor: String) async throws(SwitchboardError) -> DrainResult {
        try WireCheck.identifier(workerID, "worker_id")
        let known = state.withLock { $0.known.registry.entries[workerID] != nil || $0.known.registry.drains[workerID] != nil }
        guard known else { throw SwitchboardError(.notFound, "no worker \(workerID) is known (see switchboard node list)") }
        var reply: WorkerControlReply?
        do {
            reply = try await control(workerID, WorkerControl(.undrain))
        } catch where error.code == .conflict {
            throw error
        } catch {
            reply = nil  // not reachable: the record in Redis decides when it is back
        }
        do {
            try await drainStore.remove(workerID)
        } catch {
            throw SwitchboardError(.unavailable, "the drain cannot be removed from Redis: \(error.message)")
        }
        setDrain(workerID, nil)
        metrics.increment(MetricNames.drainRequests, ["op": "undrain"], help: "Drain and undrain requests")
        logger.notice("worker drain cancelled", metadata: [LogKey.workerID: "\(workerID)", "by": "\(actor)"])
        return DrainResult(workerID: workerID, drain: nil, confirmed: reply != nil, state: reply?.state.rawValue,
                           activeCalls: reply?.activeCalls)
    }

    /// Applies a drain (or its end) to this router's view and tells every other router.
    private func setDrain(_ workerID: String, _ request: DrainRequest?) {
        _ = state.withLock { $0.known.modify(.drain(worker: workerID, request), now: clock.now) }
        // A router that misses the notice reads the drains from Redis at its next refresh.
        try? nats.publish(configuration.subjects.drains, payload: DrainNotice(workerID: workerID, drain: request).encoded())
    }

    /// Another router or a worker announced a drain.
    func ingestDrainNotice(_ message: NATSMessage) {
        do {
            let notice = try DrainNotice.decode(message.payload)
            _ = state.withLock { $0.known.modify(.drain(worker: notice.workerID, notice.drain), now: clock.now) }
        } catch {
            countBadMessage("drain_notice", error)
        }
    }

    /// Reads the drains kept in Redis into this router's view: at start (a restarted router keeps to drains
    /// asked of another) and now and then after (a notice missed while disconnected).
    func loadDrains() async {
        let drains: [String: DrainRequest]
        do {
            let stored = try await drainStore.loadAll()
            drains = stored.drains
            for worker in stored.unreadable {
                logger.warning("unreadable drain in Redis ignored", metadata: [LogKey.workerID: "\(worker)"])
            }
        } catch {
            logger.warning("drains not read from Redis", metadata: [LogKey.error: "\(error)"])
            return
        }
        _ = state.withLock { $0.known.modify(.drainsRead(drains), now: clock.now) }
    }

    // MARK: - Audit

    /// Appends an operator action to the audit stream. One that cannot be written is logged with all it
    /// holds, never silently dropped.
    func audit(_ action: String, target: String, actor: String, outcome: String, detail: String = "") async {
        let entry = AuditEntry(atMillis: wallClock.unixMillis, actor: actor, action: action, target: target, outcome: outcome, detail: detail)
        do {
            try await AuditLog(redis: redis, keys: configuration.keys, length: configuration.auditLength).append(entry)
        } catch {
            logger.error("audit entry not written", metadata: ["action": "\(action)", "target": "\(target)", "actor": "\(actor)",
                                                               "outcome": "\(outcome)", LogKey.error: "\(error)"])
        }
    }

    /// The latest audit entries, newest first.
    public func auditEntries(limit: Int) async throws(SwitchboardError) -> [AuditEntry] {
        do {
            return try await AuditLog(redis: redis, keys: configuration.keys).entries(limit: limit)
        } catch where error.code != .invalidArgument {
            throw SwitchboardError(.unavailable, "cannot read the audit stream: \(error.message)")
        }
    }

    /// Runs an operator action and records it in the audit stream with its outcome.
    func audited<T>(_ action: String, target: String, actor: String, detail: String = "",
                    _ body: () async throws(SwitchboardError) -> T) async throws(SwitchboardError) -> T {
        do {
            let result = try await body()
            await audit(action, target: target, actor: actor, outcome: "ok", detail: detail)
            return result
        } catch {
            await audit(action, target: target, actor: actor, outcome: error.api.code, detail: [detail, error.message].filter { !$0.isEmpty }.joined(separator: "; "))
            throw error
        }
    }
}
