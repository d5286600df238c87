// swift-tools-version:6.0
// Concord: distributed locks (Raft), a partitioned queue and a MESI near cache over one Redis.
import PackageDescription

let package = Package(
    name: "concord",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "concord", targets: ["concord"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
    ],
    targets: [
        // C libraries: system library targets over local shim headers (DESIGN §6).
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibevent", pkgConfig: "libevent", providers: [.apt(["libevent-dev"])]),

        // Pure cores: no clocks, sockets, files or C.
        .target(name: "Raft"),
        .target(name: "Locks"),
        .target(name: "Placement"),
        .target(name: "Cache"),

        // Runtime: the only layer touching libevent and hiredis.
        .target(name: "Runtime", dependencies: [
            "CHiredis", "CLibevent",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .target(name: "Node", dependencies: [
            "Runtime", "Raft", "Locks", "Placement", "Cache", "CLibevent",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Metrics", package: "swift-metrics"),
        ]),
        .executableTarget(name: "concord", dependencies: [
            "Node", "Runtime", "Raft",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),

        .testTarget(name: "RaftTests", dependencies: ["Raft"]),
        .testTarget(name: "LocksTests", dependencies: ["Locks"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement"]),
        .testTarget(name: "CacheTests", dependencies: ["Cache"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime"]),
        .testTarget(name: "QueueScriptTests", dependencies: ["Runtime", "Node"]),
        // Real redis-server and real `concord` processes; depends on the executable so it is built.
        .testTarget(name: "IntegrationTests", dependencies: ["Runtime", "concord"]),
    ]
)
