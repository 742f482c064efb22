// swift-tools-version: 6.2
import PackageDescription

// Modules show the architecture (docs/architecture.md):
//   C* ............... one system-library module per C library, nothing else
//   SwitchboardCore .. pure logic and shared types; imports no NATS, Redis, Opus or HTTP
//   SwitchboardNATS / SwitchboardRedis .. one safe async wrapper per C library
//   SwitchboardOpus .. the audio kit: Opus (libopus), resampling (libspeexdsp), mu-law
//   switchboard ...... the one executable operators run
let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .executable(name: "switchboard-bench", targets: ["switchboard-bench"]),
        .library(name: "SwitchboardNATS", targets: ["SwitchboardNATS"]),
        .library(name: "SwitchboardRedis", targets: ["SwitchboardRedis"]),
        .library(name: "SwitchboardOpus", targets: ["SwitchboardOpus"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        // Already built for Hummingbird; the worker's WebSocket client to agents uses it directly.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // The gateway's WebSocket server (Twilio Media Streams, browsers) on Hummingbird's own HTTP server.
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.0"),
    ],
    targets: [
        .systemLibrary(name: "CNATS", providers: [.apt(["libnats-dev"])]),
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CCrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "COpus", providers: [.apt(["libopus-dev"])]),
        .systemLibrary(name: "CSpeexDSP", providers: [.apt(["libspeexdsp-dev"])]),

        // Optimized even in debug builds: the balance simulator runs hours of simulated fleet in the tests, and
        // unoptimized it would hold both cores for most of the test run.
        .target(name: "SwitchboardCore", swiftSettings: [.unsafeFlags(["-O"])]),
        .target(
            name: "SwitchboardNATS",
            dependencies: ["CNATS", "CCrypto", "SwitchboardCore", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "SwitchboardRedis",
            dependencies: ["CHiredis", "CCrypto", "SwitchboardCore", "SwitchboardObservability", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "SwitchboardOpus", dependencies: ["COpus", "CSpeexDSP", "SwitchboardCore"]),
        .target(name: "SwitchboardObservability", dependencies: [.product(name: "Logging", package: "swift-log")]),
        // What the routers' and gateways' HTTP servers share (bodies with a size limit, errors as JSON).
        .target(name: "SwitchboardHTTP", dependencies: ["SwitchboardCore", "SwitchboardObservability", .product(name: "Hummingbird", package: "hummingbird")]),

        // Shells: the worker and the router, around the pure core.
        .target(
            name: "SwitchboardWorker",
            dependencies: [
                "SwitchboardCore", "SwitchboardNATS", "SwitchboardRedis", "SwitchboardOpus", "SwitchboardObservability",
                "CSwitchboardSys",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .target(
            name: "SwitchboardRouter",
            dependencies: [
                "SwitchboardCore", "SwitchboardNATS", "SwitchboardRedis", "SwitchboardObservability", "SwitchboardHTTP",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),

        .target(
            name: "SwitchboardGateway",
            dependencies: [
                "SwitchboardCore", "SwitchboardNATS", "SwitchboardRedis", "SwitchboardOpus", "SwitchboardObservability", "SwitchboardHTTP",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),

        .target(name: "CSwitchboardSys"),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardCore", "SwitchboardNATS", "SwitchboardRedis", "SwitchboardOpus", "SwitchboardLocal",
                "SwitchboardRouter", "SwitchboardWorker", "SwitchboardGateway", "SwitchboardObservability", "CSwitchboardSys",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The C baseline the benchmark measures our wrappers against, in the same run.
        .target(
            name: "CBenchBaseline",
            dependencies: ["CNATS", "CHiredis"],
            linkerSettings: [.linkedLibrary("nats"), .linkedLibrary("hiredis")]
        ),
        .executableTarget(
            name: "switchboard-bench",
            dependencies: [
                "SwitchboardCore", "SwitchboardNATS", "SwitchboardRedis", "SwitchboardOpus", "SwitchboardLocal", "CBenchBaseline",
                "SwitchboardRouter", "SwitchboardWorker", "SwitchboardObservability", "SwitchboardGateway",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Starts and stops real nats-server / redis-server processes (tests, benchmark, local cluster).
        .target(name: "SwitchboardLocal"),
        .target(name: "SwitchboardTestSupport",
                dependencies: ["SwitchboardLocal", "SwitchboardCore", "SwitchboardRedis", .product(name: "Logging", package: "swift-log")],
                path: "Tests/Support"),
        .testTarget(name: "SwitchboardCoreTests", dependencies: ["SwitchboardCore"]),
        .testTarget(name: "SwitchboardNATSTests", dependencies: ["SwitchboardNATS", "SwitchboardTestSupport"]),
        .testTarget(name: "SwitchboardRedisTests", dependencies: ["SwitchboardRedis", "SwitchboardObservability", "SwitchboardTestSupport"]),
        .testTarget(name: "SwitchboardOpusTests", dependencies: ["SwitchboardOpus"]),
        // The HTTP layer through Hummingbird's router, without a server (requests on an embedded channel).
        .testTarget(name: "SwitchboardHTTPTests", dependencies: [
            "SwitchboardHTTP", "SwitchboardObservability",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        // Every decoder of outside bytes under 100,000 hostile inputs each; scripts/test runs it on its own first.
        .testTarget(name: "SwitchboardFuzzTests", dependencies: ["SwitchboardCore", "SwitchboardRedis", "SwitchboardRouter"],
                    swiftSettings: [.unsafeFlags(["-O"])]),
        .testTarget(
            name: "SwitchboardClusterTests",
            dependencies: [
                "SwitchboardRouter", "SwitchboardWorker", "SwitchboardGateway", "SwitchboardOpus", "SwitchboardTestSupport",
                "SwitchboardObservability",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
