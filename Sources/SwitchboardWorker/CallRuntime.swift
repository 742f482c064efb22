import Foundation
import Logging
import SwitchboardCore
import SwitchboardNATS
import SwitchboardObservability
import SwitchboardOpus
import SwitchboardRedis
import Synchronization

extension Worker {
    /// Runs one accepted call from start to end: record it, carry its audio through the handler, end it for
    /// the first reason that comes (caller, handler, maximum duration, worker stopping), record the end, free
    /// the slot.
    func runCall(_ offer: Offer) async {
        let callID = offer.callID
        let log = logger.with([LogKey.callID: "\(callID)", LogKey.tenant: "\(offer.tenant)"])
        guard let running = state.withLock({ $0.calls[callID] }) else { return }
        let keys = configuration.keys

        await redisWrite(log, "record call start", [
            ["HSET", keys.call(callID), "state", "active", "worker_id", configuration.id,
             "started_at", String(Self.unixMillis())],
            ["SADD", keys.workerCalls(configuration.id), callID],
        ])

        let endRequests = EndRequests()
        let reason: EndReason
        do {
            let media = running.media
            let endSubscription = running.endRequests
            let sender = try AudioSender(nats: nats, subject: configuration.subjects.mediaOut(call: callID),
                                         sampleRate: configuration.sampleRate, bitrate: configuration.bitrate, metrics: metrics)
            let (audio, audioIn) = AsyncStream.makeStream(of: AudioFrame.self, bufferingPolicy: .bufferingNewest(50))
            let context = CallContext(callID: callID, tenant: offer.tenant, metadata: offer.metadata,
                                      sampleRate: configuration.sampleRate, audio: audio, sender: sender,
                                      hangUp: { running.end.yield(.handler) })
            log.info("call started")
            reason = await withTaskGroup(of: EndReason?.self) { group in
                group.addTask {
                    await self.receiveMedia(media, into: audioIn, sampleRate: self.configuration.sampleRate, logger: log)
                    return nil
                }
                group.addTask {
                    for await message in endSubscription {
                        switch Result(catching: { () throws(SwitchboardError) in try CallEnd.decode(message.payload) }) {
                        case .success(let end):
                            endRequests.add(message)
                            running.end.yield(end.reason)
                        case .failure(let error):
                            self.metrics.increment(MetricNames.badMessages, ["kind": "call_end", "code": error.code.rawValue])
                            try? self.nats.reply(to: message, payload: RouteReply(error: error).encoded())
                        }
                    }
                    return nil
                }
                group.addTask {
                    do {
                        try await self.handler.run(context)
                    } catch where !(error is CancellationError) {
                        log.warning("handler failed", metadata: [LogKey.error: "\(error)"])
                    } catch {}
                    return Task.isCancelled ? nil : .handler
                }
                group.addTask {
                    for await reason in running.ends { return reason }
                    return nil
                }
                group.addTask {
                    try? await Task.sleep(for: self.configuration.maxCallDuration)
                    return Task.isCancelled ? nil : .maxDuration
                }
                var first: EndReason = .workerStopping
                for await result in group {
                    if let result {
                        first = result
                        break
                    }
                }
                group.cancelAll()
                media.unsubscribe()
                endSubscription.unsubscribe()
                audioIn.finish()
                return first
            }
        } catch {
            log.error("call could not start", metadata: [LogKey.error: "\(error)"])
            running.media.unsubscribe()
            running.endRequests.unsubscribe()
            reason = .handler
        }

        await redisWrite(log, "record call end", [
            ["HSET", keys.call(callID), "state", "ended", "ended_at", String(Self.unixMillis()), "end_reason", reason.rawValue],
            ["EXPIRE", keys.call(callID), String(Int(configuration.endedCallRetention.components.seconds))],
            ["SREM", keys.workerCalls(configuration.id), callID],
            // The tenant's live-call lease goes back with the call (nothing to do when tenancy is off).
            ["ZREM", keys.tenantLeases(offer.tenant), callID],
        ])
        let wasFull = state.withLock { state -> Bool in
            let wasFull = state.slots.activeCalls >= state.slots.capacity
            state.slots.end(callID)
            state.calls.removeValue(forKey: callID)
            return wasFull
        }
        running.end.finish()
        metrics.increment(MetricNames.callsEnded, ["reason": reason.rawValue], help: "Calls ended, by reason")
        log.info("call ended", metadata: [LogKey.reason: "\(reason.rawValue)"])
        let ended = Array(#"{"v":1,"ended":true,"reason":"\#(reason.rawValue)"}"#.utf8)
        for request in endRequests.all { try? nats.reply(to: request, payload: ended) }
        if wasFull { heartbeatTrigger.yield() }  // a slot opened on a full worker: tell the routers now
    }

    /// Decodes the caller's packets into frames for the handler; a gap in sequence numbers (up to 5 packets)
    /// becomes concealed frames, a late or repeated packet is dropped, a malformed one is counted.
    func receiveMedia(_ media: NATSSubscription, into audio: AsyncStream<AudioFrame>.Continuation, sampleRate: Int,
                      logger: Logger) async {
        let decoder: OpusDecoder
        do {
            decoder = try OpusDecoder(sampleRate: sampleRate)
        } catch {
            logger.error("cannot create the audio decoder", metadata: [LogKey.error: "\(error)"])
            return
        }
        var last: UInt32?
        for await message in media {
            do {
                let packet = try MediaPacket.decode(message.payload)
                if let last {
                    let gap = packet.sequence &- last
                    if gap == 0 || gap > UInt32.max / 2 { continue }  // repeated or late
                    if gap > 1 && gap <= 6 {
                        for _ in 1..<gap { audio.yield(AudioFrame(samples: try decoder.decodeMissing(), concealed: true)) }
                    }
                }
                last = packet.sequence
                audio.yield(AudioFrame(samples: try decoder.decode(packet.payload)))
                metrics.increment(MetricNames.mediaPackets, ["direction": "in"], help: "Media packets, by direction")
            } catch {
                metrics.increment(MetricNames.badMessages, ["kind": "media", "code": error.code.rawValue])
            }
        }
    }

    private func redisWrite(_ log: Logger, _ what: String, _ commands: [[String]]) async {
        do {
            let replies = try await redis.pipeline(commands.map { RedisCommand($0) })
            if let failed = replies.first(where: { if case .error = $0 { return true } else { return false } }) {
                log.error("\(what) failed", metadata: [LogKey.error: "\(failed)"])
            }
        } catch {
            log.error("\(what) failed", metadata: [LogKey.error: "\(error)"])
        }
    }

    static func unixMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// Encodes a handler's frames and publishes them as media packets, numbering them. One per call; the lock
/// keeps the encoder on one caller at a time (a handler may send from more than one task).
final class AudioSender: Sendable {
    private struct State {
        var encoder: OpusEncoder
        var sequence: UInt32 = 0
        var timestamp: UInt32 = 0
    }

    private let state: Mutex<State>
    private let nats: NATSConnection
    private let subject: String
    private let frameSamples: Int
    private let metrics: MetricsRegistry

    init(nats: NATSConnection, subject: String, sampleRate: Int, bitrate: Int, metrics: MetricsRegistry) throws {
        let encoder = try OpusEncoder(sampleRate: sampleRate, bitrate: bitrate)
        state = Mutex(State(encoder: encoder))
        self.nats = nats
        self.subject = subject
        self.frameSamples = sampleRate / 50
        self.metrics = metrics
    }

    func send(_ samples: [Int16]) throws {
        let packet = try state.withLock { state -> MediaPacket in
            let payload = try state.encoder.encode(samples)
            defer {
                state.sequence &+= 1
                state.timestamp &+= 960  // 20 ms at 48 kHz, whatever the sample rate
            }
            return MediaPacket(sequence: state.sequence, timestamp: state.timestamp, payload: payload)
        }
        try nats.publish(subject, payload: packet.encoded())
        metrics.increment(MetricNames.mediaPackets, ["direction": "out"], help: "Media packets, by direction")
    }
}

/// End requests waiting for the call to finish ending, to be answered then.
final class EndRequests: Sendable {
    private let messages = Mutex<[NATSMessage]>([])
    func add(_ message: NATSMessage) { messages.withLock { $0.append(message) } }
    var all: [NATSMessage] { messages.withLock { $0 } }
}

extension Logger {
    /// A copy with more metadata.
    func with(_ metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (key, value) in metadata { copy[metadataKey: key] = value }
        return copy
    }
}
