import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardRedis

extension Router {
    /// Places a call: choose a worker, offer, and on accept record the call in Redis. One deadline covers
    /// it all (`deadline`, from when the request came in, so the caller's key check counts too; nil: from
    /// now): a slow or frozen Redis makes it fail with `unavailable` in time, never pile up. Every failure
    /// answers with a code and is counted.
    /// With a `tenant` (tenancy on), the call is the tenant's whatever the request says, and is admitted
    /// against its limits first; a call that is then not placed gives its lease back.
    /// `trace`: the caller's trace context (a gateway's route span), whose child the route's span is.
    public func route(_ request: RouteRequest, tenant: TenantPolicy? = nil, deadline: ContinuousClock.Instant? = nil,
                      trace: TraceContext? = nil) async throws(SwitchboardError) -> Placement {
        guard state.withLock({ $0.started }) else {
            throw SwitchboardError(.unavailable, "this router is starting (reading the deploy policy); try again in a moment")
        }
        let start = clock.now
        let requestedAt = wallClock.unixMillis
        let deadline = deadline ?? start + configuration.routeDeadline
        let callID = Identifiers.random(prefix: "c")
        var request = request
        if let tenant { request.tenant = tenant.id }
        var log = logger
        log[metadataKey: LogKey.callID] = "\(callID)"
        log[metadataKey: LogKey.tenant] = "\(request.tenant)"
        var withoutRedis = false
        let span = tracer.start("route", kind: .server, parent: trace,
                                attributes: ["switchboard.call_id": callID, "switchboard.tenant": request.tenant])
        defer { span?.end() }
        do throws(SwitchboardError) {
            if let tenant {
                if let region = request.region, !tenant.regions.isEmpty, !tenant.regions.contains(region) {
                    throw SwitchboardError(.invalidArgument, "tenant '\(tenant.id)' may not place calls in region '\(region)'")
                }
                withoutRedis = try await admit(tenant, callID: callID, deadline: deadline) == .withoutRedis
            }
            let placement: Placement
            do throws(SwitchboardError) {
                placement = try await place(request, callID: callID, requestedAt: requestedAt, deadline: deadline, logger: log,
                                            admittedWithoutRedis: withoutRedis, regions: tenant?.regions ?? [],
                                            recorded: tenant?.record ?? configuration.recordCalls, trace: span?.context ?? trace)
            } catch {
                if let tenant { await notPlaced(tenant: tenant.id, callID: callID, admittedWithoutRedis: withoutRedis, failure: error) }
                throw error
            }
            finish(start, result: "placed")
            log.info("call placed", metadata: [LogKey.workerID: "\(placement.workerID)"])
            span?.set("switchboard.worker_id", placement.workerID)
            return placement
        } catch {
            span?.fail("\(error.api.code): \(error.message)")
            finish(start, result: error.api.code)
            log.warning("call not placed", metadata: [LogKey.errorCode: "\(error.code)", LogKey.error: "\(error.message)"])
            throw error
        }
    }

    private func finish(_ start: ContinuousClock.Instant, result: String) {
        let seconds = (clock.now - start).microseconds / 1e6
        metrics.increment(MetricNames.placements, ["result": result], help: "Route requests by result")
        metrics.observe(MetricNames.placementSeconds, [:], seconds, buckets: MetricNames.latencyBuckets,
                        help: "Time from route request to answer")
    }

    private func place(_ request: RouteRequest, callID: String, requestedAt: Int64, deadline: ContinuousClock.Instant, logger: Logger,
                       admittedWithoutRedis: Bool = false, regions: [String] = [], recorded: Bool = false,
                       trace: TraceContext? = nil) async throws(SwitchboardError) -> Placement {
        let span = tracer.start("placement", parent: trace, attributes: ["switchboard.call_id": callID])
        defer { span?.end() }
        do throws(SwitchboardError) {
            return try await placeTraced(request, callID: callID, requestedAt: requestedAt, deadline: deadline, logger: logger,
                                         admittedWithoutRedis: admittedWithoutRedis, regions: regions, recorded: recorded,
                                         trace: span?.context ?? trace)
        } catch {
            span?.fail("\(error.api.code): \(error.message)")
            throw error
        }
    }

