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
    public var zero = 1                // ZeRO stage: 0 replicates optimizer state, 1 shards it over data parallelism, 2 the gradients too, 3 the parameters too
    public var zeroGroup: Int?         // hybrid sharding: ZeRO shards over groups of this many data-parallel ranks, replicated across groups
    public var schedule = ScheduleKind.oneFOneB
    public var virtualStages = 1       // model chunks per pipeline rank (interleaved)
    /// Activation recomputation (`Recompute`): none, selective (the attention core) or full.
    public var recompute = Recompute.none
    /// How the emulated GPU runs the attention core (`AttentionKernel`): fused (FlashAttention-2) or naive.
    public var attention = AttentionKernel.fused
    /// Sequence parallelism over the tensor-parallel group (`ShardSpec.sequenceParallel`); needs tp > 1.
    public var sequenceParallel = false
    /// Data-parallel gradient reduction in buckets overlapped with the backward (`DataParallel`).
    public var overlapGradReduce = false
    /// ZeRO-1's parameter all-gather in buckets overlapped with the next forward (`DataParallel`).
    public var overlapParamGather = false
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
    public var maxSkippedSteps = 3     // non-finite steps in a row a run survives (skipping each); one more fails it
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
    /// The model the emulated clock charges (`TimingTarget`), or nil: the executed one.
    public var timeAs: TimingTarget? = nil

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
    public var restartCostS = 2.0             // emulated seconds per restart (detection, relaunch; the load is costed apart)
    public var checkpointBandwidth = 2e9      // emulated bytes/s per GPU to storage
    public var checkpointMode = CheckpointMode.sync
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
    public static func dumpFileName(step: Int) -> String { String(format: "step-%06ld.safetensors", step) }

    /// Where checkpoints, the step log, the heartbeat and the event log of this run live.
    public var runDirectory: String { checkpointDir ?? "checkpoints/\(configName)" }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Checks the settings that do not depend on the world size, each against its range.
    public func validate() throws {
        typealias V = Validation
        let maxCount = V.maxCount, maxSteps = 1_000_000_000
        try model.validate()
        try V.require(tp, in: 1...maxCount, "--tp")
        try V.require(pp, in: 1...model.layers, "--pp", note: "at most one stage per layer")
        if let dp { try V.require(dp, in: 1...maxCount, "--dp") }
        try V.require(ep, in: 1...model.experts, "--ep", note: "at most one rank per expert")
        try V.require(zero, in: 0...3, "--zero")
        if let g = zeroGroup {
            try V.require(g, in: 1...maxCount, "--zero-group")
            try V.require(zero >= 1, "--zero-group \(g) needs --zero 1, 2 or 3 (it shards ZeRO's state over groups of data-parallel ranks; --zero 0 shards nothing)")
        }
        try V.require(zero < 2 || schedule != .zbH1,
                      "--zero \(zero) with --schedule zb-h1 is not supported: ZeRO-\(zero) reduces each layer's gradients as its backward completes them, and zb-h1 defers the weight gradients; use 1f1b, gpipe or interleaved")
        try V.require(zero < 2 || !model.tieEmbeddings || virtualStages == 1,
                      "--zero \(zero) with tied embeddings and --virtual-stages \(virtualStages) is not supported: the head's chunk would open the embedding's gradient bucket, which only the first chunk's backward completes; use --virtual-stages 1 or --zero 1")
        try V.require(zero < 3 || !model.tieEmbeddings,
                      "--zero 3 with tied embeddings is not supported: the head would read the embedding's parameters after they were freed; untie them or use --zero 2")
        try V.require(!overlapGradReduce || schedule != .zbH1,
                      "--overlap-grad-reduce with --schedule zb-h1 is not supported: the deferred weight gradients complete a layer's gradients after its backward; use 1f1b, gpipe or interleaved")
        try V.require(!overlapParamGather || zero >= 1,
                      "--overlap-param-gather needs --zero 1, 2 or 3 (it overlaps the all-gather of the parameters; --zero \(zero) has none)")
        try V.require(!sequenceParallel || tp > 1,
                      "--sequence-parallel needs --tp above 1 (it splits each micro-batch's tokens over the tensor-parallel group); --tp is \(tp)")
        try V.require(virtualStages, in: 1...model.layers, "--virtual-stages")
        try V.require(virtualStages == 1 || schedule == .interleaved,
                      "--virtual-stages \(virtualStages) needs --schedule interleaved (\(schedule.rawValue) runs one chunk per rank)")
        if let counts = ppLayers {
            try V.require(counts.count <= 1024 && counts.allSatisfy { (0...model.layers).contains($0) },
                          "--pp-layers \(counts.map(String.init).joined(separator: ",")): each count must be between 0 and --layers \(model.layers)")
        }
        if let g = globalBatch { try V.require(g, in: 1...maxCount, "--global-batch") }
        if let b = microBatchSize { try V.require(b, in: 1...maxCount, "--micro-batch-size") }
        if let m = microBatches { try V.require(m, in: 1...maxCount, "--micro-batches") }
        try V.require(globalBatch != nil || (microBatchSize != nil && microBatches != nil),
                      "set --global-batch, or both --micro-batch-size and --micro-batches")
        try V.require(steps, in: 1...maxSteps, "--steps")
        try V.require(lr, in: 1e-12...10, "--lr")
        try V.require(minLRRatio, in: 0...1, "min_lr_ratio")
        try V.require(warmupSteps, in: 0...maxSteps, "--warmup-steps")
        try V.require(weightDecay, in: 0...100, "--weight-decay")
        try V.require(lr * weightDecay < 1,
                      "--lr \(lr) x --weight-decay \(weightDecay) = \(lr * weightDecay) must be below 1: AdamW's decay would flip the sign of every weight")
        try V.require(beta1, in: 0...0.999999, "beta1")
        try V.require(beta2, in: 0...0.999999, "beta2")
        try V.require(adamEps, in: 1e-30...1, "adam_eps")
        try V.require(gradClip, in: 0...1e12, "--grad-clip", note: "0 meaning no clipping")
        try V.require(maxSkippedSteps, in: 0...maxSteps, "--max-skipped-steps", note: "0 meaning the first non-finite step fails the run")
        try V.require(logEvery, in: 1...maxSteps, "--log-every")
        if let s = dumpStep {
            try V.require(s, in: 1...steps, "--dump-step", note: "a step of the run")
            try V.require(dumpDir != nil, "--dump-step \(s) needs --dump-dir")
        }
        if data == "markov" { try markov.validate() }
        try V.require(clockScale, in: 1e-9...1e9, "--clock-scale")
        try V.require(gpusPerNode, in: 1...maxCount, "--gpus-per-node")
        try V.require(checkpointEvery, in: 0...maxSteps, "--checkpoint-every", note: "0 meaning never")
        try V.require(keepCheckpoints, in: 0...1_000_000, "--keep-checkpoints", note: "0 meaning all")
        try V.require(attempt, in: 1...1_000_000, "--attempt")
        if let s = failAtStep { try V.require(s, in: 1...steps, "--fail-at-step", note: "a step of the run") }
        try V.require(failRank, in: 0...maxCount, "--fail-rank")
        try V.require(slowFactor, in: 1...1e6, "--slow-factor")
        if let h = mtbfHours { try V.require(h, in: 1e-9...1e9, "--mtbf-hours") }
        try V.require(restartCostS, in: 0...1e9, "--restart-cost-s")
        try V.require(checkpointBandwidth, in: 1...1e15, "--checkpoint-bandwidth", note: "bytes/s")
    }
}

