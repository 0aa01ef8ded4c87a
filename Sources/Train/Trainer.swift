import Foundation
import Comm
import Emulation
import Model
import Parallel
import Pipeline
import Tensor

/// The training loop: for each step, run the rank's micro-batches (forward and backward,
/// gradients accumulated), reduce gradients over the data-parallel groups (ZeRO-1:
/// reduce-scatter), clip by the global norm, step AdamW on the owned shard, gather the
/// parameters, log; at the end write the summary.
public final class Trainer {
    public let config: RunConfig
    public let groups: ProcessGroups
    public let plan: BatchPlan
    public let data: DataSource
    public let model: Transformer
    public let params: Parameters
    let optimizers: [AdamW]
    public let zero: ZeroOne
    public let parallel: MPIModelParallelism
    public let stagePlan: StagePlan
    public let schedule: PipelineSchedule
    let executor: PipelineExecutor
    let counter = CommCounter()
    let lrSchedule: LRSchedule
    public let emulator: EmulatorSetup
    public let clock: DeviceClock
    public let memory: MemoryPlan
    let flopsPerToken: Double
    let log: (String) -> Void
    public private(set) var records: [StepRecord] = []
    public private(set) var wallSeconds = 0.0
    /// SHA-256 of the final parameters in the single-rank layout (set at the end of `run`).
    public private(set) var checksum = ""
    /// Largest activation footprint of a step, in elements, per pipeline stage (max over its ranks).
    var peakActivationPerStage: [Double] = []
    /// Training communication summed over all ranks, per (kind, group): bytes and calls.
    var commTotals: [CommCounter.Key: (bytes: Double, calls: Double)] = [:]

    var isLogger: Bool { groups.world.rank == 0 }

    public init(config: RunConfig, groups: ProcessGroups, data: DataSource, emulator: EmulatorSetup,
                log: @escaping (String) -> Void) throws {
        self.config = config
        self.groups = groups
        self.data = data
        self.emulator = emulator
        self.log = log
        let topo = groups.topology
        plan = try BatchPlan(globalBatch: config.globalBatch, microBatchSize: config.microBatchSize,
                             microBatches: config.microBatches, dp: topo.dp)
        stagePlan = try StagePlan(config: config.model, stages: topo.pp, virtualStages: config.virtualStages, counts: config.ppLayers)
        schedule = try PipelineSchedule(ScheduleKind(rawValue: config.schedule) ?? .oneFOneB, plan: stagePlan,
                                        microbatches: plan.microBatches)
        let shard = Self.shard(rank: groups.world.rank, topology: topo, plan: stagePlan)
        parallel = MPIModelParallelism(groups: groups, shard: shard)
        let layout = Self.layout(config: config, topology: topo, shard: shard)
        params = Parameters(layout: layout)
        layout.initialize(params.values, seed: config.seed)
        model = Transformer(config: config.model, params: params, parallel: parallel)
        zero = ZeroOne(stage: config.zero, layout: layout, groups: groups)
        let hyper = AdamW.Hyper(beta1: config.beta1, beta2: config.beta2, eps: config.adamEps, weightDecay: config.weightDecay)
        optimizers = [zero.ownedDense, zero.ownedExpert].filter { !$0.isEmpty }.map { AdamW(layout: layout, range: $0, hyper: hyper) }
        lrSchedule = LRSchedule(peak: config.lr, minRatio: config.minLRRatio, warmup: config.warmupSteps, total: config.steps)
        memory = MemoryPlan(config: config, topology: topo, plan: plan, stagePlan: stagePlan, schedule: schedule,
                            precision: emulator.precision)
        flopsPerToken = modelFLOPsPerToken(config.model, layout: ParameterLayout(config: config.model))
        groups.world.addObserver(counter)
        // One process = one rank = one emulated GPU: its kernels and messages move this clock.
        clock = emulator.makeClock()
        Kernels.accountant = clock
        groups.world.attach(clock: clock, floatBytes: emulator.precision.elementBytes)
        executor = PipelineExecutor(model: model, plan: stagePlan, pp: groups.pp, actions: schedule.lowered[groups.coordinates.pp],
                                    clock: clock)
        faults = FaultInjector(config: config, rank: groups.world.rank)
        // The run directory's logs are kept when the run checkpoints or runs under the
        // supervisor (which creates the directory); a plain run leaves checkpoints/ alone.
        if groups.world.rank == 0 && config.checkpointEvery > 0 {
            try FileManager.default.createDirectory(atPath: config.runDirectory, withIntermediateDirectories: true)
        }
        runLog = RunLog(dir: config.runDirectory)
    }

