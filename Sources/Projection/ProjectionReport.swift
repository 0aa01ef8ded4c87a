import Foundation
import Formats
import Emulation
import Model
import Schedule
import Plan

/// `moe-train project`: the account's arithmetic, then the emulator's own projection of the
/// run (any layout), its cost, and with an MTBF the expected failures and goodput.
public enum ProjectionReport {
    public struct Layout {
        public var device: String?, tp: Int?, pp: Int?, dp: Int?, ep: Int?, schedule: ScheduleKind?, microBatches: Int?
        public var virtualStages: Int?, recompute = Recompute.full, gpusPerNode: Int?
        public var attention = AttentionKernel.fused
        public var sequenceParallel = false
        public var overlapGradReduce = false, overlapParamGather = false
        /// ZeRO stage (default: the configuration's, 1), and the hybrid-sharding group (default: every data-parallel rank).
        public var zero: Int?, zeroGroup: Int?
        public init() {}
    }

    /// The failure model's settings. They are checked whether or not an MTBF is given
    /// (a nonsense interval is an error even when nothing uses it); without `mtbfHours`
    /// no failures are projected.
    public struct Failures {
        public var mtbfHours: Double?
        public var checkpointEverySteps: Int?
        public var restartCostS: Double
        public var checkpointBandwidth: Double
        public init(mtbfHours: Double?, checkpointEverySteps: Int?, restartCostS: Double, checkpointBandwidth: Double) {
            self.mtbfHours = mtbfHours; self.checkpointEverySteps = checkpointEverySteps
            self.restartCostS = restartCostS; self.checkpointBandwidth = checkpointBandwidth
        }
    }

    /// The account's run as a moe-train configuration, with the layout overrides applied:
    /// its width, heads, one KV head, 16 experts top-2 with each expert's hidden size from
    /// its parameter count, 8k sequences, by default TP8 x PP15 with the experts split over
    /// the TP ranks (so that the ~30 GB per GPU of the account holds), the largest whole
    /// number of replicas that fits the GPU count, and the 60M-token batch as whole
    /// micro-batches of one sequence per replica.
    public static func config(_ a: PublishedRun, _ l: Layout) -> (RunConfig, world: Int) {
        var c = RunConfig()
        c.model.layers = Int(a.layers); c.model.dModel = Int(a.dModel); c.model.heads = Int(a.heads)
        c.model.kvHeads = Int(a.kvHeads); c.model.experts = Int(a.experts); c.model.topK = Int(a.topK)
        c.model.seqLen = Int(a.seqLen); c.model.vocab = Int(a.vocab); c.model.capacityFactor = 0
        c.device = l.device ?? a.device
        if let g = l.gpusPerNode { c.gpusPerNode = g }
        if let s = l.schedule { c.schedule = s }
        if let v = l.virtualStages { c.virtualStages = v }
        c.recompute = l.recompute
        c.attention = l.attention
        let tp = max(l.tp ?? Int(a.tp), 1), pp = max(l.pp ?? Int(a.pp), 1)
        c.sequenceParallel = l.sequenceParallel && tp > 1
        c.overlapGradReduce = l.overlapGradReduce; c.overlapParamGather = l.overlapParamGather
        if let z = l.zero { c.zero = z }
        c.zeroGroup = l.zeroGroup
        let dp = l.dp ?? Int(a.gpus) / (tp * pp)
        c.tp = tp; c.pp = pp; c.ep = l.ep ?? tp
        c.model.ffnHidden = Int((a.expertParams / (2 * a.dModel * a.layers) / Double(tp)).rounded()) * tp
        let sequences = dp > 0 ? Int((a.batchTokens / a.seqLen / Double(dp)).rounded(.down)) : 0
        c.globalBatch = sequences * dp
        if let m = l.microBatches { c.microBatches = m; c.microBatchSize = nil } else { c.microBatchSize = 1 }
        return (c, tp * pp * dp)
    }

