import Logging
/// Metric names, in one place. Labels are low-cardinality: result, reason, state, version, region; never a
/// call id or a tenant id without a cap.
public enum MetricNames {
    // Router
    public static let placements = "switchboard_placements_total"
    public static let placementSeconds = "switchboard_placement_duration_seconds"
    public static let offers = "switchboard_offers_total"
    public static let placementsHeld = "switchboard_placements_held_total"
    public static let resumptionsWaiting = "switchboard_resumptions_waiting"
    public static let workers = "switchboard_workers"
    public static let activeCalls = "switchboard_active_calls"
    public static let freeSlots = "switchboard_free_slots"
    public static let badMessages = "switchboard_bad_messages_total"
    public static let heartbeats = "switchboard_heartbeats_total"
    public static let admissions = "switchboard_admissions_total"
    public static let workerLiveness = "switchboard_worker_liveness_events_total"
    public static let httpRequests = "switchboard_http_requests_total"
    // Worker
    public static let workerCalls = "switchboard_worker_active_calls"
    public static let workerCapacity = "switchboard_worker_capacity"
    public static let callsEnded = "switchboard_calls_ended_total"
    public static let callStartSeconds = "switchboard_call_start_seconds"
    public static let offersAnswered = "switchboard_worker_offers_total"
    public static let mediaPackets = "switchboard_media_packets_total"
    public static let workerCPU = "switchboard_worker_cpu_ratio"
    public static let workerMemory = "switchboard_worker_memory_bytes"
    public static let checkpoints = "switchboard_checkpoints_total"
    public static let workerDraining = "switchboard_worker_draining"
    public static let migrations = "switchboard_migrations_total"
    public static let migrationPauseSeconds = "switchboard_migration_pause_seconds"
    public static let failoverCalls = "switchboard_failover_calls_total"
    /// Call time metered per tenant (by workers as calls run and end, by routers for calls lost with theirs).
    public static let usageCallSeconds = "switchboard_usage_call_seconds_total"
    public static let usageAgentCPUSeconds = "switchboard_usage_agent_cpu_seconds_total"
    public static let spans = "switchboard_trace_spans_total"
    /// Call timeline events, by what became of them.
    public static let timelineEvents = "switchboard_timeline_events_total"
    public static let reconciledWorkers = "switchboard_reconciled_workers_total"
    public static let recordsReasserted = "switchboard_worker_records_reasserted_total"
    public static let recordsRepaired = "switchboard_worker_records_repaired_total"
    public static let deployRevision = "switchboard_deploy_revision"
    public static let operatorRefusals = "switchboard_operator_refusals_total"
    public static let deployChanges = "switchboard_deploy_changes_total"
    public static let placementsByVersion = "switchboard_placements_by_version_total"
    public static let workersByVersion = "switchboard_workers_by_version"
    public static let workerOutdated = "switchboard_worker_outdated"
    public static let ownershipChecks = "switchboard_worker_ownership_checks_total"
    public static let drainRequests = "switchboard_drain_requests_total"
    public static let workerState = "switchboard_worker_state"
    public static let workerFreeSlots = "switchboard_worker_free_slots"
    public static let workerDrainedIdle = "switchboard_worker_drained_idle"
    public static let workerNATSConnected = "switchboard_worker_nats_connected"
    public static let mediaLost = "switchboard_media_packets_lost_total"
    public static let mediaConcealed = "switchboard_media_frames_concealed_total"
    public static let handlerErrors = "switchboard_handler_errors_total"
    // Agents (the worker's bridge to each call's agent)
    public static let agentSessions = "switchboard_agent_sessions_total"
    public static let agentSessionStartSeconds = "switchboard_agent_session_start_seconds"
    public static let agentMessages = "switchboard_agent_messages_total"
    public static let agentAudioDropped = "switchboard_agent_audio_dropped_samples_total"
    public static let agentPoolReady = "switchboard_agent_pool_ready"
    public static let agentProcessesStarted = "switchboard_agent_processes_started_total"
    public static let agentProcessesCrashed = "switchboard_agent_processes_crashed_total"
    public static let agentStartSeconds = "switchboard_agent_process_start_seconds"
    // Autoscaling (routers), by version and region
    public static let workersDesired = "switchboard_workers_desired"
    public static let slotsInUse = "switchboard_slots_in_use"
    public static let slotsCapacity = "switchboard_slots_capacity"

    /// Latency buckets in seconds: 100 µs ... 5 s.
    public static let latencyBuckets: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
}

/// Log metadata keys, in one place: every line about a call carries `call_id`, `tenant` and `worker_id`.
public enum LogKey {
    public static let callID = "call_id"
    public static let tenant = "tenant"
    public static let workerID = "worker_id"
    public static let routerID = "router_id"
    public static let gatewayID = "gateway_id"
    public static let subject = "subject"
    public static let error = "error"
    public static let errorCode = "error_code"
    public static let reason = "reason"
}

extension Logger {
    /// A copy with more metadata.
    public func with(_ metadata: Logger.Metadata) -> Logger {
        var copy = self
        for (key, value) in metadata { copy[metadataKey: key] = value }
        return copy
    }
}
