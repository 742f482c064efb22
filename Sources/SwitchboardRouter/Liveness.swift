import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability

extension Router {
    /// Ticks the fleet view several times per heartbeat interval (every 100 ms at most, so a probe goes out
    /// soon after a worker is late) and carries out what it says: probe late workers, ping suspects, report
    /// mass silences and this router's own stalls. Deaths come only from failed pings (`ping`).
    func livenessLoop() async {
        await withDiscardingTaskGroup { pings in
            var gaugesAt = clock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: min(configuration.heartbeatInterval / 4, .milliseconds(100)))
                for action in state.withLock({ $0.known.modify(.tick, now: clock.now) }) {
                    switch action {
                    case .liveness(.suspect(let id)):
                        countLiveness("suspect")
                        logger.warning("worker suspect: no heartbeat for \(configuration.registry.suspectAfter) intervals; pinging it",
                                       metadata: [LogKey.workerID: "\(id)"])
                        pings.addTask { await self.ping(id) }
                    case .liveness(.ping(let id)):
                        pings.addTask { await self.ping(id) }
                    case .liveness(.probe(let id)):
                        countLiveness("probe")
                        logger.debug("worker late: probing it", metadata: [LogKey.workerID: "\(id)"])
                        pings.addTask { await self.ping(id, probe: true) }
                    default:
                        perform([action])
                    }
                }
                // Once a second (and at each scrape): they go over every worker, too much for ten times a second
                // at 10,000 workers (it tripled the router's heartbeat cost).
                if clock.now - gaugesAt >= .seconds(1) {
                    gaugesAt = clock.now
                    updateWorkerGauges()
                }
            }
        }
    }

    /// Follows this router's NATS connection: while it is down nobody is judged; when it is back every
    /// worker counts as just heard.
    func watchConnection() async {
        for await event in nats.events {
            let connected: Bool
            switch event {
            case .disconnected: connected = false
            case .reconnected: connected = true
            case .closed: return
            case .error: continue
            }
            perform(state.withLock { $0.known.modify(.connection(connected: connected), now: clock.now) })
        }
    }

    /// Asks a worker for a heartbeat directly: an answer brings it back. For a suspect, a failure is evidence of
    /// death only if this router can judge right now (see `WorkerRegistry.pingFailed`). For a `probe` (alive
    /// but late) only the server's "no responders" is: its connection is gone (`probeFoundGone`); a timeout
    /// leaves it to the suspect time.
    func ping(_ workerID: String, probe: Bool = false) async {
        let sentAt = clock.now
        let failure: SwitchboardError
        do {
            let reply = try await nats.request(configuration.subjects.ping(worker: workerID), payload: [],
                                               timeout: configuration.pingTimeout)
            ingest(try Heartbeat.decode(reply.payload), from: Substring(workerID))
            return
        } catch {
            failure = error
        }
        if probe && failure.code != .noResponders {
            logger.debug("late worker's probe not answered: no verdict (the suspect time decides)",
                         metadata: [LogKey.workerID: "\(workerID)", LogKey.error: "\(failure)"])
            return
        }
        let event = RouterState.Event.pingFailed(worker: workerID, sentAt: sentAt, timeout: configuration.pingTimeout, probe: probe,
                                                 connected: nats.isConnected)
        for action in state.withLock({ $0.known.modify(event, now: clock.now) }) {
            guard case .failOver(_, let incarnation) = action else { perform([action]); continue }
            countLiveness("dead")
            logger.warning(probe ? "worker dead: late, and nobody listens on its ping subject (its connection is gone)" : "worker dead: failed its ping",
                           metadata: [LogKey.workerID: "\(workerID)", LogKey.error: "\(failure)"])
            await failover(workerID, deadIncarnation: incarnation)
        }
    }

    func countLiveness(_ event: String, by count: Int = 1) {
        metrics.increment(MetricNames.workerLiveness, ["event": event], by: Double(count),
                          help: "Liveness events: workers suspect, unreachable or dead, and this router suspecting itself")
    }
}

extension Router {
    /// Now and then, one router (a lock in Redis per round) looks for calls nobody is looking after: sets of
    /// calls in Redis whose worker no router knows (it died while every router was restarting, or the router
    /// failing its calls over died mid-way), and fails them over as a dead worker's. Only when this router
    /// can trust its own view (see `WorkerRegistry.mayTakeUnknownWorkersForGone`).
    func reconcileLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.reconcileInterval)
            await reconcile()
        }
    }

    @discardableResult
    public func reconcile() async -> [String] {
        let key = configuration.keys.prefix + ":reconcile"
        do {
            guard state.withLock({ $0.known.registry.mayTakeUnknownWorkersForGone(now: clock.now) }),
                  !(try await redis.send(["SET", key, configuration.id, "NX", "PX",
                                          String(configuration.reconcileInterval.milliseconds)])).isNull else { return [] }
            let withCalls = try await callStore.workersWithCalls()
            let orphaned = state.withLock { state in withCalls.filter { state.known.registry.entries[$0] == nil } }
            var gone: [String] = []
            for worker in orphaned where state.withLock({ $0.known.registry.mayTakeUnknownWorkersForGone(now: clock.now) }) {
                // Unknown is not dead: a worker this router does not hear (another NATS node) may answer. Asked three
                // times: one late answer (a busy worker, a busy router) must not fail a live worker's calls over.
                if let heartbeat = await pingUnknown(worker) {
                    ingest(heartbeat, from: Substring(worker))
                    continue
                }
                logger.warning("calls of a worker no router knows: failing them over", metadata: [LogKey.workerID: "\(worker)"])
                metrics.increment(MetricNames.reconciledWorkers, help: "Workers whose calls a router's reconciliation failed over")
                gone.append(worker)
                await failover(worker)
            }
            return gone
        } catch {
            logger.warning("reconciliation skipped: Redis unreachable", metadata: [LogKey.error: "\(error)"])
            return []
        }
    }

    /// A worker's heartbeat in answer to a ping, asked up to three times; nil when none came.
    private func pingUnknown(_ worker: String) async -> Heartbeat? {
        for _ in 1...3 {
            if let reply = try? await nats.request(configuration.subjects.ping(worker: worker), payload: [], timeout: configuration.pingTimeout),
               let heartbeat = try? Heartbeat.decode(reply.payload) {
                return heartbeat
            }
        }
        return nil
    }
}