/// How the emulated clock advances: `modeled` costs each kernel by the roofline cost model
/// (exactly reproducible), `measured` by the thread CPU time the kernel took here.
public enum ClockChoice: String, Sendable, CaseIterable, Codable { case modeled, measured }

/// Which links communication is costed on: the device profile's, or ideal (free) links.
public enum LinkChoice: String, Sendable, CaseIterable, Codable { case profile, ideal }

/// How a checkpoint reaches storage. `sync`: the step waits until every shard is written.
/// `async` (PyTorch DCP's async save, CheckFreq): the step pays only the snapshot of the
/// shard into host memory (at the device profile's host bandwidth); a background thread
/// persists it while the following steps run, and the manifest is written once every rank's
/// shard is durable, in emulated time too: a failure before that loses the checkpoint.
/// `memory` (Gemini, Wang et al., SOSP 2023): as `async`, and besides each rank keeps its
/// shard in its host's memory and sends a copy to a peer on another host (`HostMemory`), so
/// the checkpoint survives any single host's loss from the moment the copy is made, and a
/// restart loads it at host or network speed instead of storage speed.
public enum CheckpointMode: String, Sendable, CaseIterable, Codable {
    case sync, async, memory
}

/// The failure injected by `--fail-at-step`.

public enum FailMode: String, Sendable, CaseIterable, Codable {
    case crash, hang, slow, nan
    case crashDuringCheckpoint = "crash-during-checkpoint"
    /// The failing rank's first checkpoint shard at or after the failing step cannot be
    /// written: no space left on the device (emulated; the rank exits 5, not retried).
    case diskFull = "disk-full"
    /// The failing rank crashes and its slot stays unusable: it is listed in the run
    /// directory's `lost-slots`, which `supervise --min-np` reads to restart on fewer ranks.
    /// The slot's host is lost with it: under `--checkpoint-mode memory`, its host memory.
    case loseSlot = "lose-slot"
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
        // Every input is at most 2^20 (validated), so these products cannot overflow.
        switch (g, b, m) {
        case let (g?, b?, m?):
            guard g == b * m * dp else {
                throw fail("--global-batch \(g) differs from --micro-batch-size \(b) x --micro-batches \(m) x dp \(dp) = \(b * m * dp)")
            }
            globalBatch = g; microBatchSize = b; microBatches = m
        case let (g?, b?, nil):
            guard g % (b * dp) == 0 else {
                throw fail("--global-batch \(g) is not divisible by --micro-batch-size \(b) x dp \(dp) = \(b * dp)")
            }
            globalBatch = g; microBatchSize = b; microBatches = g / (b * dp)
        case let (g?, nil, m?):
            guard g % (m * dp) == 0 else {
                throw fail("--global-batch \(g) is not divisible by --micro-batches \(m) x dp \(dp) = \(m * dp)")
            }
            globalBatch = g; microBatchSize = g / (m * dp); microBatches = m
        case let (nil, b?, m?):
            globalBatch = b * m * dp; microBatchSize = b; microBatches = m
        case let (g?, nil, nil):
            guard g % dp == 0 else { throw fail("--global-batch \(g) is not divisible by dp \(dp)") }
            globalBatch = g; microBatchSize = 1; microBatches = g / dp
        default:
            throw fail("set --global-batch, or both --micro-batch-size and --micro-batches")
        }
        self.dp = dp
    }
}
