import Foundation
import Emulation
import Model
import Schedule

/// Everything a training run is configured by: the model, the layout, the batch, the
/// optimizer and the data. Loaded from a JSON file (snake_case keys, all optional) and
/// then overridden by command-line flags.
public struct RunConfig: Equatable, Sendable {
    public var model = ModelConfig()

    // Layout
    public var tp = 1
    public var pp = 1
    public var dp: Int? = nil          // derived from the world size when nil
    public var ep = 1
    public var zero = 1                // ZeRO stage: 1 shards optimizer state over data parallelism, 0 replicates it
    public var schedule = ScheduleKind.oneFOneB
    public var virtualStages = 1       // model chunks per pipeline rank (interleaved)
    public var ppLayers: [Int]? = nil  // layers per (virtual) stage; nil: balanced by estimated cost

    // Batch: any two of the three determine the third (see `BatchPlan`).
    public var globalBatch: Int? = 8   // sequences per optimizer step, over all data-parallel ranks
    public var microBatchSize: Int? = 4
    public var microBatches: Int? = nil

    // Optimisation
    public var steps = 100
    public var lr = 3e-3
    public var minLRRatio = 0.1        // cosine decays to lr * ratio
    public var warmupSteps = 10
    public var weightDecay = 0.1
    public var beta1 = 0.9
    public var beta2 = 0.95
    public var adamEps = 1e-8
    public var gradClip = 1.0          // 0 disables clipping
    public var seed: UInt64 = 1234

    // Data
    public var data = "markov"         // "markov" (embedded synthetic source) or a text file path
    public var markov = MarkovSpec()

    // Emulated device
    public var device = "a100-40gb"    // a profile name under configs/devices/, or a JSON file path
    public var clock = ClockChoice.modeled
    public var clockScale = 1.0        // measured mode: emulated seconds per CPU second
    public var gpusPerNode = 8
    public var link = LinkChoice.profile
    public var precision = Precision.bf16
    public var ignoreOOM = false

    // Checkpoints, restarts and faults
    public var checkpointDir: String? = nil   // default checkpoints/<config name>
    public var checkpointEvery = 0            // steps; 0 = never
    public var keepCheckpoints = 0            // 0 = keep all
    public var resume = "auto"                // auto, never, or a step directory
    public var attempt = 1                    // which attempt of a supervised job this is (set by the supervisor)
    public var failAtStep: Int? = nil
    public var failRank = 0
    public var failMode = FailMode.crash
    public var slowFactor = 4.0
    public var mtbfHours: Double? = nil       // per emulated GPU, in emulated time
    public var restartCostS = 2.0             // emulated seconds per restart (detection, relaunch, load)
    public var checkpointBandwidth = 2e9      // emulated bytes/s per GPU to storage
    public var configName = "default"         // the config file's name, for the default checkpoint directory

    // Output
    public var logEvery = 10
    public var trace: String? = nil
    public var traceWall = false
    public var summaryJSON: String? = nil
    public var dumpStep: Int? = nil
    public var dumpDir: String? = nil

    public init() {}

    /// The file `--dump-step N` writes under `--dump-dir`.
    public static func dumpFileName(step: Int) -> String { String(format: "step-%06d.safetensors", step) }

    /// Where checkpoints, the step log, the heartbeat and the event log of this run live.
    public var runDirectory: String { checkpointDir ?? "checkpoints/\(configName)" }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Checks the settings that do not depend on the world size.
    public func validate() throws {
        func need(_ ok: Bool, _ msg: String) throws { if !ok { throw ConfigError(msg) } }
        try model.validate()
        try need(steps >= 1, "--steps must be at least 1 (got \(steps))")
        try need(lr > 0 && lr.isFinite, "--lr must be a positive number (got \(lr))")
        try need(minLRRatio >= 0 && minLRRatio <= 1, "min_lr_ratio must be in [0, 1] (got \(minLRRatio))")
        try need(warmupSteps >= 0, "--warmup-steps must be >= 0 (got \(warmupSteps))")
        try need(weightDecay >= 0, "--weight-decay must be >= 0 (got \(weightDecay))")
        try need(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "Adam betas must be in [0, 1)")
        try need(adamEps > 0, "adam_eps must be positive")
        try need(gradClip >= 0, "--grad-clip must be >= 0, 0 meaning no clipping (got \(gradClip))")
        try need(zero == 0 || zero == 1, "--zero must be 0 or 1 (got \(zero))")
        try need(virtualStages >= 1, "--virtual-stages must be at least 1 (got \(virtualStages))")
        try need(virtualStages == 1 || schedule == .interleaved,
                 "--virtual-stages \(virtualStages) needs --schedule interleaved (\(schedule) runs one chunk per rank)")
        try need(logEvery >= 1, "--log-every must be at least 1 (got \(logEvery))")
        if let g = globalBatch { try need(g >= 1, "--global-batch must be at least 1 (got \(g))") }
        if let b = microBatchSize { try need(b >= 1, "--micro-batch-size must be at least 1 (got \(b))") }
        if let m = microBatches { try need(m >= 1, "--micro-batches must be at least 1 (got \(m))") }
        try need(globalBatch != nil || (microBatchSize != nil && microBatches != nil),
                 "set --global-batch, or both --micro-batch-size and --micro-batches")
        if let s = dumpStep {
            try need(s >= 1 && s <= steps, "--dump-step must be between 1 and --steps \(steps) (got \(s))")
            try need(dumpDir != nil, "--dump-step needs --dump-dir")
        }
        if data == "markov" { try markov.validate() }
        try need(clockScale > 0 && clockScale.isFinite, "--clock-scale must be positive (got \(clockScale))")
        try need(gpusPerNode >= 1, "--gpus-per-node must be at least 1 (got \(gpusPerNode))")
        try need(checkpointEvery >= 0, "--checkpoint-every must be >= 0, 0 meaning never (got \(checkpointEvery))")
        try need(keepCheckpoints >= 0, "--keep-checkpoints must be >= 0, 0 meaning all (got \(keepCheckpoints))")
        try need(attempt >= 1, "--attempt must be at least 1 (got \(attempt))")
        if let s = failAtStep { try need(s >= 1 && s <= steps, "--fail-at-step must be between 1 and --steps \(steps) (got \(s))") }
        try need(failRank >= 0, "--fail-rank must be >= 0 (got \(failRank))")
        try need(slowFactor >= 1, "--slow-factor must be >= 1 (got \(slowFactor))")
        if let h = mtbfHours { try need(h > 0, "--mtbf-hours must be positive (got \(h))") }
        try need(restartCostS >= 0, "--restart-cost-s must be >= 0 (got \(restartCostS))")
        try need(checkpointBandwidth > 0, "checkpoint_bandwidth must be positive (got \(checkpointBandwidth))")
    }
}