    private func placeTraced(_ request: RouteRequest, callID: String, requestedAt: Int64, deadline: ContinuousClock.Instant, logger: Logger,
                             admittedWithoutRedis: Bool, regions: [String], recorded: Bool,
                             trace: TraceContext?) async throws(SwitchboardError) -> Placement {
        // Minted first: nothing can fail after a worker has said yes but the record.
        let credentials = try mediaCredentials(for: callID)
        // The deploy policy decides the versions: the canary's share, else the active one.
        let (choice, revision) = versionChoice(tenant: request.tenant)
        let offer = Offer(callID: callID, tenant: request.tenant, region: request.region, metadata: request.metadata,
                          routerID: configuration.id, deployRevision: revision)
        // A tenant held to some regions is placed only there, whether or not the request names one.
        let needs = Scheduler.Needs(versions: choice.versions, fallback: choice.fallback, region: request.region,
                                    zone: request.zone, locality: request.locality).onlyIn(regions)
        let offered: Offered
        do {
            offered = try await offerAround(offer, needs: needs, deadline: deadline, explain: request.explain, logger: logger, trace: trace)
        } catch {
            if let version = choice.version { countPlacement(version, "failed") }
            throw error
        }
        let (reply, explanation) = (offered.reply, offered.explanation)
        countPlacement(reply.version, "placed")
        if offered.fellBack, let canary = choice.version { countPlacement(canary, "fallback") }
        var record = CallRecord(callID: callID, tenant: request.tenant, workerID: reply.workerID, version: reply.version,
                                region: reply.region, state: .placed, createdAt: wallClock.unixMillis, metadata: request.metadata)
        record.traceparent = trace?.traceparent  // moves, failovers and the end join the call's trace from it
        do {
            try await callStore.place(record, deadline: deadline)
        } catch where admittedWithoutRedis {
            // Admitted under the tenant's fail-open rule: the call goes on unrecorded rather than not at all.
            logger.warning("call placed but not recorded: Redis unreachable", metadata: [LogKey.error: "\(error)"])
        } catch {
            // The worker holds a slot for a call nobody will know of: tell it to let go.
            // Best effort: a worker that misses it ends the call as `not_running` at its record repair.
            try? nats.publish(configuration.subjects.end(worker: reply.workerID, call: callID), payload: CallEnd(callID: callID, reason: .api).encoded())
            throw SwitchboardError(.unavailable, "call accepted by \(reply.workerID) but not recorded: \(error)")
        }
        // On the timeline at the moment it was asked for (before its worker started it), with how long placing took.
        let now = wallClock.unixMillis
        var details = ["tenant": request.tenant, "version": reply.version, "region": reply.region, "offers": "\(offered.offers)",
                       "route_ms": "\(now - requestedAt)", "candidates": offered.candidates]
        if let trace { details["trace_id"] = trace.traceID }
        publishEvent(CallEvent(callID: callID, event: .placed, workerID: reply.workerID, atMillis: now), noteAt: requestedAt, details: details)
        return Placement(callID: callID, workerID: reply.workerID, version: reply.version, region: reply.region,
                         media: MediaSubjects(in: configuration.subjects.mediaIn(worker: reply.workerID, call: callID),
                                              out: configuration.subjects.mediaOut(worker: Subjects.anyWorker, call: callID),
                                              credentials: credentials),
                         explain: explanation, record: recorded ? true : nil)
    }

    /// A worker's accept, why it was chosen (when asked), and whether it came from the needs' fallback
    /// versions (a canary's call on the active version).
    struct Offered {
        var reply: OfferReply
        var explanation: Scheduler.Explanation?
        var fellBack: Bool
        /// Offers made, this one included.
        var offers: Int
        /// The best candidates of the first choice, with their scores, for the timeline (`w1:2.41,w2:2.38`).
        var candidates: String
    }