    /// Continues from a verified checkpoint: parameters, optimizer shards and step counts.
    /// A rank that cannot load its shard ends the whole job (exit 2), so none waits for it.
    public func restore(from candidate: Checkpoint.Candidate) throws {
        do {
            try Checkpoint.load(candidate, rank: groups.world.rank, params: params, optimizers: optimizers)
        } catch {
            log("moe-train: error: rank \(groups.world.rank) cannot resume from \(candidate.path): \(error)")
            groups.world.abort(code: 2)
        }
        startStep = candidate.step
        if isLogger {
            log("resumed from \(candidate.path): continuing after step \(candidate.step) (attempt \(config.attempt))")
            runLog.event("checkpoint_loaded", ["attempt": config.attempt, "step": candidate.step, "path": candidate.path])
        }
    }

    /// Saves this step's sharded checkpoint (collective). Emulated cost: the shard's bytes in
    /// the emulated precision (bf16 parameters, fp32 master weights and moments of the owned
    /// shard) over the storage bandwidth.
    func saveCheckpoint(_ step: Int) throws {
        let world = groups.world
        let dir = config.runDirectory + "/" + Checkpoint.stepName(step)
        if world.rank == 0 {
            try FileManager.default.createDirectory(atPath: config.runDirectory, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: dir) {
                // A torn or rolled-back checkpoint of this step: keep it aside, never overwrite it.
                let aside = dir + ".stale-\(Int(Date().timeIntervalSince1970))-\(config.attempt)"
                try FileManager.default.moveItem(atPath: dir, toPath: aside)
                log("checkpoint: moved the existing \(Checkpoint.stepName(step)) aside to \(URL(fileURLWithPath: aside).lastPathComponent)")
            }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        world.untimed { world.barrier() }
        let blob = Checkpoint.encodeShard(params: params, optimizers: optimizers, step: step, rank: world.rank, attempt: config.attempt)
        let path = dir + "/" + Checkpoint.shardName(world.rank)
        if faults.crashesWhileSaving(step: step) {
            log("fault: rank \(world.rank) dies while writing its checkpoint shard at step \(step)")
            let tmp = dir + "/." + Checkpoint.shardName(world.rank) + ".tmp-\(getpid())"
            FileManager.default.createFile(atPath: tmp, contents: Data(blob.prefix(blob.count / 2)))
            faults.crash()
        }
        try AtomicFile.write(blob, to: path)
        let held = Double(params.layout.specs.reduce(0) { $0 + $1.count })
        let owned = Double(optimizers.reduce(0) { $0 + $1.range.count })
        let emulatedBytes = held * emulator.precision.elementBytes + owned * emulator.precision.optimizerBytesPerParameter
        clock.spend(emulatedBytes / config.checkpointBandwidth, as: .checkpoint, detail: "save \(Checkpoint.stepName(step))")
        let entry = "\(blob.count) \(SHA256.hexDigest(blob))"
        let entries = world.untimed { world.gatherBytes(Array(entry.utf8), root: 0) }
        guard world.rank == 0 else { return }
        let shards = entries.enumerated().map { rank, bytes -> [String: Any] in
            let parts = String(decoding: bytes, as: UTF8.self).split(separator: " ")
            return ["file": Checkpoint.shardName(rank), "bytes": Int(parts[0])!, "sha256": String(parts[1])]
        }
        let manifest: [String: Any] = ["format": "moe-train checkpoint v1", "step": step, "attempt": config.attempt,
                                       "layout": Launcher.layout(config, groups.topology).json,
                                       "config_hash": Checkpoint.configHash(config), "config": ConfigFile.dictionary(config),
                                       "shards": shards]
        try AtomicFile.write(JSONText.encode(manifest), to: dir + "/manifest.json")
        try AtomicFile.write(Checkpoint.stepName(step) + "\n", to: config.runDirectory + "/latest")
        runLog.event("checkpoint_saved", ["attempt": config.attempt, "step": step])
        if config.keepCheckpoints > 0 {
            let complete = Checkpoint.stepDirectories(config.runDirectory).filter {
                FileManager.default.fileExists(atPath: $0.path + "/manifest.json")
            }
            for old in complete.dropFirst(config.keepCheckpoints) { try? FileManager.default.removeItem(atPath: old.path) }
        }
    }

    /// What rank `rank` holds: its tensor/expert shard of the layers of its pipeline chunks.
    public static func shard(rank: Int, topology: Topology, plan: StagePlan) -> ShardSpec {
        let c = topology.coordinates(of: rank)
        return ShardSpec(tp: topology.tp, tpRank: c.tp, ep: topology.ep, epRank: c.ep, layers: plan.heldLayers(rank: c.pp),
                         embedding: plan.holdsEmbedding(rank: c.pp), head: plan.holdsHead(rank: c.pp))
    }

    /// The flat layout of one rank: its shard, with each region padded for ZeRO-1.
    public static func layout(config: RunConfig, topology: Topology, shard: ShardSpec) -> ParameterLayout {
        ParameterLayout(config: config.model, shard: shard,
                        denseAlignment: config.zero == 1 ? topology.dp : 1,
                        expertAlignment: config.zero == 1 ? topology.expertDP : 1)
    }

    /// The single-rank layout: the order of checksums and dumps.
    var singleLayout: ParameterLayout { ParameterLayout(config: config.model) }

    /// The layout of any rank (for assembling the single-rank view).
    func layoutOf(_ rank: Int) -> ParameterLayout {
        Self.layout(config: config, topology: groups.topology, shard: Self.shard(rank: rank, topology: groups.topology, plan: stagePlan))
    }

    var moeLayers: [Int] { (0..<config.model.layers).filter { config.model.isMoE(layer: $0) } }

    // MARK: - Loop

    public func run() throws {
        if isLogger { printHeader() }
        let start = DispatchTime.now().uptimeNanoseconds
        if startStep >= config.steps && isLogger { log("nothing to do: the checkpoint is at step \(startStep) of \(config.steps)") }
        for step in (startStep + 1)..<(config.steps + 1) {
            let record = try trainStep(step)
            records.append(record)
            if isLogger {
                if step == startStep + 1 { runLog.event("first_step", ["attempt": config.attempt, "step": step]) }
                logStep(record)
            }
            if isLogger && (step == startStep + 1 || step % config.logEvery == 0 || step == config.steps) { log(format(record)) }
        }
        wallSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        checksum = parameterChecksum()
        commTotals = worldCommTotals()
        let peak = Double(records.map(\.peakActivationFloats).max() ?? 0)
        let peaks = groups.world.untimed { groups.world.allGather([peak]) }
        peakActivationPerStage = (0..<groups.topology.pp).map { stage in
            (0..<groups.world.size).filter { groups.topology.coordinates(of: $0).pp == stage }.map { peaks[$0] }.max() ?? 0
        }
        if isLogger { printFooter() }
    }

    /// The step a resumed run continues after (0 for a fresh run).
    public private(set) var startStep = 0
    let faults: FaultInjector
    let runLog: RunLog

    /// Emulated time at which this rank started its last step, and its actions' durations.
    var lastStepStart = 0.0
    var lastDurations: [Action: Double] = [:]

    func trainStep(_ step: Int) throws -> StepRecord {
        faults.beforeStep(step, clock: clock, log: log)
        let t0 = DispatchTime.now().uptimeNanoseconds
        lastStepStart = clock.now
        let c = config.model
        let T = c.seqLen
        let scale = LossScale(tokens: plan.globalBatch * T, sequences: plan.globalBatch)
        let clockStart = clock.now, flopsStart = clock.executedFLOPs, spanStart = clock.spans.count
        params.zeroGrads()
        let rankFirst = groups.coordinates.dp * plan.perRank
        let result = executor.runStep(width: c.dModel, rows: plan.microBatchSize * T, batch: { m in
            data.batch(step: step, first: rankFirst + m * plan.microBatchSize, count: plan.microBatchSize, seqLen: T)
        }, scale: scale)
        lastDurations = result.durations
        faults.poison(params.grads, step: step)
        // The step's figures over the data-parallel replicas and pipeline stages (TP ranks agree).
        let stats = reduceStats(result.stats)
        let dumpGrads = config.dumpStep == step ? zero.fullyReducedCopy(params.grads) : nil
        zero.reduceGradients(params.grads)
        var sumSq = 0.0
        clock.compute(.optimizer, "grad norm") { sumSq = zero.globalSumOfSquares(params.grads) }
        let gradNorm = sumSq.squareRoot()
        let moeCount = Double(max(moeLayers.count, 1))
        let loss = stats.lossSum / Double(scale.tokens)
        let aux = stats.auxSum / Double(scale.sequences) / moeCount
        let z = stats.zSum / Double(scale.tokens) / moeCount
        let lr = lrSchedule.rate(step: step)
        if let dumpGrads, let dir = config.dumpDir {
            let values = GlobalParameters.gather(params.values, layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf)
            let grads = GlobalParameters.gather(dumpGrads, layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf)
            if let values, let grads {
                let batch = data.batch(step: step, first: 0, count: plan.globalBatch, seqLen: T)
                try Dump.write(dir: dir, step: step, layout: singleLayout, values: values, grads: grads,
                               tokens: batch.tokens, targets: batch.targets, sequences: plan.globalBatch, seqLen: T,
                               record: ["step": step, "loss": loss, "aux_loss": aux, "z_loss": z, "grad_norm": gradNorm,
                                        "layout": ["tp": groups.topology.tp, "pp": groups.topology.pp, "dp": groups.topology.dp,
                                                   "ep": groups.topology.ep, "zero": config.zero]])
            }
        }
        let skipped = !gradNorm.isFinite || !loss.isFinite
        if skipped {
            if isLogger { log("warning: step \(step) has a non-finite loss or gradient norm; the update is skipped") }
        } else {
            let clip = config.gradClip > 0 && gradNorm > config.gradClip ? Float(config.gradClip / (gradNorm + 1e-6)) : 1
            clock.compute(.optimizer, "AdamW") {
                for optimizer in optimizers {
                    let n = Double(optimizer.range.count)
                    Kernels.account(flops: 16 * n, elements: n * emulator.precision.optimizerStepBytesPerParameter / emulator.precision.elementBytes)
                    optimizer.step(params: params.values, grads: params.grads, lr: lr, gradScale: clip)
                }
            }
            zero.gatherParameters(params.values)
        }
        if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 { try saveCheckpoint(step) }
        let timing = stepTiming(start: clockStart, pipeline: result, spans: clock.spans[spanStart...],
                                executedFLOPs: clock.executedFLOPs - flopsStart, tokens: scale.tokens)
        let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return StepRecord(step: step, loss: loss, aux: aux, zLoss: z, gradNorm: gradNorm, lr: lr, load: stats.load,
                          dropped: stats.dropped, assignments: stats.assignments, skipped: skipped,
                          wallSeconds: wall, tokens: scale.tokens, timing: timing,
                          peakActivationFloats: result.peakActivationFloats)
    }

    /// Appends the step to the run directory's step log and beats the heartbeat (rank 0).
    func logStep(_ r: StepRecord) {
        let t = r.timing
        runLog.step(["attempt": config.attempt, "step": r.step, "loss": r.loss, "skipped": r.skipped,
                     "emulated": ["step": t.stepTime, "compute": t.compute, "communication": t.communication,
                                  "idle": t.idle, "checkpoint": t.checkpoint],
                     "wall_s": r.wallSeconds, "model_flops": Double(r.tokens) * flopsPerToken,
                     "ranks": groups.world.size, "peak_flops": emulator.profile.peakFLOPS])
        runLog.heartbeat(step: r.step)
    }

    /// Sums the losses and expert loads over the data-parallel replicas and the pipeline
    /// stages (each stage reports its own layers; the last the loss). Bookkeeping, untimed.
    func reduceStats(_ s: MicroBatchStats) -> MicroBatchStats {
        guard groups.dp.size > 1 || groups.pp.size > 1 else { return s }
        var out = s
        var sums = [s.lossSum, s.auxSum, s.zSum, Double(s.tokens), Double(s.dropped), Double(s.assignments)]
        var load = s.load.flatMap { $0.map(Double.init) }
        for g in [groups.dp, groups.pp] where g.size > 1 { g.untimed { g.allReduce(&sums); g.allReduce(&load) } }
        out.lossSum = sums[0]; out.auxSum = sums[1]; out.zSum = sums[2]; out.tokens = Int(sums[3])
        out.dropped = Int(sums[4]); out.assignments = Int(sums[5])
        let E = config.model.experts
        out.load = (0..<config.model.layers).map { l in (0..<E).map { Int(load[l * E + $0]) } }
        return out
    }

    /// The step's emulated figures, from the spans of every rank: step time from the
    /// earliest start to the latest end; the pipeline phase from the first pipeline action's
    /// start to the last one's end over all ranks; per stage, the bubble = the share of that
    /// phase in which the stage's ranks did no pipeline work (compute or messages), averaged
    /// over the stage's ranks; MFU and HFU.
    func stepTiming(start: Double, pipeline: PipelineExecutor.StepResult, spans: ArraySlice<Span>,
                    executedFLOPs: Double, tokens: Int) -> StepTiming {
        let whole = SpanTotals(Array(spans), from: start, to: clock.now)
        let pipelineWork = SpanTotals(Array(spans), from: start, to: pipeline.end)
        let local: [Double] = [Double(groups.coordinates.pp), start, clock.now, pipeline.start, pipeline.end,
                               pipelineWork.compute + pipelineWork.communication,
                               whole.compute, whole.communication, whole.idle, executedFLOPs, whole.io]
        let width = local.count
        let all = groups.world.untimed { groups.world.allGather(local) }
        let rows = (0..<groups.world.size).map { Array(all[($0 * width)..<(($0 + 1) * width)]) }
        let stepStart = rows.map { $0[1] }.min()!, stepEnd = rows.map { $0[2] }.max()!
        let phaseStart = rows.map { $0[3] }.min()!, phaseEnd = rows.map { $0[4] }.max()!
        let phase = phaseEnd - phaseStart
        let stepTime = stepEnd - stepStart
        let stages = groups.topology.pp
        var bubble = [Double](repeating: 0, count: stages), counts = [Double](repeating: 0, count: stages)
        for r in rows where phase > 0 { bubble[Int(r[0])] += (phase - r[5]) / phase; counts[Int(r[0])] += 1 }
        for i in 0..<stages where counts[i] > 0 { bubble[i] /= counts[i] }
        let n = Double(rows.count)
        let peak = emulator.profile.peakFLOPS * n
        return StepTiming(stepTime: stepTime, compute: rows.reduce(0) { $0 + $1[6] } / n,
                          communication: rows.reduce(0) { $0 + $1[7] } / n, idle: rows.reduce(0) { $0 + $1[8] } / n,
                          checkpoint: rows.reduce(0) { $0 + $1[10] } / n,
                          bubblePerStage: bubble, pipelinePhase: phase,
                          simulatedBubblePerStage: simulatedBubble(pipeline.durations),
                          mfu: stepTime > 0 ? Double(tokens) * flopsPerToken / (stepTime * peak) : 0,
                          hfu: stepTime > 0 ? rows.reduce(0) { $0 + $1[9] } / (stepTime * peak) : 0)
    }

    /// The bubble the event simulator predicts for this step's schedule, replayed with the
    /// durations the executor measured (stage by stage, from the tp 0 / dp 0 ranks) and the
    /// link model's transfer times.
    func simulatedBubble(_ durations: [Action: Double]) -> [Double] {
        let topo = groups.topology, me = groups.coordinates
        let actions = schedule.lowered[me.pp].filter { $0.kind.isCompute }
        let mine = actions.map { durations[$0] ?? 0 }
        let pp = groups.pp
        let all = pp.untimed { pp.allGather(mine) }   // every stage has the same number of compute actions
        var table: [[Action: Double]] = []
        for r in 0..<topo.pp {
            let list = schedule.lowered[r].filter { $0.kind.isCompute }
            var d: [Action: Double] = [:]
            for (i, a) in list.enumerated() { d[a] = all[r * actions.count + i] }
            table.append(d)
        }
        let bytes = Double(plan.microBatchSize * config.model.seqLen * config.model.dModel) * emulator.precision.elementBytes
        let cost = clock.cost
        let costs = Simulator.Costs(compute: { r, a in table[r][a] ?? 0 }, transfer: { r, a in
            let peer = Lowering.peer(of: a, rank: r, stages: topo.pp).rank
            let link = cost.links.link(for: [topo.rank(tp: me.tp, dp: me.dp, pp: r), topo.rank(tp: me.tp, dp: me.dp, pp: peer)])
            return cost.pointToPoint(bytes: bytes, link: link)
        })
        guard let sim = try? Simulator.run(schedule.lowered, virtualStages: stagePlan.virtualStages,
                                           microbatches: plan.microBatches, costs: costs) else { return [] }
        return sim.bubblePerStage
    }

    // MARK: - Output

    func printHeader() {
        let c = config.model, layout = params.layout, topo = groups.topology
        log("moe-train: \(topo.world) rank(s), tp \(topo.tp) pp \(topo.pp) dp \(topo.dp) ep \(topo.ep)")
        log(String(format: "model: %d layers, d_model %d, %d heads (%d KV), %d experts top-%d (ffn %d), seq %d, %@ | params %@ total, %@ active per token",
                   c.layers, c.dModel, c.heads, c.kvHeads, c.experts, c.topK, c.ffnHidden, c.seqLen,
                   c.kvHeads == 1 ? "MQA" : (c.kvHeads == c.heads ? "MHA" : "GQA"),
                   Self.human(layout.totalCount), Self.human(layout.activeCount(config: c))))
        log("batch: \(plan.globalBatch) sequences x \(c.seqLen) tokens per step = \(plan.microBatches) micro-batches of \(plan.microBatchSize) per data-parallel rank")
        log("data: \(data.description)")
        if let floor = data.entropyFloor(seqLen: c.seqLen) {
            log(String(format: "entropy floor: %.4f nats/token (the lowest loss any model can reach on this data)", floor))
        }
        if let cap = c.expertCapacity { log("expert capacity: \(cap) assignments per expert per sequence (factor \(c.capacityFactor))") }
        let p = emulator.profile
        log(String(format: "device: %@ (%.0f TFLOP/s peak, %.2f TB/s HBM), %@ clock, %@ links, %d GPUs per node",
                   p.name, p.peakFLOPS / 1e12, p.memoryBandwidth / 1e12, clock.mode.name, config.link, config.gpusPerNode))
        for line in memory.table(device: p, precision: emulator.precision) { log(line) }
    }

    public func format(_ r: StepRecord) -> String {
        var s = String(format: "step %5d/%d | loss %.4f | aux %.3f | gnorm %.3f | lr %.2e", r.step, config.steps,
                       r.loss, r.aux, r.gradNorm, r.lr)
        if let l = r.loadSummary(moeLayers: moeLayers) {
            s += String(format: " | load %d/%.1f/%d drop %.1f%%", l.min, l.mean, l.max, 100 * r.droppedFraction)
        }
        let t = r.timing
        s += String(format: " | step %@ MFU %.2f%%", Self.seconds(t.stepTime), 100 * t.mfu)
        if groups.topology.pp > 1 { s += String(format: " bubble %.1f%%", 100 * t.bubble) }
        s += String(format: " | %.0f tok/s (wall)", Double(r.tokens) / max(r.wallSeconds, 1e-9))
        if r.skipped { s += " | SKIPPED" }
        return s
    }

    func printFooter() {
        guard let last = records.last, let first = records.first else { return }
        var s = String(format: "done: %d steps in %.1f s wall, loss %.4f -> %.4f", records.count, wallSeconds, first.loss, last.loss)
        if let floor = data.entropyFloor(seqLen: config.model.seqLen) {
            s += String(format: " (floor %.4f, gap %.4f)", floor, last.loss - floor)
        }
        log(s)
        let timed = records.map(\.timing)
        let stepTime = timed.reduce(0) { $0 + $1.stepTime } / Double(timed.count)
        let tokensPerStep = Double(first.tokens)
        log(String(format: "emulated (%@, %@ clock): %@ per step, %.0f tokens/s, MFU %.2f%%, HFU %.2f%%, compute %.1f%% / communication %.1f%% / idle %.1f%% of a rank's time",
                   emulator.profile.name, clock.mode.name, Self.seconds(stepTime), tokensPerStep / stepTime,
                   100 * timed.reduce(0) { $0 + $1.mfu } / Double(timed.count), 100 * timed.reduce(0) { $0 + $1.hfu } / Double(timed.count),
                   100 * timed.reduce(0) { $0 + $1.compute } / timed.reduce(0) { $0 + $1.stepTime },
                   100 * timed.reduce(0) { $0 + $1.communication } / timed.reduce(0) { $0 + $1.stepTime },
                   100 * timed.reduce(0) { $0 + $1.idle } / timed.reduce(0) { $0 + $1.stepTime }))
        log(String(format: "wall clock: %.3f s per step, %.0f tokens/s on this machine", wallSeconds / Double(records.count),
                   tokensPerStep * Double(records.count) / wallSeconds))
        log("param checksum: \(checksum)")
    }

    /// The last step's spans of each pipeline stage (its tp 0, dp 0 rank), and the window from
    /// the step's earliest start to its latest end. Collective; rank 0 gets the result.
    public func lastStepStageSpans() -> (stages: [[Span]], start: Double, end: Double)? {
        let world = groups.world
        let mine = clock.spans.filter { $0.end > lastStepStart }
        let bounds = world.untimed { world.allGather([lastStepStart, clock.now]) }
        let parts = world.untimed { world.gatherBytes(TraceWriter.pack(mine), root: 0) }
        guard world.rank == 0 else { return nil }
        let topo = groups.topology
        let stages = (0..<topo.pp).map { TraceWriter.unpack(parts[topo.rank(tp: 0, dp: 0, pp: $0)][...]) }
        let starts = stride(from: 0, to: bounds.count, by: 2).map { bounds[$0] }
        let ends = stride(from: 1, to: bounds.count, by: 2).map { bounds[$0] }
        return (stages, starts.min() ?? 0, ends.max() ?? 0)
    }

    /// Chrome trace JSON of every rank's spans (collective: every rank must call it; rank 0 gets the text).
    public func traceJSON(wall: Bool) -> String {
        let world = groups.world
        let parts = world.untimed { world.gatherBytes(TraceWriter.pack(clock.spans), root: 0) }
        guard world.rank == 0 else { return "" }
        let tracks = parts.enumerated().map { rank, bytes in
            TraceWriter.Track(rank: rank, name: groups.topology.coordinates(of: rank).description,
                              spans: TraceWriter.unpack(bytes[...]))
        }
        return TraceWriter.json(tracks, wall: wall)
    }

    /// SHA-256 over all parameters in the single-rank layout and order, as little-endian fp32.
    /// Collective: every rank sends its canonical shards; rank 0 returns the hex digest.
    public func parameterChecksum() -> String {
        guard let global = GlobalParameters.gather(params.values, layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf) else {
            return ""
        }
        var h = SHA256()
        global.withUnsafeBufferPointer { h.update(floats: $0.baseAddress!, count: $0.count) }
        return SHA256.hex(h.finalize())
    }

    /// Emulated seconds in a readable unit.
    static func seconds(_ s: Double) -> String {
        if s >= 1 { return String(format: "%.3f s", s) }
        if s >= 1e-3 { return String(format: "%.3f ms", s * 1e3) }
        return String(format: "%.1f us", s * 1e6)
    }

    static func human(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return "\(n)"
    }

    static let groupNames = ["world"] + Topology.Group.allCases.map(\.rawValue)

    /// Sums every rank's byte and call counts (collective; bookkeeping, untimed).
    func worldCommTotals() -> [CommCounter.Key: (bytes: Double, calls: Double)] {
        let keys = CommKind.allCases.flatMap { k in Self.groupNames.map { CommCounter.Key(kind: k, group: $0) } }
        var v = keys.flatMap { [Double(counter.bytes[$0] ?? 0), Double(counter.calls[$0] ?? 0)] }
        let world = groups.world
        world.untimed { world.allReduce(&v) }
        var out: [CommCounter.Key: (bytes: Double, calls: Double)] = [:]
        for (i, k) in keys.enumerated() where v[2 * i + 1] > 0 { out[k] = (v[2 * i], v[2 * i + 1]) }
        return out
    }

    /// Per collective kind and group ("all-reduce/tp"): rank 0's bytes and calls, and the
    /// bytes and calls of all ranks together. Training traffic only (not bookkeeping).
    func commBytes() -> [String: Any] {
        var out: [String: Any] = [:]
        for (key, total) in commTotals {
            out["\(key.kind.rawValue)/\(key.group)"] = ["bytes": counter.bytes[key] ?? 0, "calls": counter.calls[key] ?? 0,
                                                         "bytes_all_ranks": Int(total.bytes), "calls_all_ranks": Int(total.calls)]
        }
        return out
    }

    /// The machine-readable result of the run.
    public func summary() -> [String: Any] {
        let topo = groups.topology, c = config.model
        let losses = records.map(\.loss)
        var totalLoad = Array(repeating: Array(repeating: 0, count: c.experts), count: c.layers)
        var dropped = 0, assignments = 0
        for r in records {
            for l in r.load.indices { for e in r.load[l].indices { totalLoad[l][e] += r.load[l][e] } }
            dropped += r.dropped; assignments += r.assignments
        }
        let moe = moeLayers
        var out: [String: Any] = [
            "world_size": topo.world, "tp": topo.tp, "pp": topo.pp, "dp": topo.dp, "ep": topo.ep,
            "steps": records.count,
            "losses": losses,
            "aux_losses": records.map(\.aux),
            "grad_norms": records.map(\.gradNorm),
            "learning_rates": records.map(\.lr),
            "skipped_steps": records.filter(\.skipped).map(\.step),
            "final_loss": losses.last ?? Double.nan,
            "param_checksum": checksum,
            "zero": config.zero,
            "wall_time_s": wallSeconds,
            "tokens_per_s_wall": Double(records.reduce(0) { $0 + $1.tokens }) / max(wallSeconds, 1e-9),
            "total_params": params.layout.globalCount,
            "active_params": params.layout.activeCount(config: c),
            "local_params": params.layout.specs.reduce(0) { $0 + $1.count },
            "optimizer_state_bytes": optimizers.reduce(0) { $0 + Double($1.range.count) } * emulator.precision.optimizerBytesPerParameter,
            "comm_bytes": commBytes(),
            "global_batch": plan.globalBatch, "micro_batch_size": plan.microBatchSize, "micro_batches": plan.microBatches,
            "seq_len": c.seqLen, "seed": Int(config.seed),
            "data": data.description,
            "expert_load": [
                "moe_layers": moe,
                "per_layer_total": moe.map { totalLoad[$0] },
                "per_layer_last_step": moe.map { records.last?.load[$0] ?? [] },
                "dropped_fraction": assignments == 0 ? 0.0 : Double(dropped) / Double(assignments),
                "capacity_per_sequence": c.expertCapacity.map { $0 as Any } ?? NSNull(),
            ] as [String: Any],
        ]
        out["entropy_floor"] = data.entropyFloor(seqLen: c.seqLen).map { $0 as Any } ?? NSNull()
        let timed = records.map(\.timing)
        let n = Double(max(timed.count, 1))
        let totalTime = timed.reduce(0) { $0 + $1.stepTime }
        out["device"] = emulator.profile.name
        out["clock"] = clock.mode.name
        out["precision"] = emulator.precision.rawValue
        out["link"] = config.link
        out["gpus_per_node"] = config.gpusPerNode
        out["emulated_step_times_s"] = timed.map(\.stepTime)
        out["emulated_step_time_s"] = totalTime / n
        out["tokens_per_s_emulated"] = totalTime > 0 ? Double(records.reduce(0) { $0 + $1.tokens }) / totalTime : 0
        out["mfu"] = timed.reduce(0) { $0 + $1.mfu } / n
        out["hfu"] = timed.reduce(0) { $0 + $1.hfu } / n
        let stages = groups.topology.pp
        let perStage = (0..<stages).map { i in timed.reduce(0) { $0 + $1.bubblePerStage[i] } / n }
        out["bubble_fraction_per_stage"] = perStage
        out["bubble_fraction"] = perStage.reduce(0, +) / Double(stages)
        let simulated = (0..<stages).map { i in timed.reduce(0) { $0 + ($1.simulatedBubblePerStage.count > i ? $1.simulatedBubblePerStage[i] : 0) } / n }
        out["bubble_fraction_simulated_per_stage"] = simulated
        out["bubble_fraction_simulated"] = simulated.reduce(0, +) / Double(stages)
        // The closed form; for ZB-H1 with the forward, input- and weight-gradient times this
        // rank measured in the last step (the paper's formula assumes them known).
        func mean(_ k: Action.Kind) -> Double {
            let d = lastDurations.filter { $0.key.kind == k }.map(\.value)
            return d.isEmpty ? 1 : d.reduce(0, +) / Double(d.count)
        }
        out["bubble_fraction_closed_form"] = ClosedForm.bubble(schedule.kind, stages: stages, microbatches: plan.microBatches,
                                                              virtualStages: stagePlan.virtualStages, forward: mean(.forward),
                                                              backwardInput: mean(.backwardInput), backwardWeight: mean(.backwardWeight))
        out["pipeline_phase_s"] = timed.reduce(0) { $0 + $1.pipelinePhase } / n
        out["schedule"] = schedule.kind.rawValue
        out["virtual_stages"] = stagePlan.virtualStages
        out["pp_layers"] = stagePlan.layers.map(\.count)
        out["peak_activation_bytes_per_stage"] = peakActivationPerStage.map { $0 * emulator.precision.elementBytes }
        out["microbatch_activation_bytes"] = Double(Transformer.activationFloats(config: c, sequences: plan.microBatchSize,
            shard: Self.shard(rank: 0, topology: groups.topology, plan: stagePlan)) / stagePlan.virtualStages) * emulator.precision.elementBytes
        out["exposed_comm_fraction"] = totalTime > 0 ? timed.reduce(0) { $0 + $1.communication } / totalTime : 0
        out["time_breakdown_s"] = ["compute": timed.reduce(0) { $0 + $1.compute }, "communication": timed.reduce(0) { $0 + $1.communication },
                                   "idle": timed.reduce(0) { $0 + $1.idle }, "total": totalTime]
        out["model_flops_per_token"] = flopsPerToken
        let measuredActivations = records.map(\.peakActivationFloats).max() ?? 0
        out["memory_bytes"] = memory.roles.map { role -> [String: Any] in
            var b = role.breakdown.json
            b["role"] = role.name
            b["ranks"] = role.ranks
            b["activations_measured"] = Double(measuredActivations) * emulator.precision.elementBytes
            b["capacity"] = emulator.profile.memoryBytes
            return b
        }
        return out
    }
}
