import Plan
import Emulation
import Schedule
import Model
import ArgumentParser
import Foundation
import Train

/// `moe-train [train]`: flags override the config file, which overrides the built-in defaults.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train the model (the default subcommand)."
    )

    @Option(help: "JSON config file (snake_case keys; flags override it). Default: configs/default.json.") var config: String?

    // Layout
    @Option(help: "Tensor-parallel ranks.") var tp: Int?
    @Option(help: "Pipeline stages.") var pp: Int?
    @Option(help: "Data-parallel ranks (derived from the world size; given, it must match).") var dp: Int?
    @Option(help: "Expert-parallel ranks (divides tp*dp and the expert count).") var ep: Int?
    @Option(help: "ZeRO stage: 0 keeps Adam state whole, 1 shards it over data-parallel ranks, 2 shards the gradients too (each layer's reduced as its backward completes it), 3 the parameters too (each layer's gathered before its forward and backward).") var zero: Int?
    @Option(name: .customLong("zero-group"), help: "Hybrid sharding (HSDP): ZeRO shards over groups of this many consecutive data-parallel ranks, each group a replica of the others, the gradients all-reduced across groups (default: every data-parallel rank, one group).") var zeroGroup: Int?
    @Option(help: "Pipeline schedule: gpipe, 1f1b, interleaved or zb-h1.") var schedule: ScheduleKind?
    @Option(name: .customLong("virtual-stages"), help: "Model chunks per pipeline rank (interleaved schedule).") var virtualStages: Int?
    @Option(help: "Activation recomputation: none, selective (the attention core's probabilities are recomputed in the backward) or full (each layer keeps only its input and reruns its forward before its backward).") var recompute: Recompute?
    @Option(help: "How the emulated GPU runs attention: fused (FlashAttention-2: the probabilities never reach HBM; the default) or naive (score GEMM, softmax and PV as separate kernels, the probabilities kept). The numbers are the same.") var attention: AttentionKernel?
    @Flag(name: .customLong("sequence-parallel"), inversion: .prefixedNo, help: "Sequence parallelism (needs --tp above 1): norms, residuals and the activations between layers and stages split over the tensor-parallel group by tokens; all-gather before and reduce-scatter after each tensor-parallel region instead of one all-reduce. The numbers are the same.") var sequenceParallel: Bool?
    @Flag(name: .customLong("overlap-grad-reduce"), inversion: .prefixedNo, help: "Reduce data-parallel gradients in buckets (one per layer) on the communication stream while the backward goes on, as Megatron-LM's overlap_grad_reduce (under --zero 2: each micro-batch's buckets overlap the rest of its backward). The numbers are the same up to summation order.") var overlapGradReduce: Bool?
    @Flag(name: .customLong("overlap-param-gather"), inversion: .prefixedNo, help: "Start ZeRO-1's all-gather of the updated parameters bucket by bucket after the optimizer and let the next forward wait for each layer's bucket only when it needs it, as Megatron-LM's overlap_param_gather (needs --zero 1, 2 or 3; under --zero 3 each layer's gather starts while the layer before it computes, as FSDP's prefetch). The numbers are the same.") var overlapParamGather: Bool?
    @Option(name: .customLong("pp-layers"), help: "Layers per pipeline stage (per virtual stage with --virtual-stages: pp x v numbers), e.g. 1,3,3,1 (default: balanced by estimated cost).") var ppLayers: String?

    // Model
    @Option(help: "Experts per MoE layer.") var experts: Int?
    @Option(name: .customLong("top-k"), help: "Experts chosen per token.") var topK: Int?
    @Option(help: "Transformer layers.") var layers: Int?
    @Option(name: .customLong("d-model"), help: "Model width.") var dModel: Int?
    @Option(help: "Query heads.") var heads: Int?
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (1 = multi-query attention).") var kvHeads: Int?
    @Option(name: .customLong("ffn-hidden"), help: "Hidden size of each expert / dense FFN.") var ffnHidden: Int?
    @Option(help: "MLP of dense layers and experts: gelu (two matrices) or swiglu (three: gate, up, down).") var ffn: FFNKind?
    @Option(name: .customLong("moe-every"), help: "Every n-th layer is MoE (1 = all, 0 = none).") var moeEvery: Int?
    @Option(name: .customLong("capacity-factor"), help: "Expert capacity factor per sequence (0 = unlimited).") var capacityFactor: Double?
    @Option(name: .customLong("aux-loss-coef"), help: "Load-balancing loss coefficient.") var auxLossCoef: Double?
    @Option(name: .customLong("z-loss-coef"), help: "Router z-loss coefficient.") var zLossCoef: Double?
    @Option(name: .customLong("router-init-scale"), help: "Scale of the router's initial weights (large = peaked, imbalanced routing).") var routerInitScale: Double?
    @Option(name: .customLong("seq-len"), help: "Tokens per sequence.") var seqLen: Int?

    // Batch and optimisation
    @Option(name: .customLong("global-batch"), help: "Sequences per optimizer step (all data-parallel ranks).") var globalBatch: Int?
    @Option(name: .customLong("micro-batch-size"), help: "Sequences per micro-batch.") var microBatchSize: Int?
    @Option(name: .customLong("micro-batches"), help: "Micro-batches per step per data-parallel rank.") var microBatches: Int?
    @Option(help: "Optimizer steps.") var steps: Int?
    @Option(help: "Peak learning rate.") var lr: Double?
    @Option(name: .customLong("warmup-steps"), help: "Linear warm-up steps.") var warmupSteps: Int?
    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay.") var weightDecay: Double?
    @Option(name: .customLong("grad-clip"), help: "Global gradient-norm clip (0 = off).") var gradClip: Double?
    @Option(name: .customLong("max-skipped-steps"), help: "Consecutive steps with a non-finite loss or gradient norm that are skipped; one more fails the run with status 6 (supervise restarts it from the last checkpoint).") var maxSkippedSteps: Int?
    @Option(help: "Seed for initialisation and data order.") var seed: UInt64?

    // Emulated device
    @Option(help: "GPU to emulate: a name under configs/devices/ (a100-40gb, a100-80gb, h100-sxm) or a JSON file.") var device: String?
    @Option(help: "Emulated clock: modeled (roofline cost model, reproducible) or measured (thread CPU time).") var clock: ClockChoice?
    @Option(name: .customLong("clock-scale"), help: "Measured clock: emulated seconds per CPU second.") var clockScale: Double?
    @Option(name: .customLong("gpus-per-node"), help: "Ranks per node: pairs inside a node use NVLink, others the fabric.") var gpusPerNode: Int?
    @Option(help: "Links: profile (the device's) or ideal (communication costs nothing).") var link: LinkChoice?
    @Option(help: "Emulated precision: bf16 (mixed, 16 bytes per parameter with Adam) or fp32.") var precision: Precision?
    @Flag(name: .customLong("ignore-oom"), help: "Run even when the memory model says a rank does not fit.") var ignoreOOM = false
    @Option(name: .customLong("time-as"), help: "Time the run as a model of other dimensions: a JSON file of d_model, ffn_hidden, heads, kv_heads, seq_len, micro_batch_size, vocab (absent keys keep the executed value), or none. The numbers run at the executed sizes; the emulated clock, MFU, HFU and memory are the timed model's, with the executed routing scaled to its expert GEMMs.") var timeAs: String?

    // Data and output
    @Option(help: "\"markov\" (embedded synthetic data) or a text file path.") var data: String?
    @Option(name: .customLong("summary-json"), help: "Write the run's summary JSON here.") var summaryJSON: String?
    @Option(name: .customLong("log-every"), help: "Log every n steps.") var logEvery: Int?
    @Option(name: .customLong("dump-step"), help: "Dump parameters and gradients of this step.") var dumpStep: Int?
    @Option(name: .customLong("dump-dir"), help: "Directory for --dump-step.") var dumpDir: String?
    @Option(help: "Write a Chrome trace (Perfetto, chrome://tracing) of every rank's emulated time here.") var trace: String?

    // Checkpoints, restarts, faults
    @Option(name: .customLong("checkpoint-dir"), help: "Run directory for checkpoints and logs (default checkpoints/<config name>).") var checkpointDir: String?
    @Option(name: .customLong("checkpoint-every"), help: "Save a sharded checkpoint every K steps (0 = never).") var checkpointEvery: Int?
    @Option(name: .customLong("keep-checkpoints"), help: "Keep the newest N complete checkpoints (0 = all).") var keepCheckpoints: Int?
    @Option(help: "auto (the newest valid checkpoint of the run directory, when the run checkpoints or names --checkpoint-dir), never, or a step directory.") var resume: String?
    @Option(help: "Attempt number of a supervised job (the supervisor sets it).") var attempt: Int?
    @Option(name: .customLong("fail-at-step"), help: "Inject a failure at this step (first attempt only).") var failAtStep: Int?
    @Option(name: .customLong("fail-rank"), help: "The rank that fails.") var failRank: Int?
    @Option(name: .customLong("checkpoint-mode"), help: "sync (the step waits for storage), async (the step pays the snapshot to host memory; the shard is persisted while training goes on, and lost if a failure comes first) or memory (as async, and each rank keeps its shard in its host's memory and a copy on a peer host: a restart loads from memory, storage only when a shard and its copy are both lost).") var checkpointMode: CheckpointMode?
    @Option(name: .customLong("checkpoint-bandwidth"), help: "Emulated bytes/s per GPU to checkpoint storage (default 2e9).") var checkpointBandwidth: Double?
    @Option(name: .customLong("fail-mode"), help: "crash, hang, slow, crash-during-checkpoint, nan, disk-full or lose-slot.") var failMode: FailMode?
    @Option(name: .customLong("slow-factor"), help: "Emulated slowdown of a straggler (--fail-mode slow).") var slowFactor: Double?
    @Option(name: .customLong("mtbf-hours"), help: "Mean time between failures of one emulated GPU, in emulated hours.") var mtbfHours: Double?
    @Option(name: .customLong("restart-cost-s"), help: "Emulated seconds a restart costs (detection, relaunch; the checkpoint load is costed from its size and where it is kept).") var restartCostS: Double?
    @Flag(name: .customLong("trace-wall"), help: "Add wall-clock tracks to the trace.") var traceWall = false
    @Flag(name: .customLong("dry-run"), help: "Check everything and print the plan (grid, model, batch, pipeline, memory per rank) without running or writing anything.") var dryRun = false

    /// The config file (or defaults) with every given flag applied on top.
    func resolvedConfig() throws -> RunConfig {
        var c = try config.map(ConfigFile.load) ?? ConfigFile.loadDefault()
        func set<T>(_ v: T?, _ apply: (T) -> Void) { if let v { apply(v) } }
        set(tp) { c.tp = $0 }; set(pp) { c.pp = $0 }; set(dp) { c.dp = $0 }; set(ep) { c.ep = $0 }; set(zero) { c.zero = $0 }; set(zeroGroup) { c.zeroGroup = $0 }
        set(schedule) { c.schedule = $0 }; set(virtualStages) { c.virtualStages = $0 }; set(recompute) { c.recompute = $0 }; set(attention) { c.attention = $0 }
        set(sequenceParallel) { c.sequenceParallel = $0 }; set(overlapGradReduce) { c.overlapGradReduce = $0 }
        set(overlapParamGather) { c.overlapParamGather = $0 }
        if let ppLayers {
            let parts = ppLayers.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.allSatisfy({ $0 != nil }) else {
                throw RunConfig.ConfigError("--pp-layers \(ppLayers): expected comma-separated layer counts such as 1,3,3,1")
            }
            c.ppLayers = parts.map { $0! }
        }
        set(experts) { c.model.experts = $0 }; set(topK) { c.model.topK = $0 }; set(layers) { c.model.layers = $0 }
        set(dModel) { c.model.dModel = $0 }; set(heads) { c.model.heads = $0 }; set(kvHeads) { c.model.kvHeads = $0 }
        set(ffnHidden) { c.model.ffnHidden = $0 }; set(ffn) { c.model.ffn = $0 }; set(moeEvery) { c.model.moeEvery = $0 }
        set(capacityFactor) { c.model.capacityFactor = $0 }; set(auxLossCoef) { c.model.auxLossCoef = $0 }
        set(zLossCoef) { c.model.zLossCoef = $0 }; set(routerInitScale) { c.model.routerInitScale = $0 }; set(seqLen) { c.model.seqLen = $0 }
        // Batch: a flag for one of (micro-batch-size, micro-batches) lets the other be derived.
        switch (microBatchSize, microBatches) {
        case let (b?, m?): c.microBatchSize = b; c.microBatches = m; if globalBatch == nil { c.globalBatch = nil }
        case let (b?, nil): c.microBatchSize = b; c.microBatches = nil
        case let (nil, m?): c.microBatches = m; c.microBatchSize = nil
        case (nil, nil): break
        }
        set(globalBatch) { c.globalBatch = $0 }
        set(steps) { c.steps = $0 }; set(lr) { c.lr = $0 }; set(warmupSteps) { c.warmupSteps = $0 }
        set(weightDecay) { c.weightDecay = $0 }; set(gradClip) { c.gradClip = $0 }; set(maxSkippedSteps) { c.maxSkippedSteps = $0 }; set(seed) { c.seed = $0 }
        set(data) { c.data = $0 }; set(summaryJSON) { c.summaryJSON = $0 }; set(logEvery) { c.logEvery = $0 }
        set(dumpStep) { c.dumpStep = $0 }; set(dumpDir) { c.dumpDir = $0 }
        set(device) { c.device = $0 }; set(clock) { c.clock = $0 }; set(clockScale) { c.clockScale = $0 }
        set(gpusPerNode) { c.gpusPerNode = $0 }; set(link) { c.link = $0 }; set(precision) { c.precision = $0 }
        set(trace) { c.trace = $0 }
        set(checkpointDir) { c.checkpointDir = $0 }; set(checkpointEvery) { c.checkpointEvery = $0 }
        set(keepCheckpoints) { c.keepCheckpoints = $0 }; set(resume) { c.resume = $0 }; set(attempt) { c.attempt = $0 }
        set(failAtStep) { c.failAtStep = $0 }; set(failRank) { c.failRank = $0 }; set(failMode) { c.failMode = $0 }
        set(checkpointMode) { c.checkpointMode = $0 }; set(checkpointBandwidth) { c.checkpointBandwidth = $0 }
        set(slowFactor) { c.slowFactor = $0 }; set(mtbfHours) { c.mtbfHours = $0 }; set(restartCostS) { c.restartCostS = $0 }
        if ignoreOOM { c.ignoreOOM = true }
        if let timeAs { c.timeAs = timeAs == "none" ? nil : try TimingTarget.load(timeAs) }
        if traceWall { c.traceWall = true }
        return c
    }

    func run() throws {
        let config: RunConfig
        do { config = try resolvedConfig() } catch { throw ValidationError(String(describing: error)) }
        do {
            if dryRun { return try Launcher.dryRun(config) { print($0); fflush(stdout) } }
            try Launcher.train(config) { print($0); fflush(stdout) }
        } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }
}
