import Logging
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    enum CheckpointResult { case written(Checkpoint), unchanged, moved, failed }

    /// Writes checkpoints in one script run; for each, whether this worker still owns the call.
    private func write(_ batch: [CallStore.CheckpointWrite]) async throws(SwitchboardError) -> [CallStore.Ownership] {
        try await callStore.checkpoint(batch, worker: configuration.id)
    }

    private func count(_ result: String, _ n: Int = 1) {
        metrics.increment(MetricNames.checkpoints, ["result": result], by: Double(n), help: "Call checkpoints written, by result")
    }

    /// Takes one call's checkpoint now (`always`, or to `hold` it for a migration; else only if its state
    /// changed) and writes it, if this worker still owns the call: the handler's `checkpoint()` and a hold.
    func writeCheckpoint(_ callID: String, _ session: CallSession, always: Bool = false, hold: Bool = false,
                         log: Logger) async -> CheckpointResult {
        do {
            guard let epoch = state.withLock({ $0.calls[callID]?.lifecycle.epoch }),
                  let checkpoint = try session.checkpoint(always: always, hold: hold, unixNowMillis: wallClock.unixMillis) else {
                return .unchanged
            }
            switch try await write([CallStore.CheckpointWrite(callID: callID, epoch: epoch, checkpoint: checkpoint)]).first {
            case .owned?, .reasserted?:
                break
            case .missing?:
                refreshTrigger.yield()  // Redis lost the record: write it again now
                count("missing")
                return .failed
            case .superseded?, nil:
                count("moved")
                return .moved  // the caller lets go of it
            }
            count("written")
            note(callID, "checkpoint", ["seq": "\(checkpoint.seq)", "reason": hold ? "hold" : "handler"])
            return .written(checkpoint)
        } catch {
            count(error.code.rawValue)
            log.warning("checkpoint not written", metadata: [LogKey.error: "\(error)"])
            note(callID, "checkpoint_failed", ["code": error.code.rawValue, "reason": hold ? "hold" : "handler"])
            return .failed
        }
    }

    /// Every interval, the checkpoints of all calls whose state changed, in batches of up to 200 per script
    /// run: one round trip a second for a worker's calls, not one per call.
    func checkpointLoop() async {
        var unwritten: Set<String> = []  // taken but not written (Redis was unreachable): taken again next time
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.checkpointInterval)
            let now = wallClock.unixMillis
            let calls = state.withLock { $0.calls.compactMap { id, call in call.lifecycle.epoch.map { (id, call.session, $0) } } }
            unwritten.formIntersection(calls.map(\.0))
            var batch: [CallStore.CheckpointWrite] = []
            for (callID, session, epoch) in calls {
                do {
                    if let checkpoint = try session.checkpoint(always: unwritten.contains(callID), unixNowMillis: now) {
                        batch.append(CallStore.CheckpointWrite(callID: callID, epoch: epoch, checkpoint: checkpoint))
                    }
                } catch {
                    count(error.code.rawValue)
                    logger.error("checkpoint not taken", metadata: [LogKey.callID: "\(callID)", LogKey.error: "\(error)"])
                }
            }
            for start in stride(from: 0, to: batch.count, by: 200) {
                let chunk = Array(batch[start..<min(start + 200, batch.count)])
                do {
                    let owned = try await write(chunk)
                    unwritten.subtract(chunk.map(\.callID))
                    for (item, ownership) in zip(chunk, owned) {
                        switch ownership {
                        case .owned, .reasserted:
                            // On the timeline: a call's first checkpoint (from then on it can be resumed elsewhere);
                            // the periodic ones after it would crowd the timeline out.
                            if item.checkpoint.seq <= 1 { note(item.callID, "checkpoint", ["seq": "\(item.checkpoint.seq)", "reason": "first"]) }
                        case .missing: unwritten.insert(item.callID)
                        case .superseded: letGo(item.callID)
                        }
                    }
                    if owned.contains(.missing) { refreshTrigger.yield() }
                    count("written", owned.filter { $0 == .owned }.count)
                    count("moved", owned.filter { $0 == .superseded }.count)
                    count("missing", owned.filter { $0 == .missing }.count)
                } catch {
                    // On the timeline once a spell: when a call's checkpoints start failing, not each second after.
                    for item in chunk where !unwritten.contains(item.callID) {
                        note(item.callID, "checkpoint_failed", ["code": error.code.rawValue, "seq": "\(item.checkpoint.seq)"])
                    }
                    unwritten.formUnion(chunk.map(\.callID))
                    count(error.code.rawValue, chunk.count)
                    logger.warning("checkpoints not written", metadata: ["calls": "\(chunk.count)", LogKey.error: "\(error)"])
                }
            }
        }
    }
}
