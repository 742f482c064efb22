import Hummingbird
import SwitchboardCore
import SwitchboardObservability

/// A worker's own HTTP endpoints, for probes and scrapes (calls never come this way): `/healthz` (the process
/// works; draining does not fail it), `/readyz` (takes new calls: 503 while starting, draining, outdated,
/// stopping or cut off from NATS) and `/metrics` (Prometheus text). See `WorkerProbe` for why they differ.
public enum WorkerHTTP {
    public static func application(for worker: Worker, host: String, port: Int,
                                   onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let routes = Router()
        routes.get("/healthz") { _, _ -> Response in
            probe(WorkerProbe.liveness(worker.probeInputs(), limit: worker.configuration.livenessAfter))
        }
        routes.get("/readyz") { _, _ -> Response in
            probe(WorkerProbe.readiness(worker.probeInputs()))
        }
        routes.get("/metrics") { _, _ -> Response in
            worker.updateGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: worker.metrics.render())))
        }
        return Application(
            router: routes,
            configuration: .init(address: .hostname(host, port: port), serverName: "switchboard-worker"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: worker.logger
        )
    }

    static func probe(_ probe: WorkerProbe) -> Response {
        Response(status: probe.ok ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: WireCodec.encode(probe))))
    }
}