    /// Every figure the user can set, against its range, before anything is computed.
    public static func validate(account a: PublishedRun, layout: Layout, failures: Failures?) throws {
        do {
            let gpus = max(Int(a.gpus), 1)
            for (flag, value) in [("--tp", layout.tp), ("--pp", layout.pp), ("--dp", layout.dp), ("--ep", layout.ep),
                                  ("--gpus-per-node", layout.gpusPerNode)] {
                if let v = value { try Validation.require(v, in: 1...gpus, flag, note: "the account has \(gpus) GPUs") }
            }
            if let dp = layout.dp {
                let tp = layout.tp ?? Int(a.tp), pp = layout.pp ?? Int(a.pp)
                let (tpp, o1) = tp.multipliedReportingOverflow(by: pp), (all, o2) = tpp.multipliedReportingOverflow(by: dp)
                guard !o1 && !o2 && all <= gpus else {
                    throw UsageError("project: --tp \(tp) x --pp \(pp) x --dp \(dp) needs more GPUs than the account's \(gpus)")
                }
            }
            if let m = layout.microBatches { try Validation.require(m, in: 1...Validation.maxCount, "--micro-batches") }
            if let z = layout.zero { try Validation.require(z, in: 0...3, "--zero") }
            if let g = layout.zeroGroup { try Validation.require(g, in: 1...gpus, "--zero-group", note: "the account has \(gpus) GPUs") }
            if let v = layout.virtualStages { try Validation.require(v, in: 1...max(Int(a.layers), 1), "--virtual-stages") }
            try Validation.require(a.usdPerGPUHour, in: 0.000001...1e6, "--usd-per-gpu-hour")
            if let f = failures {
                if let h = f.mtbfHours { try Validation.require(h, in: 1e-6...1e9, "--mtbf-hours") }
                try Validation.require(f.restartCostS, in: 0...1e9, "--restart-cost-s")
                try Validation.require(f.checkpointBandwidth, in: 1...1e15, "--checkpoint-bandwidth", note: "bytes/s")
                if let k = f.checkpointEverySteps { try Validation.require(k, in: 1...1_000_000_000, "--checkpoint-every") }
            }
        } catch let e as Validation.OutOfRange {
            throw UsageError("project: \(e.description)")
        }
    }

    /// The emulator's prediction of a projected step, in four lines: layout, step and
    /// utilization, exposed communication, memory.
    public static func predictionLines(_ p: Projection, device: DeviceProfile) -> [String] {
        let config = p.plan.config, batch = p.plan.batch, world = p.plan.topology.world
        let M = batch.microBatches
        let mem = p.memory.roles.map(\.breakdown).max { $0.total < $1.total }!
        let gib = 1073741824.0
        let recompute = ["none": "no recomputation", "selective": "selective recomputation", "full": "full activation recomputation"][config.recompute.rawValue]!
        let experts = config.model.moeEvery == 0 ? "dense" : "experts over \(config.ep) ranks"
        let extras = [(config.sequenceParallel, "sequence parallelism"), (config.overlapGradReduce, "overlapped gradient reduction"),
                      (config.overlapParamGather && config.zero >= 1, "overlapped parameter gather")].filter(\.0).map { ", " + $0.1 }.joined()
        let overlapped = config.overlapGradReduce || (config.overlapParamGather && config.zero >= 1)
        return [
            "the emulator's prediction (\(config.schedule.rawValue), \(device.name) cost model, \(config.attention.rawValue) attention, \(recompute)\(extras)): \(world) GPUs = TP\(config.tp) x PP\(config.pp) x DP\(batch.dp), ZeRO-\(config.zero)\(config.zeroGroup.map { " over groups of \($0)" } ?? ""), \(experts), \(M) micro-batches of \(batch.microBatchSize) x \(config.model.seqLen) tokens",
            String(format: "  step %.2f s for %.3g tokens; pipeline bubble %.1f%% (closed form %.1f%%); MFU %.1f%%, HFU %.1f%%",
                   p.stepTime, Double(p.tokensPerStep), 100 * p.bubble,
                   100 * ClosedForm.bubble(config.schedule, stages: config.pp, microbatches: M,
                                           virtualStages: config.virtualStages), 100 * p.mfu,
                   100 * p.executedFLOPsPerStep / (p.stepTime * device.peakFLOPS * Double(world))),
            String(format: "  exposed communication on the first stage: TP/EP collectives %.2f s, data-parallel reduce-scatter and all-gather %.2f s%@ per step (%.1f%% of the step)",
                   p.modelParallelCommPerStage.first ?? 0, p.dataParallelCommPerStage.first ?? 0,
                   overlapped ? " (what the overlap does not hide)" : "", 100 * p.exposedCommFraction),
            String(format: "  memory per GPU %.1f GiB: parameters %.1f, gradients %.1f, optimizer %.1f, activations %.1f, communication %.1f (the %@ holds %.1f GiB%@)",
                   mem.total / gib, mem.parameters / gib, mem.gradients / gib, mem.optimizerState / gib, mem.activations / gib,
                   mem.communication / gib, device.name, device.memoryBytes / gib, mem.total > device.memoryBytes ? ": does NOT fit" : ""),
        ]
    }

