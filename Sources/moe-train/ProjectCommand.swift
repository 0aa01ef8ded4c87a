import Projection
import ArgumentParser
import Foundation
import Schedule
import Model
import Plan
import Train
import Formats

/// `moe-train project [--config ACCOUNT.json] [layout flags] [--sweep]`: the
/// background account's run, recomputed from its figures and projected by the emulator's
/// own cost model and schedule simulation (no MPI, nothing allocated).
struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Project the background account's training run to cluster scale: arithmetic, step time, bubble, MFU, memory, days, cost, goodput."
    )
    @Option(help: "The account's figures (JSON with model, training and sources), or a published run (configs/published/NAME.json). Default: gpt4-account.json from the config directories (./configs, PREFIX/share/moe-train, ...).")
    var config: String?
    @Option(help: "GPU to emulate (default: the account's).") var device: String?
    @Option(help: "Tensor-parallel size (default: the account's 8).") var tp: Int?
    @Option(help: "Pipeline stages (default: the account's 15).") var pp: Int?
    @Option(help: "Data-parallel replicas (default: as many as the GPUs allow).") var dp: Int?
    @Option(help: "Expert-parallel size (default: tp, experts over the TP ranks).") var ep: Int?
    @Option(help: "ZeRO stage: 0, 1 (default: Adam state sharded over data-parallel ranks), 2 (gradients too) or 3 (parameters too, gathered per layer).") var zero: Int?
    @Option(name: .customLong("zero-group"), help: "Hybrid sharding: ZeRO shards over groups of this many data-parallel ranks, replicated across groups (default: all of them).") var zeroGroup: Int?
    @Option(help: "Pipeline schedule: gpipe, 1f1b or interleaved.") var schedule: ScheduleKind?
    @Option(name: .customLong("micro-batches"), help: "Micro-batches per step (default: one sequence each).") var microBatches: Int?
    @Option(name: .customLong("virtual-stages"), help: "Chunks per rank (interleaved).") var virtualStages: Int?
    @Option(name: .customLong("gpus-per-node"), help: "GPUs per node (NVLink island).") var gpusPerNode: Int?
    @Option(help: "Activation recomputation: none, selective (the attention core) or full (default, each layer's forward again).") var recompute: Recompute?
    @Flag(name: .customLong("no-recompute"), help: "The same as --recompute none.") var noRecompute = false
    @Option(help: "Attention kernel of the emulated GPU: fused (FlashAttention-2, the default) or naive (the probabilities through HBM).") var attention: AttentionKernel?
    @Flag(name: .customLong("sequence-parallel"), help: "Sequence parallelism over the tensor-parallel group (Korthikanti et al. 2022).") var sequenceParallel = false
    @Flag(name: .customLong("overlap-grad-reduce"), help: "Data-parallel gradient reduction in per-layer buckets overlapped with the backward.") var overlapGradReduce = false
    @Flag(name: .customLong("overlap-param-gather"), help: "The parameter all-gather in per-layer buckets overlapped with the next forward (ZeRO-1 and 2), or each layer's gather with the layer before it (ZeRO-3).") var overlapParamGather = false
    @Option(name: .customLong("usd-per-gpu-hour"), help: "Price per GPU-hour (default: the account's).") var usdPerGPUHour: Double?
    @Option(name: .customLong("mtbf-hours"), help: "Mean time between failures of one GPU, hours: adds expected failures and goodput.") var mtbfHours: Double?
    @Option(name: .customLong("checkpoint-every"), help: "Checkpoint interval in steps (default: the Young/Daly optimum).") var checkpointEvery: Int?
    @Option(name: .customLong("restart-cost-s"), help: "Seconds a restart costs (detection, relaunch; the checkpoint load is added per checkpoint mode).") var restartCostS = 600.0
    @Option(name: .customLong("checkpoint-bandwidth"), help: "Bytes/s per GPU to checkpoint storage.") var checkpointBandwidth = 2e9
    @Flag(help: "Try the layouts that fit and print the best ten by throughput.") var sweep = false
    @Option(help: "Write the projection as JSON here.") var json: String?

    func run() throws {
        do {
            let path = try accountPath()
            if PublishedMeasurement.isMeasurement(path) {
                // A published run brings its own layout, device and batch.
                let given = [("--device", device != nil), ("--tp", tp != nil), ("--pp", pp != nil), ("--dp", dp != nil), ("--ep", ep != nil), ("--zero", zero != nil), ("--zero-group", zeroGroup != nil),
                             ("--schedule", schedule != nil), ("--micro-batches", microBatches != nil), ("--virtual-stages", virtualStages != nil),
                             ("--gpus-per-node", gpusPerNode != nil), ("--recompute", recompute != nil || noRecompute), ("--attention", attention != nil), ("--sequence-parallel", sequenceParallel), ("--overlap-grad-reduce", overlapGradReduce),
                             ("--overlap-param-gather", overlapParamGather), ("--sweep", sweep),
                             ("--mtbf-hours", mtbfHours != nil), ("--usd-per-gpu-hour", usdPerGPUHour != nil)].filter(\.1).map(\.0)
                guard given.isEmpty else {
                    throw UsageError("\(given.joined(separator: ", ")) apply to an account; \(path) is a published run, which has its own layout (edit a copy of the file instead)")
                }
                try ProjectionReport.run(published: path, json: json) { print($0) }
                return
            }
            var account = try PublishedRun.load(path)
            if let p = usdPerGPUHour { account.usdPerGPUHour = p }
            var layout = ProjectionReport.Layout()
            layout.device = device; layout.tp = tp; layout.pp = pp; layout.dp = dp; layout.ep = ep; layout.schedule = schedule
            layout.zero = zero; layout.zeroGroup = zeroGroup
            layout.microBatches = microBatches; layout.virtualStages = virtualStages; layout.gpusPerNode = gpusPerNode
            if noRecompute, let r = recompute, r != .none {
                throw UsageError("--no-recompute and --recompute \(r.rawValue) contradict each other; give one")
            }
            layout.recompute = noRecompute ? .none : recompute ?? .full
            if let attention { layout.attention = attention }
            if sequenceParallel, let tp, tp == 1 {
                throw UsageError("--sequence-parallel needs --tp above 1 (it splits each micro-batch's tokens over the tensor-parallel group); --tp is 1")
            }
            layout.sequenceParallel = sequenceParallel
            layout.overlapGradReduce = overlapGradReduce; layout.overlapParamGather = overlapParamGather
            let failures = ProjectionReport.Failures(mtbfHours: mtbfHours, checkpointEverySteps: checkpointEvery,
                                                     restartCostS: restartCostS, checkpointBandwidth: checkpointBandwidth)
            if sweep {
                try ProjectionReport.validate(account: account, layout: layout, failures: failures)
                try LayoutSweep.run(account: account, base: layout) { print($0) }
                return
            }
            try ProjectionReport.run(account: account, layout: layout, failures: failures, json: json) { print($0) }
        } catch let e as PublishedRun.Invalid {
            throw ValidationError(e.description)
        } catch let e as JSONText.DecodeError {
            throw ValidationError(e.description)
        } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }

    /// --config when given, else the first gpt4-account.json in the config directories.
    func accountPath() throws -> String {
        if let config { return config }
        if let found = Installation.findConfig("gpt4-account.json") { return found }
        throw UsageError("no --config given and no gpt4-account.json found (\(Installation.searchedDescription)); pass --config FILE or set MOE_TRAIN_CONFIGS")
    }
}
