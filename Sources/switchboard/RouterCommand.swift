import ArgumentParser
import Foundation
import Logging
import SwitchboardCore
import SwitchboardRouter

struct RouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Run a router: place calls on workers; serve the HTTP API and the NATS route subject.")

    @OptionGroup var cluster: ClusterOptions

    @Option(help: "Router id, unique in the cluster (env SWITCHBOARD_ID).")
    var id: String = Settings.string("id", "router-\(Identifiers.random(bytes: 3))")
    @Option(name: .customLong("http-host"), help: "HTTP API address.")
    var httpHost: String = Settings.string("http-host", "127.0.0.1")
    @Option(name: .customLong("http-port"), help: "HTTP API port (0 picks a free one).")
    var httpPort: Int = Settings.int("http-port", 8080)
    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between worker heartbeats.")
    var heartbeatInterval: Double = Settings.double("heartbeat-interval", 1)
    @Option(name: .customLong("route-deadline"), help: "Seconds allowed for one route request, all offers included.")
    var routeDeadline: Double = Settings.double("route-deadline", 2)
    @Option(name: .customLong("offer-timeout"), help: "Seconds one worker has to answer an offer.")
    var offerTimeout: Double = Settings.double("offer-timeout", 0.5)
    @Option(name: .customLong("max-offers"), help: "Workers offered one call at most.")
    var maxOffers: Int = Settings.int("max-offers", 3)

    func run() async throws {
        Runtime.followParentIfAsked()
        let logger = Runtime.logger("switchboard.router", level: cluster.logLevel)
        var config = RouterConfiguration(id: id, subjects: try cluster.subjects(), keys: try cluster.keys())
        config.httpHost = httpHost
        config.httpPort = httpPort
        config.heartbeatInterval = Duration(seconds: heartbeatInterval)
        config.routeDeadline = Duration(seconds: routeDeadline)
        config.offerTimeout = Duration(seconds: offerTimeout)
        config.maxOffers = maxOffers
        try await Runtime.serve(cluster, name: id, logger: logger) { nats, redis in
            let router = Router(configuration: config, nats: nats, redis: redis, logger: logger)
            let http = RouterHTTP.application(for: router) { port in
                say("router \(id) listening on http://\(httpHost):\(port)")
            }
            return [router, http]
        }
    }
}