/// How the emulated clock advances: `modeled` costs each kernel by the roofline cost model
/// (exactly reproducible), `measured` by the thread CPU time the kernel took here.
public enum ClockChoice: String, Sendable, CaseIterable, Codable { case modeled, measured }

/// Which links communication is costed on: the device profile's, or ideal (free) links.
public enum LinkChoice: String, Sendable, CaseIterable, Codable { case profile, ideal }

/// The failure injected by `--fail-at-step`.
public enum FailMode: String, Sendable, CaseIterable, Codable {
    case crash, hang, slow, nan
    case crashDuringCheckpoint = "crash-during-checkpoint"
}

/// The embedded synthetic data source: an order-k Markov chain over a small alphabet.
public struct MarkovSpec: Equatable, Sendable {
    public var order = 2
    public var alphabet = 12
    public var branching = 3
    public var seed: UInt64 = 7

    public init() {}

    func validate() throws {
        guard order >= 1 && order <= 4 else { throw RunConfig.ConfigError("markov_order must be between 1 and 4 (got \(order))") }
        guard alphabet >= 2 && alphabet <= 64 else { throw RunConfig.ConfigError("markov_alphabet must be between 2 and 64 (got \(alphabet))") }
        guard branching >= 1 && branching <= alphabet else {
            throw RunConfig.ConfigError("markov_branching must be between 1 and the alphabet size \(alphabet) (got \(branching))")
        }
        var contexts = 1
        for _ in 0..<order { contexts *= alphabet }
        guard contexts <= 65536 else {
            throw RunConfig.ConfigError("markov_alphabet \(alphabet) ^ markov_order \(order) = \(contexts) contexts; at most 65536 are supported")
        }
    }
}

/// How the global batch is cut: each data-parallel rank runs `microBatches` micro-batches of
/// `microBatchSize` sequences per step; sequence `i` of the step's global batch goes to
/// data-parallel rank i / (global / dp). The global batch never depends on the layout.
public struct BatchPlan: Equatable, Sendable {
    public let globalBatch: Int
    public let microBatchSize: Int
    public let microBatches: Int
    public let dp: Int

    public var perRank: Int { microBatchSize * microBatches }

    public init(globalBatch g: Int?, microBatchSize b: Int?, microBatches m: Int?, dp: Int) throws {
        func fail(_ s: String) -> RunConfig.ConfigError { RunConfig.ConfigError(s) }
        switch (g, b, m) {
        case let (g?, b?, m?):
            guard g == b * m * dp else {
                throw fail("--global-batch \(g) differs from micro-batch-size \(b) x micro-batches \(m) x dp \(dp) = \(b * m * dp)")
            }
            globalBatch = g; microBatchSize = b; microBatches = m
        case let (g?, b?, nil):
            guard g % (b * dp) == 0 else {
                throw fail("global batch \(g) is not divisible by micro-batch-size \(b) x dp \(dp) = \(b * dp)")
            }
            globalBatch = g; microBatchSize = b; microBatches = g / (b * dp)
        case let (g?, nil, m?):
            guard g % (m * dp) == 0 else {
                throw fail("global batch \(g) is not divisible by micro-batches \(m) x dp \(dp) = \(m * dp)")
            }
            globalBatch = g; microBatchSize = g / (m * dp); microBatches = m
        case let (nil, b?, m?):
            globalBatch = b * m * dp; microBatchSize = b; microBatches = m
        case let (g?, nil, nil):
            guard g % dp == 0 else { throw fail("global batch \(g) is not divisible by dp \(dp)") }
            globalBatch = g; microBatchSize = 1; microBatches = g / dp
        default:
            throw fail("set --global-batch, or both --micro-batch-size and --micro-batches")
        }
        self.dp = dp
    }
}
