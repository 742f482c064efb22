/// Who may say what on the bus: each role's NATS permissions, from the cluster's subjects. Routers, workers,
/// gateways (the media bridges that ask for routes) and operators each get a credential with exactly these;
/// a caller's media connection gets one call's subjects only (`call`). See docs/security.md.
public enum BusRole: String, Sendable, CaseIterable {
    case router, worker, gateway, `operator`

    public struct Permissions: Sendable, Equatable {
        public var publish: [String]
        public var subscribe: [String]
        /// May answer requests it receives (publish to their reply subjects).
        public var responses: Bool
    }

    /// Where this role's request replies arrive: its own part of `_INBOX`, so no other role can read them.
    public var inboxPrefix: String { "_INBOX.\(rawValue)" }

    public func permissions(_ s: Subjects) -> Permissions {
        let p = s.prefix
        switch self {
        case .router:
            return Permissions(publish: ["\(p).worker.*.offer", "\(p).worker.*.ping", "\(p).worker.*.control", "\(p).call.*.end",
                                         "\(p).call.*.events", "\(p).drains", "\(p).deploy"],
                               subscribe: [s.heartbeat, s.drains, s.deploy, s.route, s.migrate, "\(inboxPrefix).>"], responses: true)
        case .worker:
            return Permissions(publish: [s.heartbeat, "\(p).media.*.out", "\(p).call.*.events", s.migrate],
                               subscribe: ["\(p).worker.*.offer", "\(p).worker.*.ping", "\(p).worker.*.control", "\(p).media.*.in",
                                           "\(p).call.*.end", s.deploy, "\(inboxPrefix).>"], responses: true)
        case .gateway:
            return Permissions(publish: [s.route], subscribe: ["\(inboxPrefix).>"], responses: false)
        case .operator:
            return Permissions(publish: ["_SWITCHBOARD.doctor.>"],
                               subscribe: [s.heartbeat, "\(p).call.*.events", s.drains, s.deploy, "_SWITCHBOARD.doctor.>", "\(inboxPrefix).>"],
                               responses: true)
        }
    }

    /// A caller's media connection: its own call's audio in and out, its end, its events.
    public static func call(_ s: Subjects, _ callID: String) -> Permissions {
        Permissions(publish: [s.mediaIn(call: callID), s.end(call: callID)],
                    subscribe: [s.mediaOut(call: callID), s.events(call: callID)], responses: false)
    }
}