    /// Offers a call to the workers the scheduler chooses, one after another, until one accepts, `maxOffers`
    /// have been tried, or the deadline passes. Every offer reserves its slot in this router's view until
    /// the worker's heartbeats show it. `resuming`: a dead worker's call, for which other calls' offers are held
    /// back while free slots are scarce.
    func offerAround(_ offer: Offer, needs: Scheduler.Needs, deadline: ContinuousClock.Instant, explain: Bool = false, resuming: Bool = false,
                     logger: Logger, trace: TraceContext? = nil) async throws(SwitchboardError) -> Offered {
        let payload = offer.encoded()
        var attempt = PlacementAttempt(needs: needs, maxOffers: configuration.maxOffers, offerTimeout: configuration.offerTimeout,
                                       deadline: deadline)
        var explanation: Scheduler.Explanation?
        var offers = 0
        var firstCandidates: [Scheduler.Candidate]?
        while true {
            let needs: Scheduler.Needs, timeout: Duration
            switch attempt.next(now: clock.now) {
            case .offer(let n, let t): (needs, timeout) = (n, t)
            case .wait(let until):
                try? await Task.sleep(until: until, clock: clock)  // cancelled: the deadline still ends the attempt
                continue
            case .giveUp(var error):
                error.explanation = explanation
                throw error
            }
            // Choose and reserve in one step, so concurrent routes see each other's offers.
            let event = RouterState.Event.offerWanted(needs, explain: explain && explanation == nil, resuming: resuming)
            let (decision, reserved, unanswered) = switch state.withLock({ $0.known.modify(event, now: clock.now) }).first {
            case .offer(let decision, let token)?: (decision, token as UInt64?, false)
            case .noCandidate(let decision, let unanswered)?: (decision, nil, unanswered)
            case .held(let waiting, let free)?:
                metrics.increment(MetricNames.placementsHeld, help: "New calls and moves not offered: the free slots were held for dead workers' calls")
                throw SwitchboardError(.noCapacity, "the \(free) free slot(s) are held for \(waiting) call(s) of a lost worker waiting to be "
                                       + "taken on; try again in a moment")
            default: preconditionFailure("an offer wanted is answered with an offer, none, or held")
            }
            if let first = decision.explanation { explanation = first }
            if firstCandidates == nil { firstCandidates = Array(decision.candidates.prefix(5)) }
            guard let worker = decision.chosen, let token = reserved else {
                attempt.noCandidate(now: clock.now, offersUnanswered: unanswered)
                continue
            }
            let fromFallback = decision.fallback > 0
            attempt.offered(worker.workerID)
            offers += 1
            let reply: OfferReply
            let span = tracer.start("offer", kind: .client, parent: trace,
                                    attributes: ["switchboard.call_id": offer.callID, "switchboard.worker_id": worker.workerID])
            defer { span?.end() }
            var headers: NATSHeaders = ["Call-Id": offer.callID]
            if let context = span?.context ?? trace { headers["traceparent"] = context.traceparent }
            do {
                let message = try await nats.request(configuration.subjects.offer(worker: worker.workerID), payload: payload,
                                                     headers: headers, timeout: timeout)
                reply = try OfferReply.decode(message.payload)
            } catch {
                let code = error.code.rawValue
                span?.fail(code)
                let mayJudge = state.withLock { state in
                    _ = state.known.modify(.offerAnswered(worker: worker.workerID, token: token, .failed), now: clock.now)
                    return state.known.registry.mayJudge(now: clock.now)
                }
                metrics.increment(MetricNames.offers, ["result": code], help: "Offers to workers by result")
                if error.code == .noResponders && !mayJudge {
                    // Back on the bus a moment ago (a NATS restart): the worker's subscriptions may not be on the
                    // server yet. Offered again once no other worker is left, within the deadline.
                    note(offer.callID, "offer_unheard", ["worker": worker.workerID])
                    _ = attempt.answered(worker.workerID, .unheard)
                    continue
                }
                logger.warning("offer failed", metadata: [LogKey.workerID: "\(worker.workerID)", LogKey.error: "\(error)"])
                note(offer.callID, "offer_failed", ["worker": worker.workerID, "result": code])
                _ = attempt.answered(worker.workerID, .failed(code))
                continue
            }
            guard reply.accepted, let acceptSeq = reply.acceptSeq else {
                _ = state.withLock { $0.known.modify(.offerAnswered(worker: worker.workerID, token: token, .refused), now: clock.now) }
                let reason = reply.reason?.rawValue ?? "refused"
                span?.set("switchboard.refused", reason)
                metrics.increment(MetricNames.offers, ["result": "refused_\(reason)"], help: "Offers to workers by result")
                // The worker follows a newer deploy policy than this router: read it now.
                if reply.reason == .outdated { job.yield(.reloadDeploy) }
                note(offer.callID, "offer_refused", ["worker": worker.workerID, "reason": reason])
                _ = attempt.answered(worker.workerID, .refused(reason))
                continue
            }
            _ = state.withLock { $0.known.modify(.offerAnswered(worker: worker.workerID, token: token, .accepted(acceptSeq: acceptSeq)), now: clock.now) }
            metrics.increment(MetricNames.offers, ["result": "accepted"], help: "Offers to workers by result")
            _ = attempt.answered(worker.workerID, .accepted)
            let candidates = (firstCandidates ?? []).map { "\($0.workerID):\(String(format: "%.2f", $0.score.total))" }.joined(separator: ",")
            return Offered(reply: reply, explanation: explanation, fellBack: fromFallback, offers: offers,
                           candidates: String(candidates.utf8.prefix(TimelineEvent.maxValueBytes)) ?? "")
        }
    }

