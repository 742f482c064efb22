import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    /// Lets go of a call another worker holds now: its media stops at once; nothing is ended, the tenant's
    /// lease stays (the new owner holds the call).
    func letGo(_ callID: String) { handle(callID, .superseded) }

    /// Confirms, in one round trip, that this worker still owns each of its calls, and keeps what it owns alive
    /// in Redis: record and set TTLs, tenants' leases, and records Redis lost written again. Calls held at
    /// another epoch are let go of. Returns false when Redis did not answer.
    @discardableResult
    func refreshCalls() async -> Bool {
        let held = state.withLock { $0.calls.values.compactMap(\.held) }
        guard !held.isEmpty else { return true }
        var ok = true
        for start in stride(from: 0, to: held.count, by: 200) {
            let chunk = Array(held[start..<min(start + 200, held.count)])
            do {
                let results = try await callStore.refresh(chunk, worker: configuration.id, incarnation: incarnation,
                                                          version: configuration.version, region: configuration.region,
                                                          leaseTime: configuration.leaseTime)
                for (call, result) in zip(chunk, results) {
                    countMetered(call.tenant, result.meteredMillis)
                    switch result.ownership {
                    case .superseded:
                        letGo(call.callID)
                    case .reasserted:
                        logger.notice("call record was missing in Redis; written again", metadata: [LogKey.callID: "\(call.callID)"])
                    case .owned, .missing:
                        break
                    }
                }
                let reasserted = results.filter { $0.ownership == .reasserted }.count
                if reasserted > 0 {
                    metrics.increment(MetricNames.recordsReasserted, by: Double(reasserted),
                                      help: "Call records Redis had lost, written again by the worker that holds the call")
                }
            } catch {
                ok = false
                logger.warning("calls not refreshed in Redis", metadata: ["calls": "\(chunk.count)", LogKey.error: "\(error)"])
            }
        }
        return ok
    }

    /// Every refresh interval (and at once when a write found a record missing): `refreshCalls`, and the
    /// drain recorded for this worker read again (one a router asked for while this worker was cut off).
    func refreshLoop() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while !Task.isCancelled {
                    // Often enough for the tenants' leases too: three renewals per lease time.
                    try? await Task.sleep(for: min(configuration.refreshInterval, configuration.leaseTime / 3))
                    refreshTrigger.yield()
                }
            }
            for await _ in refreshTriggers {
                if await refreshCalls() { await repairRecords() }
                await meterAgentCPU()
                await syncDrainFromRedis()
                await syncDeployFromRedis()
            }
            group.cancelAll()
        }
    }

    /// Puts right what this worker's records say that is no longer so: ends Redis did not take are written
    /// again with their reason; calls its set lists that it does not hold (at two refreshes in a row) have their
    /// record ended `not_running` if it still names this worker process, else are left out of the set (but a
    /// previous process's calls under the same id are left to the routers' failover).
    func repairRecords() async {
        let pending = state.withLock { Array($0.repair.pendingEnds.values) }
        for end in pending {
            guard let ended = try? await callStore.end(end.callID, tenant: end.tenant, worker: configuration.id, epoch: end.epoch,
                                                       reason: end.reason, retention: configuration.endedCallRetention) else { return }
            countMetered(end.tenant, ended.meteredMillis)
            state.withLock { $0.repair.endWritten(end.callID) }
            logger.notice("call end recorded after Redis came back", metadata: [LogKey.callID: "\(end.callID)",
                                                                              LogKey.reason: "\(end.reason.rawValue)"])
            countRepair("end_written")
        }
        guard let listed = try? await callStore.calls(of: configuration.id) else { return }
        let strays = state.withLock { state in
            state.repair.listed(Set(listed), holding: Set(state.calls.keys).union(state.slots.calls))
        }
        for callID in strays {
            guard let fields = try? await callStore.fields(callID) else { return }
            let record = CallRecord(callID: callID, fields: fields)
            if let record, record.workerID == configuration.id, fields["incarnation"] != incarnation {
                continue  // a previous process's call under this id: the routers fail it over
            } else if let record, record.workerID == configuration.id, record.state != .ended {
                logger.warning("call recorded on this worker but not running here: ending its record",
                               metadata: [LogKey.callID: "\(callID)", LogKey.tenant: "\(record.tenant)"])
                if let ended = try? await callStore.end(callID, tenant: record.tenant, worker: configuration.id, epoch: record.epoch,
                                                        reason: .notRunning, retention: configuration.endedCallRetention) {
                    countMetered(record.tenant, ended.meteredMillis)
                }
                publishEvent(CallEvent(callID: callID, event: .ended, workerID: configuration.id,
                                       reason: EndReason.notRunning.rawValue, atMillis: wallClock.unixMillis))
                countRepair("stray_ended")
            } else {
                try? await callStore.forget(callID, worker: configuration.id)  // Redis unreachable: the next repair forgets it
                countRepair("stray_forgotten")
            }
        }
    }

    /// Counts call time metered for a tenant (at a refresh or a call's end).
    /// Adds the agent CPU time of calls finished since to their tenants' month of usage; what Redis does not
    /// take waits for the next refresh.
    func meterAgentCPU() async {
        let pending = state.withLock { state -> [String: Int64] in defer { state.agentCPU = [:] }; return state.agentCPU }
        guard !pending.isEmpty else { return }
        do {
            try await callStore.meterAgentCPU(pending, atMillis: wallClock.unixMillis)
        } catch {
            state.withLock { state in for (tenant, ms) in pending { state.agentCPU[tenant, default: 0] += ms } }
            logger.warning("agent CPU time not metered yet: Redis did not take it; tried again at the next refresh",
                           metadata: [LogKey.error: "\(error)"])
        }
    }

    func countMetered(_ tenant: String, _ millis: Int64) {
        metrics.countMetered(tenant: tenantLabels.label(tenant), millis: millis)
    }

    private func countRepair(_ result: String) {
        metrics.increment(MetricNames.recordsRepaired, ["result": result],
                          help: "Call records a worker put right: ends written late, strays in its set ended or forgotten")
    }

    /// Watches this process's own loop. After a stall longer than the routers' suspect time, every call is
    /// fenced (no audio) until one round trip confirms which are still this worker's; the others are let go
    /// of. Frames a handler sends before this loop runs again are held back by the watch itself.
    func watchLoop() async {
        stallWatch.touch()
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let gap = stallWatch.sinceLastTouch
            guard gap > stallWatch.limit else {
                stallWatch.touch()
                continue
            }
            logger.warning("this worker was stalled for \(gap.milliseconds) ms; confirming it still owns its calls before they speak")
            metrics.increment(MetricNames.ownershipChecks, ["cause": "stall"], help: "Times a worker confirmed it still owns its calls")
            await confirmOwnership { self.stallWatch.touch() }
            stallWatch.touch()
        }
    }

    /// Follows this worker's NATS connection: when it is back, ownership is confirmed (routers may have given
    /// the calls to others meanwhile) and the drain recorded for it is read again.
    func watchConnection() async {
        for await event in nats.events {
            switch event {
            case .reconnected:
                metrics.increment(MetricNames.ownershipChecks, ["cause": "reconnect"], help: "Times a worker confirmed it still owns its calls")
                await confirmOwnership()
                await syncDrainFromRedis()
                await syncDeployFromRedis()
                heartbeatTrigger.yield()
            case .closed:
                return
            case .disconnected, .error:
                continue
            }
        }
    }

    /// Fences every call (then runs `fenced`), confirms ownership, trying again until Redis answers, and
    /// unfences the calls still owned.
    private func confirmOwnership(fenced: () -> Void = {}) async {
        let sessions = state.withLock { $0.calls.values.map(\.session) }
        for session in sessions { session.fence(true) }
        fenced()
        while !(await refreshCalls()) && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
        }
        for session in sessions { session.fence(false) }
    }
}
