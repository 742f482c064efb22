import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    // MARK: - Drain

    /// Starts (or re-times) a drain: no new calls from now on (routers are told at once), the calls here go
    /// on, and at the deadline those left are moved to other workers (`migrate`) or ended. When the last
    /// call is gone, `run` returns. The drain is kept in Redis until then, so a restarted router or a
    /// reconnected worker keeps to it.
    /// A drain asked of the worker itself (SIGTERM) is written to the audit stream, as the routers write the
    /// ones asked through them.
    public func drain(deadline: Duration, atDeadline: AtDeadline, requestedBy: String) async {
        let now = wallClock.unixMillis
        let request = DrainRequest(workerID: configuration.id, deadlineMillis: now + deadline.milliseconds,
                                   atDeadline: atDeadline, requestedBy: requestedBy, requestedAtMillis: now)
        await apply(request, record: true)
        let entry = AuditEntry(atMillis: now, actor: "\(requestedBy) (worker \(configuration.id))", action: "drain",
                               target: configuration.id, outcome: "ok",
                               detail: "deadline \(deadline), at deadline \(atDeadline.rawValue)")
        do {
            try await AuditLog(redis: redis, keys: configuration.keys).append(entry)
        } catch {
            logger.error("audit entry not written", metadata: ["action": "drain", "actor": "\(entry.actor)", LogKey.error: "\(error)"])
        }
    }

    /// Applies a drain request: kept in Redis first (`record`; the router that sent it did that and told the
    /// other routers), then to the state machine. Routers learn of a drain the worker starts itself from its
    /// heartbeat (it says `draining` at once) and from Redis; workers do not publish drain notices. Ignored once calls are being ended or the worker
    /// is leaving.
    /// `unlessChangedSince`: act only if no drain or undrain was applied since that count of `drainChanges`.
    func apply(_ request: DrainRequest, record: Bool, unlessChangedSince seen: UInt64? = nil) async {
        // A SIGTERM always leaves when the last call is gone; other drains do unless `--when-drained stay`.
        let leave = configuration.whenDrained == .exit || request.requestedBy == DrainRequest.bySignal
        guard state.withLock({ $0.drain.phase != .done && ($0.drain.phase != .ending || leave) }) else { return }
        if record {
            do {
                try await drains.save(request)
            } catch {
                logger.warning("drain not kept in Redis", metadata: [LogKey.error: "\(error)"])
            }
        }
        let decided: (actions: [Drain.Action], calls: Int)? = state.withLock { state in
            if let seen, state.drainChanges != seen { return nil }
            let actions = state.drain.request(deadline: request.deadline(now: .now, unixNowMillis: wallClock.unixMillis),
                                               atDeadline: request.atDeadline, now: .now, calls: Set(state.calls.keys),
                                               leave: leave)
            // Offers are refused from this instant, under the same lock as the decision.
            if actions.contains(.refuseNewCalls) { state.slots.setState(.draining) }
            state.appliedDrain = request
            state.drainChanges &+= 1
            return (actions, state.calls.count)
        }
        guard let (actions, calls) = decided else { return }
        logger.notice("draining", metadata: ["calls": "\(calls)", "deadline_ms": "\(request.deadlineMillis)",
                                             "at_deadline": "\(request.atDeadline.rawValue)", "by": "\(request.requestedBy)"])
        await perform(actions)
    }

    /// Cancels a drain under way; false when there is none or it is too late (calls are being ended).
    public func undrain() async -> Bool {
        await undrain(unlessChangedSince: nil)
    }

    /// `unlessChangedSince`: only if no drain or undrain was applied since that count of `drainChanges`.
    func undrain(unlessChangedSince seen: UInt64?) async -> Bool {
        guard let request = state.withLock({ state -> DrainRequest? in
            guard seen == nil || state.drainChanges == seen, state.drain.isCancellable else { return nil }
            return state.appliedDrain
        }) else { return false }
        // Out of Redis before the cancel, and only if it is still this request (not one a router wrote since):
        // a re-read of Redis that saw it after the cancel would drain again, and for good.
        do {
            try await drains.remove(ifStill: request)
        } catch {
            logger.warning("drain record not taken out of Redis", metadata: [LogKey.error: "\(error)"])
        }
        let (cancelled, actions) = state.withLock { state in
            guard state.appliedDrain == request else { return (false, [Drain.Action]()) }
            let result = state.drain.cancel()
            if result.cancelled {
                state.appliedDrain = nil
                state.drainChanges &+= 1
            }
            return result
        }
        guard cancelled else { return false }
        logger.notice("drain cancelled: taking calls again", metadata: ["by": "\(request.requestedBy)"])
        await perform(actions)
        return true
    }

    /// Keeps to the drain recorded for this worker in Redis: at start (a worker restarted while drained), when
    /// it reconnects and every refresh interval (a drain or undrain a router sent while this worker was cut
    /// off). A recorded drain not applied yet is applied; a drain a router asked for whose record is gone was
    /// cancelled (a drain this worker started itself, on a signal or at the end of its rollback window, stays).
    func syncDrainFromRedis() async {
        let seen = state.withLock { $0.drainChanges }
        let stored: DrainRequest?
        do {
            stored = try await drains.load(configuration.id)
        } catch {
            logger.warning("could not read this worker's drain from Redis", metadata: [LogKey.error: "\(error)"])
            return
        }
        let applied = state.withLock { $0.appliedDrain }
        if let stored, stored != applied {
            await apply(stored, record: false, unlessChangedSince: seen)
        } else if stored == nil, let applied, !applied.isWorkersOwn {
            logger.notice("this worker's drain was cancelled while it was cut off", metadata: ["by": "\(applied.requestedBy)"])
            _ = await undrain(unlessChangedSince: seen)
        }
    }

    /// Ticks the drain a few times a second, and at once when a call ends.
    func drainLoop() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    drainTrigger.yield()
                }
            }
            for await _ in drainTriggers {
                // Nothing to do unless draining: no set of the calls is built under the lock offers take.
                let actions = state.withLock { $0.drain.isDraining ? $0.drain.tick(now: .now, calls: Set($0.calls.keys)) : [] }
                await perform(actions)
                if state.withLock({ $0.drain.phase == .done }) { break }
            }
            group.cancelAll()
        }
    }

    private func perform(_ actions: [Drain.Action]) async {
        for action in actions {
            switch action {
            case .refuseNewCalls:
                state.withLock { _ = $0.slots.setState(.draining) }
                metrics.set(MetricNames.workerDraining, to: 1, help: "1 while this worker drains")
                heartbeatTrigger.yield()
            case .acceptNewCalls:
                state.withLock { _ = $0.slots.setState(.ready) }
                metrics.set(MetricNames.workerDraining, to: 0, help: "1 while this worker drains")
                heartbeatTrigger.yield()
            case .migrate(let calls):
                migrate(calls)
            case .end(let calls, let reason):
                logger.warning("drain deadline: ending the calls still here", metadata: ["calls": "\(calls.count)"])
                for call in calls { endCall(call, reason: reason) }
            case .exit:
                logger.notice("drain done: no calls left; leaving")
                do {
                    try await drains.remove(configuration.id)
                } catch {
                    // Harmless when left: a drain record of a worker that is gone is cleared when an id comes back.
                    logger.warning("drain record not taken out of Redis", metadata: [LogKey.error: "\(error)"])
                }
                stop()
            case .idle:
                // Under a Deployment an exit would be restarted (and drained again, and exit: a restart loop);
                // the process stays, not ready, until an undrain or SIGTERM.
                logger.notice("drain done: no calls left; staying up, taking no calls, until undrained or stopped (--when-drained stay)")
            }
        }
    }

    /// Asks the routers to move each call to another worker, each in a task of its own; a call already being
    /// moved is not asked for twice.
    private func migrate(_ calls: [String]) {
        let fresh = state.withLock { state in
            let fresh = calls.filter { !state.migrating.contains($0) }
            state.migrating.formUnion(fresh)
            return fresh
        }
        guard !fresh.isEmpty else { return }
        logger.notice("drain deadline: moving calls to other workers", metadata: ["calls": "\(fresh.count)"])
        for callID in fresh { job.yield(.move(callID)) }
    }

    /// Asks the routers (their queue group) to move one call, and waits for the answer.
    func askToMove(_ callID: String) async {
        defer { _ = state.withLock { $0.migrating.remove(callID) } }
        do {
            let reply = try await nats.request(configuration.subjects.migrate(worker: configuration.id),
                                               payload: MigrateRequest(callID: callID, requestedBy: "drain:\(configuration.id)").encoded(),
                                               headers: ["Call-Id": callID], timeout: configuration.migrateTimeout)
            let answer = try MigrateReply.decode(reply.payload)
            if let error = answer.error {
                logger.warning("call not moved: \(error.message)", metadata: [LogKey.callID: "\(callID)", LogKey.errorCode: "\(error.code)"])
            }
        } catch {
            logger.warning("call not moved", metadata: [LogKey.callID: "\(callID)", LogKey.error: "\(error)"])
        }
    }

    // MARK: - Control

    /// Answers an order from a router: drain, undrain, and the steps of moving a call.
    func handleControl(_ message: NATSMessage) async {
        let control: WorkerControl
        do {
            control = try WorkerControl.decode(message.payload)
        } catch {
            metrics.increment(MetricNames.badMessages, ["kind": "control", "code": error.code.rawValue], help: "Messages refused as malformed")
            reply(to: message, error: error)
            return
        }
        switch control.op {
        case .drain:
            await apply(control.drain!, record: false)  // the router kept it in Redis and told the others
            reply(to: message)
        case .undrain:
            let cancelled = await undrain()
            if cancelled || state.withLock({ !$0.drain.isDraining }) {
                reply(to: message)
            } else {
                reply(to: message, error: SwitchboardError(.conflict, "worker \(configuration.id) is already ending its calls or leaving; too late to undrain"))
            }
        case .hold, .unhold, .release:
            let callID = control.callID!
            let event: CallLifecycle.Event = control.op == .hold ? .holdRequested : control.op == .unhold ? .unholdRequested : .released
            // Answered by the call's lifecycle: at once, or (a hold) once its checkpoint is written.
            if !handle(callID, event, replyTo: message) {
                reply(to: message, error: SwitchboardError(.notFound, "worker \(configuration.id) holds no call \(callID)"))
            }
        }
    }

    func reply(to message: NATSMessage, error: SwitchboardError? = nil, checkpoint: Checkpoint? = nil) {
        let (workerState, calls) = state.withLock { ($0.slots.reportedState, $0.slots.activeCalls) }
        let answer = WorkerControlReply(ok: error == nil, error: error?.apiBody, state: workerState, activeCalls: calls,
                                        checkpoint: checkpoint)
        do {
            try nats.reply(to: message, payload: answer.encoded())
        } catch {
            logger.warning("control reply not sent", metadata: [LogKey.error: "\(error)"])
        }
    }
}
