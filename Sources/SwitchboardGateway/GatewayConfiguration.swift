import SwitchboardCore

/// What a gateway is told at start (docs/gateway.md lists the flags).
public struct GatewayConfiguration: Sendable {
    public var id: String
    public var subjects: Subjects
    /// The address callers and Twilio use (`https://gw.example.com`): the TwiML's stream URL is its `wss://`
    /// form, and Twilio's signatures are checked against it. Nil: `http://` and the request's Host header.
    public var publicURL: String?
    /// The Twilio account's auth token: webhooks are refused without it.
    public var twilioAuthToken: String?
    /// Tenant -> API key the gateway routes that tenant's calls with (and checks call-token requests against).
    public var tenantKeys: [String: String] = [:]
    /// Twilio number (E.164, the webhook's `To`) -> tenant.
    public var numbers: [String: String] = [:]
    /// Signs stream and call tokens; replicas behind one load balancer share it.
    public var tokenSecret: [UInt8]
    /// How long the TwiML's stream URL may be used, and a browser's call token.
    public var streamTokenTTL: Duration = .seconds(60)
    public var callTokenTTL: Duration = .seconds(300)
    /// Live legs at most; beyond, new streams are refused.
    public var maxLegs = 500
    /// After SIGTERM: how long live legs may go on before their calls are ended.
    public var drainDeadline: Duration = .seconds(3600)
    /// Passed in route requests (locality preferred): callers are placed near the gateway.
    public var region: String?
    public var zone: String?
    public var routeTimeout: Duration = .seconds(5)
    /// Frames queued toward one caller at most (20 ms each); a frame beyond is dropped.
    public var maxQueuedFrames = 50
    /// A caller whose queue stays full this long with its socket taking no write is closed as a slow reader (a full
    /// queue whose socket still takes writes is the gateway behind, not the caller: frames are dropped instead).
    public var slowReaderPatience: Duration = .seconds(5)
    /// Each caller socket's kernel send buffer (bytes; Linux doubles it): with `maxQueuedFrames`, what a caller
    /// that stops reading can hold up before it is closed (64 KiB: about four seconds of a Twilio stream).
    public var socketSendBuffer = 64 * 1024
    /// Redis keys of the cluster, and calls' timelines there (when the gateway is given Redis).
    public var keys: RedisKeys
    public var timelineRetention: Duration = .seconds(7 * 86_400)
    public var timelineCap = 2_000
    /// Recordings of the calls whose placement says so (their tenant's choice); nil: none.
    public var recording: RecordingOptions?
    /// Where Unix time comes from: stream and call tokens, and each leg's media clock (deadlines and waits use
    /// `ContinuousClock`). A test may give a fixed one.
    public var wallClock: WallClock = .system

    public init(id: String, subjects: Subjects = .default, keys: RedisKeys = .default, tokenSecret: [UInt8]) {
        self.id = id
        self.subjects = subjects
        self.keys = keys
        self.tokenSecret = tokenSecret
    }
}

/// The gateway's metric names (docs/gateway.md).
enum GatewayMetrics {
    static let legs = "switchboard_gateway_legs"
    static let legsTotal = "switchboard_gateway_legs_total"
    static let refusals = "switchboard_gateway_refusals_total"
    static let transcodeSeconds = "switchboard_gateway_transcode_seconds"
    static let jitterSeconds = "switchboard_gateway_jitter_seconds"
    static let concealed = "switchboard_gateway_concealed_frames_total"
    static let lost = "switchboard_gateway_lost_packets_total"
    static let queueDropped = "switchboard_gateway_queue_dropped_frames_total"
    static let dropped = "switchboard_gateway_dropped_frames_total"
    static let webhooks = "switchboard_gateway_webhooks_total"
    static let recordings = "switchboard_gateway_recordings_total"
    static let recordingBytes = "switchboard_gateway_recording_bytes_total"
    static let recordingsLive = "switchboard_gateway_recordings"
    static let recordingsSwept = "switchboard_gateway_recordings_swept_total"
    static let transcodeBuckets = [0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005]
    static let jitterBuckets = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
}
