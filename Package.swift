// swift-tools-version: 6.0
// moe-train: a distributed training emulator. See ../shared/DESIGN.md and README.md.
import PackageDescription

let package = Package(
    name: "moe-train",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "moe-train", targets: ["moe-train"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // System-library shims: the only C the project touches.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Dependencies point down only (each line names every target it imports):
        //   moe-train -> Bench -> Train -> Resilience -> Plan
        //   moe-train -> Projection -> Plan -> {Schedule, Model, Emulation, Formats}
        //   Train -> Parallel -> {Plan, Comm} ; Comm -> Emulation -> Tensor ; Model -> Tensor
        // Schedule, Plan and Projection link no MPI: their unit tests run without it.
        // Formats -> Crypto (swift-crypto): SHA-256 of checkpoint shards, config and parameters.
        .target(name: "Tensor", dependencies: ["CBLAS"]),
        .target(name: "Formats", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "Emulation", dependencies: ["Tensor", "Formats"]),
        .target(name: "Comm", dependencies: ["CMPI", "Emulation"]),
        .target(name: "Model", dependencies: ["Tensor"]),
        .target(name: "Schedule", dependencies: []),
        .target(name: "Plan", dependencies: ["Schedule", "Model", "Emulation", "Formats"]),
        .target(name: "Parallel", dependencies: ["Plan", "Schedule", "Comm", "Model", "Emulation", "Tensor"]),
        .target(name: "Resilience", dependencies: ["Plan", "Formats", "Emulation", "Tensor"]),
        .target(name: "Train", dependencies: ["Resilience", "Parallel", "Plan", "Schedule", "Model", "Comm", "Emulation", "Formats", "Tensor"]),
        .target(name: "Projection", dependencies: ["Plan", "Schedule", "Model", "Emulation", "Formats"]),
        .target(name: "Bench", dependencies: ["Train", "Parallel", "Plan", "Schedule", "Model", "Comm", "Emulation", "Formats", "Tensor"]),
        .executableTarget(name: "moe-train", dependencies: [
            "Bench", "Projection", "Train", "Resilience", "Plan", "Schedule", "Model", "Emulation",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .target(name: "TestSupport", dependencies: ["Model", "Tensor"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats"]),
        .testTarget(name: "EmulationTests", dependencies: ["Emulation", "Tensor"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Tensor", "TestSupport"]),
        .testTarget(name: "ScheduleTests", dependencies: ["Schedule"]),
        .testTarget(name: "PlanTests", dependencies: ["Plan", "Schedule", "Model"]),
        .testTarget(name: "ProjectionTests", dependencies: ["Projection", "Plan"]),
        .testTarget(name: "TrainTests", dependencies: ["Train", "Resilience", "Plan", "Model", "Tensor"]),
        // The typed outputs (summary, step log, events, goodput, job summary, compare rows): round trips.
        .testTarget(name: "OutputsTests", dependencies: ["Formats", "Resilience", "Bench"]),
        .testTarget(name: "IntegrationTests", dependencies: ["TestSupport", "Formats"], exclude: ["Golden"]),
    ],
    // Language mode 5: the ranks are processes, not threads; strict Sendable checking buys nothing here.
    swiftLanguageModes: [.v5]
)