    /// `project --config` with a published-run file (`configs/published/`): its layout
    /// projected, and the prediction of its measured figure beside the published one.
    public static func run(published path: String, json: String?, log: (String) -> Void) throws {
        let m = try PublishedMeasurement.load(path)
        let (config, world) = try m.configuration()
        let p: Projection
        do { p = try Projection(config: config, worldSize: world) } catch { throw UsageError("project: \(path): \(error)") }
        let device = p.plan.emulator.profile
        log("published run \(m.name): \(m.source)")
        for line in predictionLines(p, device: device) { log(line) }
        let (metric, published) = m.metric
        let predicted = m.predicted(by: p)
        log(String(format: "  %@: published %.4g, predicted %.4g (%+.1f%%)", metric.rawValue, published, predicted,
                   100 * (predicted / published - 1)))
        let mem = p.memory.roles.map(\.breakdown).max { $0.total < $1.total }!
        let out: [String: Any] = [
            "name": m.name, "metric": metric.rawValue, "published": published, "predicted": predicted, "error": predicted / published - 1,
            "step_time_s": p.stepTime, "mfu": p.mfu, "bubble_fraction": p.bubble, "exposed_comm_fraction": p.exposedCommFraction,
            "memory_bytes_per_gpu": mem.total, "fits_in_memory": mem.total <= device.memoryBytes, "gpus": world,
            "tp": config.tp, "pp": config.pp, "dp": p.plan.batch.dp, "ep": config.ep, "zero": config.zero, "micro_batches": p.plan.batch.microBatches,
            "schedule": config.schedule.rawValue, "device": device.name, "recompute": config.recompute.rawValue,
        ]
        if let json { try AtomicFile.write(JSONText.encode(out), to: json) }
    }

