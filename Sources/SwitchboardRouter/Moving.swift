import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Router {
    // MARK: - Live migration

    /// Moves a running call to another worker, make before break: the worker holding it stops sending and
    /// checkpoints (`hold`); the scheduler picks another worker, which is offered the call with that
    /// checkpoint, subscribes to the call's media and starts its handler from the saved state; only when it
    /// has accepted does the first worker let go (`release`). If no worker takes it, the first one goes on
    /// (`unhold`). The caller keeps its credential and its `.out` subscription; its audio goes to the new worker
    /// once the `migrated` event names it (docs/protocol.md, "Callers across moves").
    ///
    /// One router moves a call at a time (a lock in Redis with an expiry).
    /// `fromWorker`: a worker asked over NATS; only the worker the call's record names may move it.
    public func migrate(_ callID: String, requestedBy: String, fromWorker: String? = nil) async throws(SwitchboardError) -> Migration {
        try WireCheck.identifier(callID, "call_id")
        let record = try await call(callID)
        if let fromWorker, record.workerID != fromWorker {
            let error = SwitchboardError(.forbidden, "worker \(fromWorker) asked to move call \(callID), which worker \(record.workerID) holds")
            countBadMessage("migrate_request", error)
            logger.warning("migrate request refused: not from the worker holding the call",
                           metadata: [LogKey.callID: "\(callID)", "sent_as": "\(fromWorker)", LogKey.workerID: "\(record.workerID)"])
            throw error
        }
        guard record.state != .ended else {
            throw SwitchboardError(.conflict, "call \(callID) has ended (\(record.endReason ?? "no reason recorded")); there is nothing to move")
        }
        let log = logger.with([LogKey.callID: "\(callID)", LogKey.workerID: "\(record.workerID)", "by": "\(requestedBy)"])
        let span = tracer.start("move", parent: TraceContext(traceparent: record.traceparent),
                                attributes: ["switchboard.call_id": callID, "switchboard.from_worker": record.workerID,
                                             "switchboard.reason": "migrate"])
        defer { span?.end() }
        guard let outcome = try await withCallLock(callID, { () async -> CallMove.Outcome in await move(record, trace: span?.context, log: log) }) else {
            span?.fail("conflict: being moved already")
            throw SwitchboardError(.conflict, "call \(callID) is being moved already")
        }
        switch outcome {
        case .moved(let to, let pause, let released):
            if !released { log.warning("old worker did not confirm letting go; its next write finds the call claimed elsewhere") }
            metrics.increment(MetricNames.migrations, ["result": "moved"], help: "Call migrations by result")
            metrics.observe(MetricNames.migrationPauseSeconds, [:], pause.microseconds / 1e6, buckets: MetricNames.latencyBuckets,
                            help: "Time a migrated call's audio paused: from hold to the new worker's accept")
            publishEvent(CallEvent(callID: callID, event: .migrated, workerID: to, fromWorker: record.workerID, atMillis: wallClock.unixMillis),
                         details: ["pause_ms": "\(pause.milliseconds)"])
            log.notice("call moved", metadata: ["to_worker": "\(to)", "pause_ms": "\(pause.microseconds / 1000)"])
            span?.set("switchboard.to_worker", to)
            span?.set("switchboard.pause_ms", "\(pause.milliseconds)")
            return Migration(callID: callID, fromWorker: record.workerID, toWorker: to, pauseMillis: pause.microseconds / 1000)
        case .notMoved(let error, let result):
            metrics.increment(MetricNames.migrations, ["result": result], help: "Call migrations by result")
            log.warning("call not moved; it stays", metadata: [LogKey.error: "\(error.message)"])
            span?.fail("\(result): \(error.message)")
            throw error
        }
    }

    /// Carries out a `CallMove`: each action's I/O, its result (or failure) fed back as the next event.
    private func move(_ record: CallRecord, trace: TraceContext?, log: Logger) async -> CallMove.Outcome {
        let callID = record.callID
        publishEvent(CallEvent(callID: callID, event: .migrating, workerID: record.workerID, atMillis: wallClock.unixMillis))
        var move = CallMove(callID: callID, worker: record.workerID)
        var action = move.start()
        while true {
            let event: CallMove.Event
            switch action {
            case .hold:
                do { event = .held(try await control(record.workerID, WorkerControl(.hold, callID: callID)).checkpoint) }
                catch { event = .holdFailed(error) }
            case .offer(let checkpoint):
                do { event = .accepted(worker: try await resumeElsewhere(record, .migrate, from: checkpoint, trace: trace, log: log).workerID) }
                catch { event = .offerFailed(error) }
            case .readOwner:
                // An active record naming another worker: its claim went through. Unreadable: nil.
                let current = try? await call(callID)
                event = .ownerRead(current.flatMap { $0.state == .ended ? nil : $0.workerID })
            case .release:
                do { _ = try await control(record.workerID, WorkerControl(.release, callID: callID)); event = .released }
                catch { event = .releaseFailed(error) }
            case .unhold:
                do { _ = try await control(record.workerID, WorkerControl(.unhold, callID: callID)); event = .unheld }
                catch { event = .unholdFailed(error) }
            case .finish(let outcome):
                return outcome
            }
            action = move.on(event, now: clock.now)
        }
    }

    /// Offers a running call, with its checkpoint, to workers other than the one the record names (in the
    /// call's region first, elsewhere when none there has room; of the call's own version first, then the
    /// active one, then the canary); the accept of the one that took it on.
    private func resumeElsewhere(_ record: CallRecord, _ reason: ResumeReason, from checkpoint: Checkpoint, trace: TraceContext?,
                                 log: Logger) async throws(SwitchboardError) -> OfferReply {
        let (targets, revision) = state.withLock { $0.known.moveTargets(for: record.version) }
        let offer = Offer(callID: record.callID, tenant: record.tenant, region: nil, metadata: record.metadata,
                          routerID: configuration.id,
                          resume: Resume(reason: reason, fromWorker: record.workerID, checkpoint: checkpoint, epoch: record.epoch),
                          deployRevision: revision)
        // A tenant held to some regions stays there when its call moves (if its policy can be read now: a call
        // that must move is not held back by a Redis error).
        let regions = configuration.tenancy ? (try? await tenants.get(record.tenant))?.policy.regions ?? [] : []
        let needs = Scheduler.Needs(versions: targets?.first, fallback: Array((targets ?? []).dropFirst()), region: record.region,
                                    locality: .preferred, tried: [record.workerID]).onlyIn(regions)
        return try await offerAround(offer, needs: needs, deadline: clock.now + configuration.routeDeadline, resuming: reason == .failover,
                                     logger: log, trace: trace).reply
    }

    /// Sends an order to one worker and returns its answer; the worker's refusal comes back as its error.
    func control(_ workerID: String, _ order: WorkerControl) async throws(SwitchboardError) -> WorkerControlReply {
        let reply: WorkerControlReply
        do {
            let message = try await nats.request(configuration.subjects.control(worker: workerID), payload: order.encoded(),
                                                 headers: order.callID.map { ["Call-Id": $0] } ?? [:],
                                                 timeout: configuration.controlTimeout)
            reply = try WorkerControlReply.decode(message.payload)
        } catch {
            throw error.code == .noResponders ? SwitchboardError(.unavailable, "worker \(workerID) is not connected") : error
        }
        if let error = reply.error { throw SwitchboardError(api: error) }
        return reply
    }

    static let unlockScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    static let extendScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
        """)

    /// Takes the call's move lock for this router (or, `extend`, renews the one it holds); false when another
    /// router holds it.
    func lock(_ callID: String, extend: Bool = false) async throws(SwitchboardError) -> Bool {
        let key = configuration.keys.callLock(callID), ttl = String(configuration.moveLockTime.milliseconds)
        do {
            if extend { return try await redis.evaluate(Self.extendScript, keys: [key], arguments: [configuration.id, ttl]).int == 1 }
            return !(try await redis.send(["SET", key, configuration.id, "NX", "PX", ttl])).isNull
        } catch {
            throw SwitchboardError(.unavailable, "cannot lock call \(callID) in Redis: \(error.message)")
        }
    }

    /// Runs `body` holding the call's move lock and lets go after; nil when another router holds the lock.
    func withCallLock<T: Sendable>(_ callID: String, _ body: () async throws(SwitchboardError) -> T) async throws(SwitchboardError) -> T? {
        guard try await lock(callID) else { return nil }
        do {
            let result = try await body()
            await unlock(callID)
            return result
        } catch {
            await unlock(callID)
            throw error
        }
    }

    func unlock(_ callID: String) async {
        // A lock not released (Redis unreachable) expires by itself: it is taken with a time to live.
        _ = try? await redis.evaluate(Self.unlockScript, keys: [configuration.keys.callLock(callID)], arguments: [configuration.id])
    }

    // MARK: - Failover

    /// A worker died: every call in its set in Redis is taken on by another worker from its checkpoint. Every
    /// router sees the death; a lock per call makes one of them handle each call. `except`: a restarted
    /// worker's new process, whose own calls stay. `deadIncarnation`: the process found dead; if it turns
    /// out alive (heard from again), it keeps its calls.
    func failover(_ workerID: String, except incarnation: String? = nil, deadIncarnation: String? = nil) async {
        let calls: [String]
        do {
            calls = try await callStore.calls(of: workerID)
        } catch {
            logger.error("cannot read a dead worker's calls: they are not moved", metadata: [LogKey.workerID: "\(workerID)",
                                                                                           LogKey.error: "\(error)"])
            return
        }
        guard !calls.isEmpty else { return }
        logger.warning("taking on a dead worker's calls", metadata: [LogKey.workerID: "\(workerID)", "calls": "\(calls.count)"])
        await withDiscardingTaskGroup { group in
            for callID in calls {
                group.addTask { await self.recover(callID, from: workerID, except: incarnation, deadIncarnation: deadIncarnation) }
            }
        }
    }

    /// Takes on one call of a dead worker, trying again with backoff while no worker has room, for the
    /// failover window; only then is the call lost.
    private func recover(_ callID: String, from workerID: String, except incarnation: String?, deadIncarnation: String?) async {
        let log = logger.with([LogKey.callID: "\(callID)", LogKey.workerID: "\(workerID)"])
        do {
            // Another router has the lock: it handles this call.
            _ = try await withCallLock(callID) { () async throws(SwitchboardError) in
                try await recoverHoldingLock(callID, from: workerID, except: incarnation, deadIncarnation: deadIncarnation, log: log)
            }
        } catch {
            log.error("call of a dead worker not handled: Redis unreachable", metadata: [LogKey.error: "\(error)"])
        }
    }

    private func recoverHoldingLock(_ callID: String, from workerID: String, except incarnation: String?, deadIncarnation: String?,
                                    log: Logger) async throws(SwitchboardError) {
        var retry = FailoverRetry(configuration: configuration.failover, now: clock.now)
        var lastError = ""
        var span: Span?
        defer { span?.end() }
        // Waiting for a free slot, said to every router; whatever ends the wait says so too.
        var waiting = false
        defer { if waiting { announce(.done(callID, router: configuration.id)) } }
        while true {
            if let deadIncarnation, state.withLock({ $0.known.registry.entries[workerID]?.heartbeat.incarnation == deadIncarnation }) {
                log.notice("the worker found dead is heard from again: it keeps its call")
                return
            }
            let fields = try await callStore.fields(callID)
            if let incarnation, fields["incarnation"] == incarnation { return }  // the new process holds it
            guard let record = CallRecord(callID: callID, fields: fields), record.state != .ended, record.workerID == workerID else {
                // Ended, or already elsewhere: the set only kept a stale entry. After a try of ours, it happened while
                // the call waited for a slot (its caller hung up, say): said, so that no waiting call goes unaccounted.
                if retry.attempts > 0 {
                    let ended = fields["state"] == CallRecord.State.ended.rawValue
                    span?.set("switchboard.end_reason", fields["end_reason"] ?? "")
                    metrics.increment(MetricNames.failoverCalls, ["result": ended ? "ended" : "elsewhere"], help: "Calls of dead workers, by result")
                    log.notice(ended ? "a dead worker's call ended while it waited for a worker" : "a dead worker's call was taken on elsewhere while it waited",
                               metadata: ["end_reason": "\(fields["end_reason"] ?? "")", "to_worker": "\(fields["worker_id"] ?? "")",
                                          "attempts": "\(retry.attempts)"])
                }
                try await callStore.forget(callID, worker: workerID)
                return
            }
            if span == nil {
                span = tracer.start("failover", parent: TraceContext(traceparent: record.traceparent),
                                    attributes: ["switchboard.call_id": callID, "switchboard.from_worker": workerID])
            }
            let checkpoint: Checkpoint
            switch Checkpoint.parse(fields["checkpoint"]) {
            case .success(let found)?:
                checkpoint = found
            case .failure(let error)?:
                span?.fail("lost: its checkpoint is unusable")
                await lose(record, because: "its checkpoint is unusable (\(error.message))", log: log)
                return
            case nil:
                span?.fail("lost: no checkpoint")
                await lose(record, because: "it has no checkpoint", log: log)
                return
            }
            do {
                let reply = try await resumeElsewhere(record, .failover, from: checkpoint, trace: span?.context, log: log)
                if waiting {
                    announce(.done(callID, router: configuration.id, worker: reply.workerID, acceptSeq: reply.acceptSeq))
                    waiting = false
                }
                span?.set("switchboard.to_worker", reply.workerID)
                metrics.increment(MetricNames.failoverCalls, ["result": "recovered"], help: "Calls of dead workers, by result")
                publishEvent(CallEvent(callID: callID, event: .resumed, workerID: reply.workerID, fromWorker: workerID,
                                       atMillis: wallClock.unixMillis))
                log.notice("call recovered from a dead worker", metadata: ["to_worker": "\(reply.workerID)",
                                                                          "checkpoint_seq": "\(checkpoint.seq)",
                                                                          "attempts": "\(retry.attempts + 1)"])
                return
            } catch {
                lastError = error.message
            }
            switch retry.attemptFailed(now: clock.now) {
            case .retry(let at):
                // Held a little longer than the longest wait between attempts: a notice or two may be lost.
                announce(.waiting(callID, router: configuration.id, hold: configuration.failover.longest * 4))
                waiting = true
                if retry.attempts == 1 {
                    metrics.increment(MetricNames.failoverCalls, ["result": "waiting"], help: "Calls of dead workers, by result")
                    log.warning("no worker can take the call on yet; trying again for \(configuration.failover.window)",
                                metadata: [LogKey.error: "\(lastError)"])
                }
                try? await Task.sleep(until: at, clock: clock)
                _ = try await lock(callID, extend: true)
            case .giveUp(let attempts):
                span?.fail("lost: no worker could take it")
                await lose(record, because: "no worker could take it in \(configuration.failover.window) (\(attempts) attempts; last: \(lastError))",
                           log: log)
                return
            }
        }
    }

    /// Tells every router (this one at once) that a dead worker's call waits for a free slot, or no longer does.
    private func announce(_ notice: ResumptionNotice) {
        apply(notice)
        // Fails only with the connection closed or its reconnect buffer full: the others then hold nothing for
        // the call, and new calls may take a freed slot first, as before this notice existed.
        try? nats.publish(configuration.subjects.resumptions, payload: notice.encoded())
    }

    func ingestResumptionNotice(_ message: NATSMessage) {
        do {
            apply(try ResumptionNotice.decode(message.payload))
        } catch {
            countBadMessage("resumption_notice", error)
        }
    }

    private func apply(_ notice: ResumptionNotice) {
        let event: RouterState.Event
        if let hold = notice.holdMillis {
            event = .resumptionWaiting(callID: notice.callID, hold: .milliseconds(hold))
        } else {
            // The slot a call took is counted once: this router's own offer reserved it already.
            let own = notice.routerID == configuration.id
            event = .resumptionDone(callID: notice.callID, worker: own ? nil : notice.workerID, acceptSeq: own ? nil : notice.acceptSeq)
        }
        _ = state.withLock { $0.known.modify(event, now: clock.now) }
    }

    /// Ends a dead worker's call that cannot be taken on, with reason `worker_lost`, counted and logged.
    private func lose(_ record: CallRecord, because why: String, log: Logger) async {
        do {
            let ended = try await callStore.end(record.callID, tenant: record.tenant, worker: record.workerID, epoch: record.epoch,
                                                reason: .workerLost, retention: configuration.endedCallRetention)
            guard ended.ownership == .owned else {
                log.notice("a dead worker's call was taken on meanwhile; not ended")
                return
            }
            countMetered(record.tenant, ended.meteredMillis)
        } catch {
            log.error("call lost with its worker, and its end not recorded", metadata: [LogKey.error: "\(error)"])
        }
        metrics.increment(MetricNames.failoverCalls, ["result": "lost"], help: "Calls of dead workers, by result")
        publishEvent(CallEvent(callID: record.callID, event: .ended, workerID: record.workerID,
                               reason: EndReason.workerLost.rawValue, atMillis: wallClock.unixMillis))
        log.error("call lost with its worker: \(why)")
    }

    // MARK: - NATS API

    /// `<prefix>.migrate`: a draining worker asks for one of its calls to be moved.
    func handleMigrateRequest(_ message: NATSMessage) async {
        let reply: MigrateReply
        do {
            let request = try MigrateRequest.decode(message.payload)
            // Audited like the HTTP one. Only workers may send it, each under its own id (the subject's): that
            // id, not what the request says, is who asked.
            let sender = String(Subjects.sender(of: message.subject))
            let actor = "worker \(sender) (over NATS: \(request.requestedBy))"
            reply = MigrateReply(try await audited("migrate", target: request.callID, actor: actor) { () throws(SwitchboardError) in
                try await migrate(request.callID, requestedBy: actor, fromWorker: sender)
            })
        } catch {
            if error.code == .badMessage || error.code == .tooLarge { countBadMessage("migrate_request", error) }
            reply = MigrateReply(error: error)
        }
        try? nats.reply(to: message, payload: reply.encoded())  // the worker's request times out and it asks again
    }
}
