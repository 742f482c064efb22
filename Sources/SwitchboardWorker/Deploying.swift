import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    // MARK: - Deploy policy

    enum DeployEvent: Sendable {
        case policy(DeployPolicy)
        case tick
    }

    /// Takes policies and ticks one at a time, so what they start (a drain, an undrain) happens in their order.
    func deployLoop() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    deployEvent.yield(.tick)
                }
            }
            for await event in deployEvents {
                switch event {
                case .policy(let policy): await applyDeploy(policy)
                case .tick: await tickDeploy()
                }
            }
            group.cancelAll()
        }
    }

    /// Reads the deploy policy with Redis's clock: at start (applied at once: before the first heartbeat),
    /// every refresh interval and on reconnection (a notice missed while cut off).
    func syncDeployFromRedis(applyNow: Bool = false) async {
        do {
            let (policy, now) = try await DeployStore(redis: redis, keys: configuration.keys).read()
            state.withLock { $0.redisClockOffset = now - wallClock.unixMillis }
            if applyNow { await applyDeploy(policy) } else { deployEvent.yield(.policy(policy)) }
        } catch {
            logger.warning("deploy policy not read from Redis", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// `<prefix>.deploy`: a router changed the policy.
    func ingestDeployNotice(_ message: NATSMessage) {
        do {
            deployEvent.yield(.policy(try DeployNotice.decode(message.payload).policy))
        } catch {
            metrics.increment(MetricNames.badMessages, ["kind": "deploy_notice", "code": error.code.rawValue], help: "Messages refused as malformed")
            logger.warning("bad deploy notice refused", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// Redis's clock now, as far as this worker can tell (its own plus the offset seen at the last read).
    var redisNowMillis: Int64 { wallClock.unixMillis &+ state.withLock { $0.redisClockOffset } }

    private func applyDeploy(_ policy: DeployPolicy) async {
        let now = redisNowMillis
        let actions = state.withLock { $0.takeStanding { $0.apply(policy, nowMillis: now) } }
        metrics.set(MetricNames.deployRevision, to: Double(policy.revision), help: "The deploy policy revision this process follows")
        await carryOut(actions)
    }

    /// The rollback window may be over.
    private func tickDeploy() async {
        let now = redisNowMillis
        let actions = state.withLock { $0.standing.isOutdated ? $0.takeStanding { $0.tick(nowMillis: now) } : [] }
        await carryOut(actions)
    }

    /// What is left to do after the slots took the standing's word (under the lock): say so, and drain or
    /// undrain.
    private func carryOut(_ actions: [DeployStanding.Action]) async {
        for action in actions {
            switch action {
            case .outdated(let revision):
                logger.notice("version \(configuration.version) is outdated: no new calls; the calls here go on",
                              metadata: ["revision": "\(revision)"])
                metrics.set(MetricNames.workerOutdated, to: 1, help: "1 while this worker's version takes no new calls")
                heartbeatTrigger.yield()
            case .current:
                logger.notice("version \(configuration.version) takes new calls again")
                metrics.set(MetricNames.workerOutdated, to: 0, help: "1 while this worker's version takes no new calls")
                heartbeatTrigger.yield()
            case .drain(let deadline, let atDeadline):
                // An operator's drain under way keeps its own deadline.
                guard !state.withLock({ $0.drain.isDraining }) else { continue }
                logger.notice("the rollback window of version \(configuration.version) is over: draining")
                await drain(deadline: deadline, atDeadline: atDeadline, requestedBy: DrainRequest.byDeploy)
            case .undrain:
                // Only the drain the deploy started, and only if no other came in since this look.
                let seen = state.withLock { $0.appliedDrain?.requestedBy == DrainRequest.byDeploy ? $0.drainChanges : nil }
                if let seen, await undrain(unlessChangedSince: seen) {
                    logger.notice("version \(configuration.version) is eligible again: its drain is cancelled")
                }
            }
        }
    }
}

extension Worker.State {
    /// Runs a step of the standing and has the slots follow it in the same critical section, so two policies
    /// applied at once (a notice and a re-read) cannot leave the slots at the older one; returns the actions
    /// that changed the reported state or need I/O.
    mutating func takeStanding(_ step: (inout DeployStanding) -> [DeployStanding.Action]) -> [DeployStanding.Action] {
        step(&standing).filter { action in
            switch action {
            case .outdated(let revision): return slots.setOutdated(revision)
            case .current: return slots.setOutdated(nil)
            case .drain, .undrain: return true
            }
        }
    }
}
