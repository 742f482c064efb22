/// Who may say what on the bus: each role's NATS permissions, from the cluster's subjects. Routers, workers,
/// gateways (the media bridges that ask for routes) and operators each get a credential with exactly these;
/// a caller's media connection gets one call's subjects only (`call`). See docs/security.md.
///
/// Workers and gateways are members: a credential for one member (`member`: its id) reaches only its own
/// subjects (a worker its heartbeats, offers, orders, its calls' audio and ends; a gateway its own inbox). A
/// role-wide credential (`member` nil) reaches every member's, as one shared credential must.
public enum BusRole: String, Sendable, CaseIterable {
    case router, worker, gateway, `operator`

    public struct Permissions: Sendable, Equatable {
        public var publish: [String]
        public var subscribe: [String]
        /// May answer requests it receives (publish to their reply subjects).
        public var responses: Bool
    }

    /// Whether a credential of this role is for one member (workers, gateways) rather than shared (routers,
    /// operators: any router may answer any route or move).
    public var hasMembers: Bool { self == .worker || self == .gateway }

    /// Where this role's (member's) request replies arrive: its own part of `_INBOX`, so no other role (member)
    /// can read them.
    public func inboxPrefix(member: String? = nil) -> String {
        guard hasMembers, let member else { return "_INBOX.\(rawValue)" }
        return "_INBOX.\(rawValue).\(member)"
    }

    public func permissions(_ s: Subjects, member: String? = nil) -> Permissions {
        let p = s.prefix, any = Subjects.anyWorker
        let inbox = inboxPrefix(member: member) + ".>"  // a shared credential: the whole role's inbox
        switch self {
        case .router:
            return Permissions(publish: [s.offer(worker: any), s.ping(worker: any), s.control(worker: any), s.end(worker: any, call: any),
                                         s.events(worker: any, call: any), s.drains, s.deploy, s.resumptions],
                               subscribe: [s.heartbeats, s.drains, s.deploy, s.resumptions, s.route, s.migrates, inbox], responses: true)
        case .worker:
            let w = member ?? any
            return Permissions(publish: [s.heartbeat(worker: w), s.migrate(worker: w), s.mediaOut(worker: w, call: any),
                                         s.events(worker: w, call: any)],
                               subscribe: ["\(p).worker.\(w).>", s.mediaIn(worker: w, call: any), s.end(worker: w, call: any), s.deploy, inbox],
                               responses: true)
        case .gateway:
            return Permissions(publish: [s.route], subscribe: [inbox], responses: false)
        case .operator:
            return Permissions(publish: ["_SWITCHBOARD.doctor.>"],
                               subscribe: [s.heartbeats, s.events(worker: any, call: any), s.drains, s.deploy, "_SWITCHBOARD.doctor.>", inbox],
                               responses: true)
        }
    }

    /// A caller's media connection: its own call's audio in and out, its end and its events, on whichever worker
    /// holds the call (so the credential outlives a move).
    public static func call(_ s: Subjects, _ callID: String) -> Permissions {
        let any = Subjects.anyWorker
        return Permissions(publish: [s.mediaIn(worker: any, call: callID), s.end(worker: any, call: callID)],
                           subscribe: [s.mediaOut(worker: any, call: callID), s.events(worker: any, call: callID)], responses: false)
    }
}
