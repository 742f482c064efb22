import SwitchboardCore
import Testing

@Suite struct WorkerProbeTests {
    func inputs(_ state: WorkerState = .ready, started: Bool = true, connected: Bool = true, closed: Bool = false,
                since: Duration = .seconds(1)) -> WorkerProbe.Inputs {
        WorkerProbe.Inputs(state: state, calls: 3, capacity: 10, started: started, natsConnected: connected,
                           natsClosed: closed, sinceHeartbeat: since)
    }

    @Test func readinessFollowsWhetherTheWorkerTakesNewCalls() {
        #expect(WorkerProbe.readiness(inputs()).ok)
        #expect(WorkerProbe.readiness(inputs(started: false)).reason == "starting")
        #expect(WorkerProbe.readiness(inputs(.draining)).reason == "draining")
        #expect(WorkerProbe.readiness(inputs(.outdated)).reason == "outdated")
        #expect(WorkerProbe.readiness(inputs(.stopping)).reason == "stopping")
        #expect(WorkerProbe.readiness(inputs(connected: false)).reason == "nats_disconnected")
        // Draining outranks a lost connection: the reason an operator acts on.
        #expect(WorkerProbe.readiness(inputs(.draining, connected: false)).reason == "draining")
        #expect(WorkerProbe.readiness(inputs(.draining)).status == "not_ready")
    }

    @Test func livenessHoldsWhileDrainingOrCutOffAndFailsOnlyWhenTheProcessIsWedged() {
        let limit = Duration.seconds(30)
        for state in WorkerState.allCases {
            #expect(WorkerProbe.liveness(inputs(state), limit: limit).ok, "\(state)")
        }
        #expect(WorkerProbe.liveness(inputs(connected: false, since: .seconds(29)), limit: limit).ok)
        #expect(WorkerProbe.liveness(inputs(started: false), limit: limit).ok)
        #expect(WorkerProbe.liveness(inputs(since: .seconds(31)), limit: limit).reason == "stalled")
        #expect(WorkerProbe.liveness(inputs(closed: true), limit: limit).reason == "nats_closed")
        #expect(WorkerProbe.liveness(inputs(closed: true), limit: limit).status == "unhealthy")
    }
}