    /// A credential for the call's media alone, when this router has the bus's media signing key.
    private func mediaCredentials(for callID: String) throws(SwitchboardError) -> String? {
        guard let signing = configuration.mediaSigning else { return nil }
        let expires = wallClock.unixMillis / 1000 + configuration.mediaCredentialTTL.components.seconds
        let credentials = try signing.credentials(forCall: callID, subjects: configuration.subjects, expires: expires)
        return NATSJWT.credentials(jwt: credentials.jwt, seed: credentials.seed)
    }

    /// Tells the call's gateway and listeners what became of the call, and notes it on its timeline (with
    /// `details` beside what the event says).
    func publishEvent(_ event: CallEvent, noteAt: Int64? = nil, details: [String: String] = [:]) {
        // Fails only with the connection closed (this router is stopping) or its reconnect buffer full: the
        // event is on the timeline below either way, and a gateway learns a move from the worker's own events.
        try? nats.publish(configuration.subjects.events(worker: event.workerID, call: event.callID), payload: event.encoded())
        var attributes = details
        attributes["worker"] = event.workerID
        if let from = event.fromWorker { attributes["from_worker"] = from }
        if let reason = event.reason { attributes["reason"] = reason }
        note(event.callID, event.event.rawValue, attributes, at: noteAt ?? event.atMillis)
    }

    /// Notes one event on a call's timeline (queued; written off the call's path).
    func note(_ callID: String, _ type: String, _ attributes: [String: String] = [:], at: Int64? = nil) {
        timeline.record(callID, TimelineEvent(atMillis: at ?? wallClock.unixMillis, source: .router, member: configuration.id, type: type, attributes: attributes))
    }

    // MARK: - NATS API

    func handleRouteRequest(_ message: NATSMessage) async {
        let reply: RouteReply
        do {
            let deadline = clock.now + configuration.routeDeadline
            let request = try RouteRequest.decode(message.payload)
            let tenant = try await tenant(authorization: message.headers["Authorization"], deadline: deadline)
            reply = RouteReply(call: try await route(request, tenant: tenant, deadline: deadline,
                                                     trace: TraceContext(traceparent: message.headers["traceparent"])))
        } catch {
            if error.code == .badMessage || error.code == .tooLarge {
                countBadMessage("route_request", error)
                finishBad(error)
            }
            reply = RouteReply(error: error)
        }
        do {
            try nats.reply(to: message, payload: reply.encoded())
        } catch {
            logger.warning("route reply not sent", metadata: [LogKey.error: "\(error)"])
        }
    }

    private func finishBad(_ error: SwitchboardError) {
        metrics.increment(MetricNames.placements, ["result": error.api.code], help: "Route requests by result")
    }

    // MARK: - Calls

    /// The call's record; `not_found` when Redis has none.
    public func call(_ id: String) async throws(SwitchboardError) -> CallRecord {
        try WireCheck.identifier(id, "call_id")
        let fields: [String: String]
        do {
            fields = try await redis.hashGetAll(configuration.keys.call(id))
        } catch {
            throw SwitchboardError(.unavailable, "cannot read call \(id): \(error)")
        }
        guard let record = CallRecord(callID: id, fields: fields) else {
            throw SwitchboardError(.notFound, "no call \(id)")
        }
        return record
    }

    /// Ends a call: asks the worker that holds it to end it, and returns the final record.
    public func endCall(_ id: String) async throws(SwitchboardError) -> CallRecord {
        let record = try await call(id)
        guard record.state != .ended else { return record }
        do {
            _ = try await nats.request(configuration.subjects.end(worker: record.workerID, call: id), payload: CallEnd(callID: id, reason: .api).encoded(),
                                       headers: ["Call-Id": id], timeout: configuration.endTimeout)
        } catch where error.code == .noResponders {
            // Nobody listens for the call's end. Right after this router's own reconnection (a NATS restart)
            // that is the bus, not the worker: its subscriptions come back a moment later, and closing the record
            // now would have it let go of a live call. (Seen by hand: three calls of a live worker were closed
            // `not_running` this way.) Asked again, it reaches the worker.
            guard state.withLock({ $0.known.registry.mayJudge(now: clock.now) }) else {
                throw SwitchboardError(.unavailable, "the worker holding call \(id) is not heard on the bus yet: this router was cut off from NATS a moment ago; try again")
            }
            // No worker holds it any more (it died or never started it): close the record so it does not
            // stay "active" for ever.
            // Redis unreachable: the record stays open until the reconciliation (or the next end request) closes it.
            _ = try? await callStore.end(id, tenant: record.tenant, worker: record.workerID, epoch: record.epoch, reason: .notRunning,
                                         retention: configuration.endedCallRetention)
        } catch {
            throw SwitchboardError(.unavailable, "could not reach the worker holding call \(id): \(error)")
        }
        return try await call(id)
    }
}
