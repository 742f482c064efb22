import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis
import Synchronization

/// A worker: answers offers (it is the authority on its own slots), runs each accepted call through the
/// handler with Opus audio on the call's media subjects, records calls in Redis, and reports its load by
/// heartbeat every interval, and at once when its state changes or it becomes full or no longer full.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    let nats: NATSConnection
    let redis: RedisClient
    /// This worker's drain in Redis.
    let drains: DrainStore
    let handler: any CallHandler
    public let metrics: MetricsRegistry
    let logger: Logger
    /// Unix time for what this worker writes (records, checkpoints, events, timelines): `configuration.wallClock`.
    let wallClock: WallClock
    /// Random per process start: lets routers tell a restarted worker from a stale heartbeat.
    public let incarnation = Identifiers.random(bytes: 6)
    /// Every write this worker makes to its calls' records, fenced by their epochs.
    let callStore: CallStore
    /// Notices this process's own stalls (see `watchLoop`).
    let stallWatch: StallWatch
    /// Tenants given a metric label of their own (at most `tenantLabelCap`).
    let tenantLabels: TenantLabels
    /// What this worker saw of each call, for its timeline.
    public let timeline: TimelineWriter

    /// One call on this worker: its lifecycle (the decisions) and what carries it out (its subscriptions, its
    /// audio session, its queue of actions that need I/O).
    struct Running {
        var lifecycle: CallLifecycle
        let offer: Offer
        /// Actions that need I/O (Redis, the call's tasks), carried out in order by the call's task (`runCall`).
        let actions: ActionQueue
        /// Stops the call's tasks (`stopTasks`).
        let stop: AsyncStream<Void>.Continuation
        let stops: AsyncStream<Void>
        /// Subscribed before the worker says yes, so nothing the caller sends after placement is missed.
        let media: NATSSubscription
        let endRequests: NATSSubscription
        /// End requests to answer once the call's end is recorded.
        let waitingEnds: EndRequests
        let session: CallSession
        /// When the caller's audio was last heard.
        let heard = MediaClock()
        let startedAt: Int64
        /// The order (an offer to take the call on, a hold) whose answer waits on Redis.
        var pendingReply: NATSMessage?
        /// The call's start here, as a span (from the offer to its handler or agent started), when tracing.
        var startSpan: Span?

        var callID: String { offer.callID }
        /// Whose live-call lease this call holds (see `refreshCalls`).
        var tenant: String { offer.tenant }

        /// What the refresh keeps alive; nil before the call is this worker's (its claim not answered) or
        /// before its start is recorded (the start writes the record: a refresh first would take it for one
        /// Redis lost, and the call's first moments would go unmetered).
        var held: CallStore.Held? {
            guard lifecycle.phase != .recordingStart else { return nil }
            return lifecycle.epoch.map { CallStore.Held(callID: callID, epoch: $0, tenant: tenant, startedAt: startedAt, metadata: offer.metadata) }
        }
    }

    struct State {
        var slots: WorkerSlots
        var calls: [String: Running] = [:]
        var seq: UInt64 = 0
        var load = LoadSampler.Sample(cpu: 0, memoryUsed: 0, memoryLimit: 0)
        /// The GPU's last reading (`gpuLoop`), nil without a GPU source or when it could not be read.
        var gpu: Heartbeat.GPULoad?
        var drain = Drain()
        /// The drain request in force (nil when serving), to tell a new one in Redis from the one applied.
        var appliedDrain: DrainRequest?
        /// Counts changes of `appliedDrain`, so a re-read of Redis acts only on what it read if no drain or
        /// undrain came in while it read (an undrain between its read and its act would be taken back).
        var drainChanges: UInt64 = 0
        /// Calls this worker has asked the routers to move and not yet heard back on.
        var migrating: Set<String> = []
        /// Ends Redis did not take, and calls its set lists that this worker does not hold (`repairRecords`).
        var repair = RecordRepair()
        /// CPU milliseconds of finished calls' agent processes, by tenant, not yet added to their usage in Redis.
        var agentCPU: [String: Int64] = [:]
        /// This worker's version under the deploy policy (see `Deploying.swift`).
        var standing: DeployStanding
        /// Redis's clock less this process's, at the last read (the rollback window is Redis's).
        var redisClockOffset: Int64 = 0
        /// Drain and deploy policy read, first heartbeat sent (`/readyz` says `starting` before).
        var started = false
        /// When the heartbeat loop last ran (`/healthz` fails when it stops: a wedged process).
        var lastHeartbeat = ContinuousClock.now
    }

    let state: Mutex<State>
    let heartbeatTrigger: AsyncStream<Void>.Continuation
    private let heartbeatTriggers: AsyncStream<Void>
    /// Calls said yes to, each run by a task of `run()`'s until its slot is free (`runCall`).
    let accepted: AsyncStream<String>.Continuation
    private let acceptedCalls: AsyncStream<String>
    /// Work that outlives the message or event that asked for it, run in `run()`'s task group (never in a loose
    /// task): each job in a child task of its own.
    enum Job: Sendable {
        /// An order from a router (drains and the steps of moving a call need Redis: off the delivery thread).
        case control(NATSMessage)
        /// SIGTERM: drain with the configured deadline.
        case drainOnSignal
        /// Ask the routers to move one call (at a drain deadline).
        case move(String)
    }
    let job: AsyncStream<Job>.Continuation
    private let jobs: AsyncStream<Job>
    /// Wakes the drain at once (a call ended, a drain was asked for) rather than at its next tick.
    let drainTrigger: AsyncStream<Void>.Continuation
    let drainTriggers: AsyncStream<Void>
    /// Runs `refreshCalls` now rather than at the next interval (a write found a record missing).
    let refreshTrigger: AsyncStream<Void>.Continuation
    let refreshTriggers: AsyncStream<Void>
    /// Deploy policies read or announced, and ticks, taken one at a time (`deployLoop`).
    let deployEvent: AsyncStream<DeployEvent>.Continuation
    let deployEvents: AsyncStream<DeployEvent>

    /// Where this worker's spans go (each call's start here and its end); nil: tracing is off.
    public let tracer: Tracer?

    public init(configuration: WorkerConfiguration, nats: NATSConnection, redis: RedisClient, handler: any CallHandler,
                metrics: MetricsRegistry = MetricsRegistry(), tracer: Tracer? = nil, logger: Logger) throws(SwitchboardError) {
        try configuration.validate()
        self.tracer = tracer
        self.configuration = configuration
        self.nats = nats
        self.redis = redis
        drains = DrainStore(redis: redis, keys: configuration.keys)
        self.handler = handler
        self.metrics = metrics
        wallClock = configuration.wallClock
        var logger = logger
        logger[metadataKey: LogKey.workerID] = "\(configuration.id)"
        self.logger = logger
        state = Mutex(State(slots: WorkerSlots(capacity: configuration.capacity), standing: DeployStanding(version: configuration.version)))
        callStore = CallStore(redis: redis, keys: configuration.keys, wallClock: configuration.wallClock)
        stallWatch = StallWatch(limit: configuration.stallLimit)
        tenantLabels = TenantLabels(cap: configuration.tenantLabelCap)
        timeline = TimelineWriter(store: TimelineStore(redis: redis, keys: configuration.keys, cap: configuration.timelineCap,
                                                       retention: configuration.timelineRetention),
                                  metrics: metrics, logger: logger)
        (jobs, job) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (heartbeatTriggers, heartbeatTrigger) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (acceptedCalls, accepted) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (drainTriggers, drainTrigger) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (refreshTriggers, refreshTrigger) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (deployEvents, deployEvent) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Runs until its drain is done (its last call gone), `stop()`, or cancellation. A graceful shutdown
    /// (SIGTERM) starts a drain with the configured deadline: no new calls, the calls here go on, and at the
    /// deadline those left move to other workers (or end). It then reports `stopping` with no calls (routers
    /// drop it at once) and returns.
    public func run() async throws {
        // Offers are answered on the delivery thread: the decision is a few microseconds under a lock, and a
        // hop to another thread would cost more than all of it.
        let offers = try nats.subscribe(to: configuration.subjects.offer(worker: configuration.id)) { [self] message in
            handleOffer(message)
        }
        // A router that missed our heartbeats asks directly; the answer is a fresh heartbeat.
        let pings = try nats.subscribe(to: configuration.subjects.ping(worker: configuration.id)) { [self] message in
            do {
                try nats.reply(to: message, payload: heartbeat().encoded())
            } catch {
                logger.warning("ping not answered", metadata: [LogKey.error: "\(error)"])
            }
        }
        let controls = try nats.subscribe(to: configuration.subjects.control(worker: configuration.id)) { [self] message in
            job.yield(.control(message))
        }
        let deployNotices = try nats.subscribe(to: configuration.subjects.deploy) { [self] message in ingestDeployNotice(message) }
        try await nats.flush()
        await syncDrainFromRedis()
        await syncDeployFromRedis(applyNow: true)
        let burner = configuration.syntheticCPULoad > 0 ? CPUBurner(share: configuration.syntheticCPULoad) : nil
        defer { burner?.stop() }
        logger.info("worker running", metadata: ["version": "\(configuration.version)", "region": "\(configuration.region)",
                                                 "capacity": "\(configuration.capacity)"])
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                background.addTask { await self.heartbeatLoop() }
                background.addTask { await self.timeline.run() }
                if let tracer = self.tracer { background.addTask { await tracer.run() } }
                background.addTask { await self.ticker() }
                background.addTask { await self.drainLoop() }
                background.addTask { await self.checkpointLoop() }
                background.addTask { await self.watchLoop() }
                background.addTask { await self.callClock() }
                background.addTask { await self.refreshLoop() }
                background.addTask { await self.watchConnection() }
                background.addTask { await self.deployLoop() }
                background.addTask { await self.handler.runBackground() }
                if configuration.gpuSource != .none { background.addTask { await self.gpuLoop() } }
                background.addTask {
                    await withDiscardingTaskGroup { inFlight in
                        for await job in self.jobs {
                            inFlight.addTask { await self.perform(job) }
                        }
                    }
                }
                await withDiscardingTaskGroup { calls in
                    for await callID in acceptedCalls {
                        calls.addTask { await self.runCall(callID) }
                    }
                }
                background.cancelAll()
            }
        } onGracefulShutdown: {
            self.job.yield(.drainOnSignal)
        }
        offers.unsubscribe()
        pings.unsubscribe()
        controls.unsubscribe()
        deployNotices.unsubscribe()
        await meterAgentCPU()  // the last calls' agent CPU time, before the worker goes
        await publishHeartbeat()  // stopping, no calls: routers drop this worker now
        logger.info("worker stopped")
    }

    /// Stops at once: takes no more calls and ends the ones running (reason `worker_stopping`); `run` returns
    /// when they have ended. A drain is the gentle way (see `drain`).
    public func stop() {
        let calls = state.withLock { state -> [String] in
            state.slots.setState(.stopping)
            return Array(state.calls.keys)
        }
        logger.info("worker stopping", metadata: ["calls": "\(calls.count)"])
        for callID in calls { handle(callID, .endRequested(.workerStopping)) }
        accepted.finish()
        heartbeatTrigger.yield()
    }

    // MARK: - Offers

    func handleOffer(_ message: NATSMessage) {
        let offer: Offer
        do {
            offer = try Offer.decode(message.payload)
        } catch {
            metrics.increment(MetricNames.badMessages, ["kind": "offer", "code": error.code.rawValue], help: "Messages refused as malformed")
            logger.warning("bad offer refused", metadata: [LogKey.error: "\(error)"])
            answer(message, .refuse(.badOffer, workerID: configuration.id, version: configuration.version, region: configuration.region))
            return
        }
        var (decision, acceptSeq) = state.withLock {
            ($0.slots.offer(offer.callID, resume: offer.resume != nil, deployRevision: offer.deployRevision), $0.slots.accepted)
        }
        if decision == .accept && !handler.reserve(callID: offer.callID) {
            // The agent cannot take a call now (no warm process, its server down): another worker should.
            state.withLock { _ = $0.slots.end(offer.callID) }
            decision = .refuse(.agentUnavailable)
        }
        var running: Running?
        if decision == .accept {
            // Listen on the call's subjects before saying yes: the caller may send audio the moment it hears.
            do {
                running = try takeOn(offer, message)
            } catch {
                logger.error("cannot take the call on", metadata: [LogKey.callID: "\(offer.callID)", LogKey.error: "\(error)"])
                let stopping = state.withLock { state in
                    state.slots.end(offer.callID)
                    return state.slots.state == .stopping
                }
                handler.release(callID: offer.callID)
                decision = .refuse(stopping ? .stopping : .full)
            }
        }
        switch decision {
        case .accept:
            guard let running else { return }
            if offer.resume == nil {
                answer(message, .accept(workerID: configuration.id, version: configuration.version, region: configuration.region,
                                        acceptSeq: acceptSeq))
                metrics.increment(MetricNames.offersAnswered, ["result": "accepted"], help: "Offers answered by result")
                heartbeatAfterAccept()
            }
            // A call moving in is answered once claimed (`answerAccepted`): nothing is said or sent for it before.
            dispatch(running.lifecycle.start(), running)
        case .refuse(let reason):
            answer(message, .refuse(reason, workerID: configuration.id, version: configuration.version, region: configuration.region))
            metrics.increment(MetricNames.offersAnswered, ["result": "refused_\(reason.rawValue)"], help: "Offers answered by result")
        }
    }

    /// A call accepted: every router hears of it at once (within `heartbeatSpacing`), not at the next periodic
    /// heartbeat. Routers count only their own offers in flight; without this, each would keep picking the worker
    /// whose last heartbeat looks emptiest until the next one (and a full worker is told at once, so offers stop).
    func heartbeatAfterAccept() {
        heartbeatTrigger.yield()
    }

    /// Subscribes to the call's subjects and hands the call to a task of `run()`'s (`runCall`).
    /// - Throws: when a subscription fails, or the worker stopped taking calls (`stop()`) since the slot's yes.
    private func takeOn(_ offer: Offer, _ message: NATSMessage) throws -> Running {
        let callID = offer.callID
        let session = CallSession(callID: callID, nats: nats, subject: configuration.subjects.mediaOut(worker: configuration.id, call: callID),
                                  sampleRate: configuration.sampleRate, bitrate: configuration.bitrate,
                                  metrics: metrics, resumingFrom: offer.resume?.checkpoint,
                                  unixNowMillis: wallClock.unixMillis, watch: stallWatch,
                                  firstAudio: { [self] in note(callID, "agent_first_audio") })
        // Bounded in messages and bytes: 5 s of audio, whatever a flood of large messages holds.
        let media = try nats.subscribe(to: configuration.subjects.mediaIn(worker: configuration.id, call: callID), pendingLimit: 250, pendingBytes: 512 * 1024)
        let endRequests: NATSSubscription
        do {
            endRequests = try nats.subscribe(to: configuration.subjects.end(worker: configuration.id, call: callID), pendingLimit: 16, pendingBytes: 64 * 1024)
        } catch {
            media.unsubscribe()
            throw error
        }
        let limits = CallLifecycle.Limits(maxDuration: configuration.maxCallDuration, mediaTimeout: configuration.mediaTimeout,
                                          heldTimeout: configuration.migrateTimeout)
        let now = ContinuousClock.now
        let (stops, stop) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingOldest(1))
        var running = Running(lifecycle: offer.resume == nil ? CallLifecycle(newCall: callID, limits: limits, now: now)
                                                             : CallLifecycle(movingIn: callID, limits: limits, now: now),
                              offer: offer, actions: ActionQueue(), stop: stop, stops: stops, media: media,
                              endRequests: endRequests, waitingEnds: EndRequests(), session: session, startedAt: wallClock.unixMillis,
                              pendingReply: offer.resume == nil ? nil : message)
        running.startSpan = tracer.start("start", kind: .server, parent: TraceContext(traceparent: message.headers["traceparent"]),
                                         attributes: ["switchboard.call_id": callID, "switchboard.worker_id": configuration.id,
                                                      "switchboard.reason": offer.resume?.reason.rawValue ?? "new"])
        state.withLock { $0.calls[callID] = running }
        if case .terminated = accepted.yield(callID) {
            // `stop()` came between the slot's yes and now: no task would ever run the call.
            state.withLock { $0.calls[callID] = nil }
            media.unsubscribe()
            endRequests.unsubscribe()
            throw SwitchboardError(.unavailable, "the worker is stopping")
        }
        return running
    }

    private func perform(_ job: Job) async {
        switch job {
        case .control(let message):
            await handleControl(message)
        case .drainOnSignal:
            await drain(deadline: configuration.drainDeadline, atDeadline: configuration.drainAtDeadline, requestedBy: DrainRequest.bySignal)
        case .move(let callID):
            await askToMove(callID)
        }
    }

    func answer(_ message: NATSMessage, _ reply: OfferReply) {
        do {
            try nats.reply(to: message, payload: reply.encoded())
        } catch {
            logger.warning("offer reply not sent", metadata: [LogKey.error: "\(error)"])
        }
    }

    /// Ends a call held by this worker; false if it holds no such call.
    @discardableResult
    public func endCall(_ callID: String, reason: EndReason) -> Bool {
        handle(callID, .endRequested(reason))
    }

    public var activeCalls: Int { state.withLock { $0.slots.activeCalls } }

    /// What `/healthz` and `/readyz` decide from.
    public func probeInputs() -> WorkerProbe.Inputs {
        let connected = nats.isConnected, closed = nats.isClosed
        return state.withLock { state in
            WorkerProbe.Inputs(state: state.slots.reportedState, calls: state.slots.activeCalls, capacity: configuration.capacity,
                               started: state.started, natsConnected: connected, natsClosed: closed,
                               sinceHeartbeat: .now - state.lastHeartbeat)
        }
    }
    public var workerState: WorkerState { state.withLock { $0.slots.reportedState } }

    // MARK: - Heartbeats

    private func ticker() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            heartbeatTrigger.yield()
        }
    }

    private func heartbeatLoop() async {
        var sampler = LoadSampler(source: configuration.cpuSource) { [handler] in handler.processIDs }
        var lastSample = ContinuousClock.now - configuration.heartbeatInterval
        // Routers learn of this worker only once its handler can take a call (an agent process warm, the agent
        // server answering), or after a minute in any case (then offers are refused until it can).
        let waitUntil = ContinuousClock.now + .seconds(60)
        while !handler.isReady && ContinuousClock.now < waitUntil && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if !handler.isReady { logger.warning("the handler is not ready after 60 s: joining the cluster anyway; offers are refused until it is") }
        await publishHeartbeat()
        state.withLock { $0.started = true }
        var lastPublished = ContinuousClock.now
        for await _ in heartbeatTriggers {
            // Triggers in a burst (calls accepted one after another) make one heartbeat per spacing.
            let due = lastPublished + configuration.heartbeatSpacing
            if due > .now { try? await Task.sleep(until: due, clock: .continuous) }  // cancelled: publish now, the loop ends next
            lastPublished = .now
            if ContinuousClock.now - lastSample >= configuration.heartbeatInterval / 2 {
                let sample = sampler.sample()
                lastSample = .now
                state.withLock { $0.load = sample }
            }
            await publishHeartbeat()
        }
    }

    /// Reads the GPU every heartbeat interval (a command may take up to 2 s: off the heartbeat's own loop).
    private func gpuLoop() async {
        let sampler = GPUSampler(source: configuration.gpuSource)
        var reported: Bool?
        while !Task.isCancelled {
            let reading = await sampler.sample()
            state.withLock { $0.gpu = reading }
            if reported != (reading != nil) {
                reported = reading != nil
                logger.log(level: reading == nil ? .warning : .info,
                           reading == nil ? "the GPU cannot be read: heartbeats carry no GPU load" : "heartbeats carry the GPU's load",
                           metadata: ["gpu_source": "\(configuration.gpuSource)"])
            }
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    func heartbeat() -> Heartbeat {
        state.withLock { state in
            state.seq += 1
            return Heartbeat(workerID: configuration.id, version: configuration.version, region: configuration.region,
                             zone: configuration.zone, state: state.slots.reportedState, capacity: configuration.capacity,
                             activeCalls: state.slots.activeCalls, cpu: state.load.cpu,
                             memoryUsedBytes: state.load.memoryUsed, memoryLimitBytes: state.load.memoryLimit,
                             seq: state.seq, incarnation: incarnation, accepted: state.slots.accepted, gpu: state.gpu)
        }
    }

    /// The gauges a scrape reads that heartbeats do not set (they set calls, capacity, CPU and memory).
    public func updateGauges() {
        let (reported, calls, draining, idle) = state.withLock {
            ($0.slots.reportedState, $0.slots.activeCalls, $0.drain.isDraining, $0.drain.phase == .drained)
        }
        var byState: [MetricsRegistry.Labels: Double] = [:]
        for s in WorkerState.allCases { byState[["state": s.rawValue]] = s == reported ? 1 : 0 }
        metrics.replaceGauge(MetricNames.workerState, byState, help: "1 for the state this worker reports")
        metrics.set(MetricNames.workerCalls, to: Double(calls), help: "Calls this worker holds")
        metrics.set(MetricNames.workerFreeSlots, to: Double(Swift.max(0, configuration.capacity - calls)), help: "Calls this worker may still take")
        metrics.set(MetricNames.workerDraining, to: draining ? 1 : 0, help: "1 while this worker drains")
        metrics.set(MetricNames.workerDrainedIdle, to: idle ? 1 : 0, help: "1 while a drained worker stays up with no calls (--when-drained stay)")
        metrics.set(MetricNames.workerNATSConnected, to: nats.isConnected ? 1 : 0, help: "1 while connected to NATS")
    }

    func publishHeartbeat() async {
        let hb = heartbeat()
        state.withLock { $0.lastHeartbeat = .now }
        metrics.set(MetricNames.workerCalls, to: Double(hb.activeCalls), help: "Calls this worker holds")
        metrics.set(MetricNames.workerCapacity, to: Double(hb.capacity), help: "Calls this worker may hold")
        metrics.set(MetricNames.workerCPU, to: hb.cpu, help: "CPU in use as a share of what the worker may use")
        metrics.set(MetricNames.workerMemory, to: Double(hb.memoryUsedBytes), help: "Memory in use")
        do {
            try nats.publish(configuration.subjects.heartbeat(worker: configuration.id), payload: hb.encoded())
        } catch {
            logger.warning("heartbeat not sent", metadata: [LogKey.error: "\(error)"])
        }
    }
}
