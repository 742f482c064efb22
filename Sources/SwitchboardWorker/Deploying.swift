import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Worker {
    // MARK: - Deploy policy

    /// Reads the deploy policy with Redis's clock: at start, every refresh interval and on reconnection (a
    /// notice missed while cut off).
    func syncDeployFromRedis() async {
        do {
            let (policy, now) = try await DeployStore(redis: redis, keys: configuration.keys).read()
            state.withLock { $0.redisClockOffset = now - unixMillisNow() }
            await applyDeploy(policy)
        } catch {
            logger.warning("deploy policy not read from Redis", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// `<prefix>.deploy`: a router changed the policy.
    func ingestDeployNotice(_ message: NATSMessage) {
        do {
            job.yield(.deploy(try DeployNotice.decode(message.payload).policy))
        } catch {
            metrics.increment(MetricNames.badMessages, ["kind": "deploy_notice", "code": error.code.rawValue], help: "Messages refused as malformed")
            logger.warning("bad deploy notice refused", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// Redis's clock now, as far as this worker can tell (its own plus the offset seen at the last read).
    var redisNowMillis: Int64 { unixMillisNow() &+ state.withLock { $0.redisClockOffset } }

    func applyDeploy(_ policy: DeployPolicy) async {
        let now = redisNowMillis
        let actions = state.withLock { $0.standing.apply(policy, nowMillis: now) }
        metrics.set(MetricNames.deployRevision, to: Double(policy.revision), help: "The deploy policy revision this process follows")
        await perform(actions)
    }

    /// Called with the drain's ticks: the rollback window may be over.
    func tickDeploy() async {
        let now = redisNowMillis
        let actions = state.withLock { $0.standing.isOutdated ? $0.standing.tick(nowMillis: now) : [] }
        await perform(actions)
    }

    private func perform(_ actions: [DeployStanding.Action]) async {
        for action in actions {
            switch action {
            case .outdated(let revision):
                let changed = state.withLock { $0.slots.setOutdated(revision) }
                if changed {
                    logger.notice("version \(configuration.version) is outdated: no new calls; the calls here go on",
                                  metadata: ["revision": "\(revision)"])
                    metrics.set(MetricNames.workerOutdated, to: 1, help: "1 while this worker's version takes no new calls")
                    heartbeatTrigger.yield()
                }
            case .current:
                if state.withLock({ $0.slots.setOutdated(nil) }) {
                    logger.notice("version \(configuration.version) takes new calls again")
                    metrics.set(MetricNames.workerOutdated, to: 0, help: "1 while this worker's version takes no new calls")
                    heartbeatTrigger.yield()
                }
            case .drain(let deadline, let atDeadline):
                // An operator's drain under way keeps its own deadline.
                guard !state.withLock({ $0.drain.isDraining }) else { continue }
                logger.notice("the rollback window of version \(configuration.version) is over: draining")
                await drain(deadline: deadline, atDeadline: atDeadline, requestedBy: Self.deployDrain)
            case .undrain:
                if state.withLock({ $0.appliedDrain?.requestedBy == Self.deployDrain }), await undrain() {
                    logger.notice("version \(configuration.version) is eligible again: its drain is cancelled")
                }
            }
        }
    }

    /// Who a drain the deploy policy started is by (the audit and `node list` show it).
    static let deployDrain = "deploy"
}
