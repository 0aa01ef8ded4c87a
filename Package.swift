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
    ],
    targets: [
        // System-library shims: the only C the project touches.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Dependencies point down only: moe-train -> Train -> Pipeline -> Parallel -> {Model, Comm -> Emulation} -> Tensor.
        .target(name: "Tensor", dependencies: ["CBLAS"]),
        .target(name: "Emulation", dependencies: ["Tensor"]),
        .target(name: "Comm", dependencies: ["CMPI", "Emulation", "Tensor"]),
        .target(name: "Model", dependencies: ["Tensor"]),
        .target(name: "Parallel", dependencies: ["Comm", "Emulation", "Model", "Tensor"]),
        .target(name: "Pipeline", dependencies: ["Parallel", "Model", "Comm", "Emulation", "Tensor"]),
        .target(name: "Train", dependencies: ["Pipeline", "Parallel", "Model", "Comm", "Emulation", "Tensor"]),
        .executableTarget(name: "moe-train", dependencies: [
            "Train",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .target(name: "TestSupport", dependencies: ["Model", "Tensor"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"]),
        .testTarget(name: "EmulationTests", dependencies: ["Emulation", "Tensor"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Tensor", "TestSupport"]),
        .testTarget(name: "ParallelTests", dependencies: ["Parallel", "Model"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline"]),
        .testTarget(name: "TrainTests", dependencies: ["Train", "Model", "Tensor"]),
        .testTarget(name: "IntegrationTests", dependencies: ["TestSupport"]),
    ],
    // Language mode 5: the ranks are processes, not threads; strict Sendable checking buys nothing here.
    swiftLanguageModes: [.v5]
)