    public static func run(account a: PublishedRun, layout: Layout, failures: Failures?, json: String?, log: (String) -> Void) throws {
        let device = try EmulatorSetup.findProfile(layout.device ?? a.device)
        let alt = try EmulatorSetup.findProfile(a.altDevice)
        try validate(account: a, layout: layout, failures: failures)
        let (config, world) = config(a, layout)
        guard world >= 1, (config.globalBatch ?? 0) >= 1 else {
            throw UsageError("project: \(Int(a.gpus)) GPUs and a \(a.batchTokens)-token batch do not hold one replica of TP\(config.tp) x PP\(config.pp) with a sequence each")
        }
        let p: Projection
        do {
            p = try Projection(config: config, worldSize: world)
        } catch {
            throw UsageError("project: \(error)")
        }
        let batch = p.plan.batch
        for line in a.report(peak: device.peakFLOPS, altPeakBF16: alt.peakFLOPS, altPeakFP8: alt.peakFLOPSFP8 ?? .nan) { log(line) }
        let dp = batch.dp
        let M = batch.microBatches
        let steps = a.tokens / Double(p.tokensPerStep)
        let seconds = steps * p.stepTime
        let days = seconds / 86400, gpuHours = seconds / 3600 * Double(world), cost = gpuHours * a.usdPerGPUHour
        let mem = p.memory.roles.map(\.breakdown).max { $0.total < $1.total }!
        for line in predictionLines(p, device: device) { log(line) }
        log(String(format: "  %.0f steps for %.3g tokens: %.1f days, %.3g GPU-hours, $%.1fM at $%.2f per GPU-hour",
                   steps, a.tokens, days, gpuHours, cost / 1e6, a.usdPerGPUHour))
        var out: [String: Any] = [
            "total_params": a.totalParams, "active_params": a.activeParams, "flops_per_token_forward": a.forwardFLOPsPerToken,
            "total_flops": a.trainingFLOPs, "step_time_s": p.stepTime, "mfu": p.mfu, "bubble_fraction": p.bubble,
            "bubble_fraction_per_stage": p.bubblePerStage, "exposed_comm_fraction": p.exposedCommFraction,
            "model_parallel_comm_s_per_stage": p.modelParallelCommPerStage, "data_parallel_comm_s_per_stage": p.dataParallelCommPerStage,
            "pipeline_phase_s": p.pipelinePhase, "memory_bytes_per_gpu": mem.total, "memory_breakdown": mem.json,
            "fits_in_memory": mem.total <= device.memoryBytes, "days": days, "gpu_hours": gpuHours, "cost_usd": cost,
            "gpus": world, "tp": config.tp, "pp": config.pp, "dp": dp, "ep": config.ep, "zero": config.zero, "micro_batches": M,
            "schedule": config.schedule.rawValue, "device": device.name, "recompute": layout.recompute.rawValue,
        ]
        if let f = failures, let mtbfHours = f.mtbfHours {
            let jobMTBF = mtbfHours * 3600 / Double(world)
            let bytes = mem.parameters + mem.optimizerState
            // The three checkpoint modes, each by what a checkpoint costs the step (C), how long
            // after it the checkpoint can be lost (W) and what loading it costs a restart (L):
            // sync C = L = the shard over the storage bandwidth, W = 0; async C = the snapshot
            // over PCIe, W = the persist to storage (a failure within W finds the snapshot not
            // yet durable and loses one more interval), L = storage; memory (Gemini) C = the
            // snapshot plus the copy to the peer host over the inter-node link, W = 0 (the copy
            // survives the failure of one host), L = the shard from the peer over that link.
            // Each failure loses tau/2 + W + restart + L on average; async and memory still
            // persist every checkpoint to storage in the background, one save in flight, so
            // their interval is at least the storage write. The interval is the Young/Daly
            // optimum sqrt(2 C MTBF) (rounded up to whole steps) unless given.
            let storage = bytes / f.checkpointBandwidth
            let snapshot = bytes / device.hostBandwidth
            let peer = device.interNode.seconds(bytes)
            let modes: [(name: String, cost: Double, window: Double, load: Double, minInterval: Double)] = [
                ("sync", storage, 0, storage, 0), ("async", snapshot, storage, storage, storage), ("memory", snapshot + peer, 0, peer, storage)]
            for m in modes {
                let optimum = max((2 * m.cost * jobMTBF).squareRoot(), m.minInterval)
                let every = f.checkpointEverySteps ?? Int(min(max((optimum / p.stepTime).rounded(.up), 1), 1e9))
                let tau = max(Double(every) * p.stepTime, m.minInterval)
                let lossPerFailure = tau / 2 + m.window + f.restartCostS + m.load
                guard lossPerFailure < jobMTBF else {
                    if m.name == "sync" {
                        throw UsageError(String(format: "project: --mtbf-hours %g gives a job MTBF of %.0f s over %ld GPUs, and each failure loses %.0f s on average (half a checkpoint interval, --restart-cost-s and the load): the run never finishes", mtbfHours, jobMTBF, world, lossPerFailure))
                    }
                    log(String(format: "  with %@ checkpoints: each failure loses %.0f s, more than the job MTBF: the run never finishes", m.name, lossPerFailure))
                    continue
                }
                let total = seconds * (1 + m.cost / tau) / (1 - lossPerFailure / jobMTBF)
                let failuresExpected = total / jobMTBF
                let goodput = seconds / total
                if m.name == "sync" {
                    log(String(format: "  failures: job MTBF %.2f h (%.0f h per GPU / %ld GPUs); checkpoint %.0f s every %ld steps (%.0f s; Young/Daly optimum %.0f s), load %.0f s per restart",
                               jobMTBF / 3600, mtbfHours, world, m.cost, every, tau, optimum, m.load))
                    log(String(format: "  expected %.0f failures: lost work %.1f days, restarts and loads %.1f days, checkpoints %.1f days; %.1f days in all, goodput %.1f%%, effective utilization %.1f%%",
                               failuresExpected, failuresExpected * tau / 2 / 86400, failuresExpected * (f.restartCostS + m.load) / 86400,
                               seconds * m.cost / tau / 86400, total / 86400, 100 * goodput, 100 * goodput * p.mfu))
                } else if m.name == "async" {
                    log(String(format: "  with async checkpoints: snapshot %.1f s to host memory (%.0f GB/s), durable %.0f s later; every %ld steps (optimum %.0f s): expected %.0f failures, %.1f days in all, goodput %.1f%%, effective utilization %.1f%%",
                               m.cost, device.hostBandwidth / 1e9, m.window, every, optimum, failuresExpected, total / 86400, 100 * goodput, 100 * goodput * p.mfu))
                } else {
                    log(String(format: "  with memory checkpoints: snapshot %.1f s plus %.1f s to the peer host, restored from it in %.1f s; every %ld steps (optimum %.0f s): expected %.0f failures, %.1f days in all, goodput %.1f%%, effective utilization %.1f%%",
                               snapshot, peer, m.load, every, optimum, failuresExpected, total / 86400, 100 * goodput, 100 * goodput * p.mfu))
                }
                out[m.name == "sync" ? "goodput" : "goodput_" + m.name] = [
                    "job_mtbf_s": jobMTBF, "checkpoint_cost_s": m.cost, "persist_window_s": m.window, "load_s": m.load,
                    "checkpoint_every_steps": every, "optimum_interval_s": optimum, "expected_failures": failuresExpected,
                    "lost_work_s": failuresExpected * (tau / 2 + m.window), "restart_s": failuresExpected * f.restartCostS,
                    "load_total_s": failuresExpected * m.load, "checkpoint_s": seconds * m.cost / tau, "total_s": total,
                    "goodput": goodput, "effective_utilization": goodput * p.mfu, "days": total / 86400]
            }
        }
        if let json { try AtomicFile.write(JSONText.encode(out), to: json) }
    }
}
