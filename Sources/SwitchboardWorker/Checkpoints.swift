import Logging
import SwitchboardCore
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    enum CheckpointResult { case written(Checkpoint), unchanged, moved, failed }

    static let checkpointScript = RedisScript("""
        -- KEYS: call records. ARGV[1]: this worker's id; then for each key, its checkpoint (JSON) and seq.
        -- Only the worker a record names may write: a worker that lost a call (it moved while this one was cut
        -- off) learns so here (0), and lets go of it.
        local written = {}
        for i, key in ipairs(KEYS) do
          if redis.call('HGET', key, 'worker_id') == ARGV[1] and redis.call('HGET', key, 'state') ~= 'ended' then
            redis.call('HSET', key, 'checkpoint', ARGV[2 * i], 'checkpoint_seq', ARGV[2 * i + 1])
            written[i] = 1
          else
            written[i] = 0
          end
        end
        return written
        """)

    /// Writes checkpoints in one script run; for each, whether this worker still owns the call.
    private func write(_ batch: [(callID: String, checkpoint: Checkpoint)]) async throws(SwitchboardError) -> [Bool] {
        var arguments = [configuration.id]
        for item in batch { arguments += [String(decoding: item.checkpoint.encoded(), as: UTF8.self), String(item.checkpoint.seq)] }
        let reply = try await redis.evaluate(Self.checkpointScript, keys: batch.map { configuration.keys.call($0.callID) },
                                             arguments: arguments)
        return (reply.array ?? []).map { $0.int == 1 }
    }

    private func count(_ result: String, _ n: Int = 1) {
        metrics.increment(MetricNames.checkpoints, ["result": result], by: Double(n), help: "Call checkpoints written, by result")
    }

    /// Takes one call's checkpoint now (`always`, or to `hold` it for a migration; else only if its state
    /// changed) and writes it, if this worker still owns the call: the handler's `checkpoint()` and a hold.
    func writeCheckpoint(_ callID: String, _ session: CallSession, always: Bool = false, hold: Bool = false,
                         log: Logger) async -> CheckpointResult {
        do {
            guard let checkpoint = try session.checkpoint(always: always, hold: hold, unixNowMillis: unixMillisNow()) else {
                return .unchanged
            }
            guard try await write([(callID, checkpoint)]).first == true else {
                count("moved")
                log.warning("the call is recorded on another worker: letting go of it")
                return .moved
            }
            count("written")
            return .written(checkpoint)
        } catch {
            count(error.code.rawValue)
            log.warning("checkpoint not written", metadata: [LogKey.error: "\(error)"])
            return .failed
        }
    }

    /// Every interval, the checkpoints of all calls whose state changed, in batches of up to 200 per script
    /// run: one round trip a second for a worker's calls, not one per call.
    func checkpointLoop() async {
        var unwritten: Set<String> = []  // taken but not written (Redis was unreachable): taken again next time
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.checkpointInterval)
            let now = unixMillisNow()
            let calls = state.withLock { Array($0.calls) }
            unwritten.formIntersection(calls.map(\.key))
            var batch: [(callID: String, checkpoint: Checkpoint)] = []
            for (callID, running) in calls {
                do {
                    if let checkpoint = try running.session.checkpoint(always: unwritten.contains(callID), unixNowMillis: now) {
                        batch.append((callID, checkpoint))
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
                    for (item, stillHere) in zip(chunk, owned) where !stillHere {
                        logger.warning("the call is recorded on another worker: letting go of it", metadata: [LogKey.callID: "\(item.callID)"])
                        state.withLock { $0.calls[item.callID] }?.end.yield(.migrated)
                    }
                    count("written", owned.filter { $0 }.count)
                    count("moved", owned.filter { !$0 }.count)
                } catch {
                    unwritten.formUnion(chunk.map(\.callID))
                    count(error.code.rawValue, chunk.count)
                    logger.warning("checkpoints not written", metadata: ["calls": "\(chunk.count)", LogKey.error: "\(error)"])
                }
            }
        }
    }
}
