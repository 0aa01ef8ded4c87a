import Foundation
import Resilience
import Formats
import Comm
import Emulation
import Model
import Parallel
import Schedule
import Plan
import Tensor

/// The training loop: for each step, run the rank's micro-batches (forward and backward,
/// gradients accumulated), reduce gradients over the data-parallel groups (ZeRO-1:
/// reduce-scatter), clip by the global norm, step AdamW on the owned shard, gather the
/// parameters, log; at the end write the summary.
public final class Trainer {
    public let job: JobPlan
    public let config: RunConfig
    public let groups: ProcessGroups
    public let plan: BatchPlan
    public let data: DataSource
    public let model: Transformer
    public let params: Parameters
    let optimizers: [AdamW]
    public let zero: DataParallel
    public let parallel: MPIModelParallelism
    public let stagePlan: StagePlan
    public let schedule: PipelineSchedule
    let executor: PipelineExecutor
    let counter = CommCounter()
    let lrSchedule: LRSchedule
    public let emulator: EmulatorSetup
    public let clock: DeviceClock
    /// With `time_as`: the accountant that charges the timed model's kernels and messages.
    public let timedAs: TimedAs?
    /// The hooks this trainer's kernels report to (its clock), installed around each step's
    /// work by `trainStep`; a benchmark may add its profiler here.
    public var kernels: KernelContext
    public let memory: MemoryPlan
    let flopsPerToken: Double
    let log: (String) -> Void
    public private(set) var records: [StepRecord] = []
    public private(set) var wallSeconds = 0.0
    /// SHA-256 of the final parameters in the single-rank layout (set at the end of `run`).
    public internal(set) var checksum = ""
    /// Per rank, over its training loop: compute CPU seconds (the clock's), process CPU seconds,
    /// wall seconds inside communication, the loop's wall seconds; and peak resident memory in bytes.
    var resources: (computeCPU: [Double], cpu: [Double], communicationWall: [Double], loopWall: [Double], rss: [Double],
                    parameters: [Double], gradientsPeak: [Double], optimizer: [Double]) = ([], [], [], [], [], [], [], [])

    /// Largest activation footprint of a step, in elements, per pipeline stage (max over its ranks).
    var peakActivationPerStage: [Double] = []
    /// Training communication summed over all ranks, per (kind, group): bytes and calls.
    var commTotals: [CommCounter.Key: (bytes: Double, calls: Double)] = [:]

    var isLogger: Bool { groups.world.rank == 0 }

    /// `plan` is the job's plan, built (and so validated) once before MPI started.
    public init(plan job: JobPlan, groups: ProcessGroups, data: DataSource, log: @escaping (String) -> Void) throws {
        precondition(job.topology == groups.topology, "the process groups were built from another plan")
        self.job = job
        self.config = job.config
        self.groups = groups
        self.data = data
        self.emulator = job.emulator
        self.log = log
        plan = job.batch
        stagePlan = job.stages
        schedule = job.schedule
        let placement = job.placement(of: groups.world.rank)
        let layout = placement.layout
        parallel = MPIModelParallelism(groups: groups, shard: placement.shard)
        params = Parameters(layout: layout, wholeGradients: config.zero < 2, heldValues: placement.heldValues)
        if params.holdsAllValues {
            layout.initialize(params.values, seed: config.seed)
        } else {   // ZeRO-3: the whole layout drawn once, its shards kept
            let whole = Storage(count: layout.totalCount)
            layout.initialize(whole, seed: config.seed)
            var at = 0
            for r in params.heldValues { (params.values.base + at).update(from: whole.base + r.lowerBound, count: r.count); at += r.count }
        }
        model = Transformer(config: config.model, params: params, parallel: parallel, recompute: config.recompute,
                            attention: config.attention)
        zero = DataParallel(stage: config.zero, layout: layout, groups: groups, overlapGradReduce: config.overlapGradReduce,
                            overlapParamGather: config.overlapParamGather,
                            timed: job.timed.map { $0.plan.placement(of: groups.world.rank).layout })
        if config.zero >= 2 { params.gradientStore = zero }
        zero.attach(params)
        let hyper = AdamW.Hyper(beta1: config.beta1, beta2: config.beta2, eps: config.adamEps, weightDecay: config.weightDecay)
        optimizers = [zero.ownedDense, zero.ownedExpert].filter { !$0.isEmpty }.map { AdamW(layout: layout, range: $0, hyper: hyper) }
        lrSchedule = LRSchedule(peak: config.lr, minRatio: config.minLRRatio, warmup: config.warmupSteps, total: config.steps)
        // MFU, HFU, memory and the OOM check are the timed model's (`time_as`), when there is one.
        memory = job.timing.memory
        flopsPerToken = job.timing.modelFLOPsPerToken
        groups.world.addObserver(counter)
        // One process = one rank = one emulated GPU: its kernels and messages move this clock.
        clock = emulator.makeClock()
        groups.world.attach(clock: clock, floatBytes: emulator.precision.elementBytes)
        executor = PipelineExecutor(model: model, plan: stagePlan, pp: groups.pp, actions: schedule.lowered[groups.coordinates.pp],
                                    clock: clock)
        if job.timed != nil {
            let timedAs = TimedAs(job: job, rank: groups.world.rank, clock: clock)
            self.timedAs = timedAs
            kernels = KernelContext(accountant: timedAs)
            executor.timedAs = timedAs
            groups.world.setSizer { kind, group, bytes in timedAs.size(kind, group: group, bytes: bytes) }
        } else {
            timedAs = nil
            kernels = KernelContext(accountant: clock)
            groups.world.setSizer(nil)   // a trainer before this one on the same communicators may have set one
        }
        faults = FaultInjector(config: config, rank: groups.world.rank)
        // The run directory's logs are kept when the run checkpoints or runs under the
        // supervisor (which creates the directory); a plain run leaves checkpoints/ alone.
        if groups.world.rank == 0 && config.checkpointEvery > 0 {
            try FileManager.default.createDirectory(atPath: config.runDirectory, withIntermediateDirectories: true)
        }
        runLog = RunLog(dir: config.runDirectory)
    }

    /// The single-rank layout: the order of checksums and dumps.
    var singleLayout: ParameterLayout { job.singleLayout }

    /// The layout of any rank (for assembling the single-rank view).
    func layoutOf(_ rank: Int) -> ParameterLayout { job.placement(of: rank).layout }

    var moeLayers: [Int] { (0..<config.model.layers).filter { config.model.isMoE(layer: $0) } }

    // MARK: - Loop

    public func run() throws {
        if isLogger { printHeader() }
        let start = DispatchTime.now().uptimeNanoseconds
        let cpu0 = DeviceClock.seconds(CLOCK_PROCESS_CPUTIME_ID), comm0 = Communicator.communicationWallSeconds
        if startStep >= config.steps && isLogger { log("nothing to do: the checkpoint is at step \(startStep) of \(config.steps)") }
        var skippedInARow = 0
        for step in (startStep + 1)..<(config.steps + 1) {
            let record = try trainStep(step)
            records.append(record)
            if isLogger {
                if step == startStep + 1 { try runLog.event(RunEvent(.firstStep, attempt: config.attempt, step: step)) }
                try logStep(record)
            }
            if isLogger && (step == startStep + 1 || step % config.logEvery == 0 || step == config.steps) { log(format(record)) }
            // With failures injected, no rank starts the next step (where one may fail) before
            // rank 0 has logged this one: the lost-work accounting never depends on timing.
            if faults.armed { groups.world.untimed { groups.world.barrier() } }
            // Every rank sees the same global loss and gradient norm, so all stop together.
            skippedInARow = record.skipped ? skippedInARow + 1 : 0
            if skippedInARow > config.maxSkippedSteps {
                throw ExitFailure(.nonFinite, "steps \(step - skippedInARow + 1)-\(step) had a non-finite loss or gradient norm, "
                                  + "\(skippedInARow) in a row (--max-skipped-steps \(config.maxSkippedSteps)); restart from the last checkpoint")
            }
        }
        zero.finishParameterGather()   // the last step's updated parameters, complete before anything reads them
        settleCheckpointOrAbort(force: true)   // the last asynchronous save becomes a checkpoint before the run ends
        // The job is done with its hosts' memory (every rank is past its last copy).
        if config.checkpointMode == .memory && groups.world.rank == 0 { HostMemory.release(root: hostMemory.root) }
        wallSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let loopCPU = DeviceClock.seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0, loopCommunication = Communicator.communicationWallSeconds - comm0
        checksum = parameterChecksum()
        commTotals = worldCommTotals()
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let mine = [clock.computeCPUSeconds, loopCPU, loopCommunication, wallSeconds, Double(usage.ru_maxrss) * 1024,   // Linux reports KiB
                    Double(zero.peakParameterFloats), Double(zero.peakGradientFloats), Double(optimizers.reduce(0) { $0 + 2 * $1.range.count })]
        let all = groups.world.untimed { groups.world.allGather(mine) }
        func column(_ c: Int) -> [Double] { stride(from: c, to: all.count, by: mine.count).map { all[$0] } }
        resources = (column(0), column(1), column(2), column(3), column(4), column(5), column(6), column(7))
        let peak = Double(records.map(\.peakActivationFloats).max() ?? 0)
        let peaks = groups.world.untimed { groups.world.allGather([peak]) }
        peakActivationPerStage = (0..<groups.topology.pp).map { stage in
            (0..<groups.world.size).filter { groups.topology.coordinates(of: $0).pp == stage }.map { peaks[$0] }.max() ?? 0
        }
        if isLogger { printFooter() }
    }

    /// The step a resumed run continues after (0 for a fresh run).
    public internal(set) var startStep = 0
    /// The asynchronous checkpoint being persisted, if any (`--checkpoint-mode async`).
    var pendingCheckpoint: PendingCheckpoint?
    let faults: FaultInjector
    let runLog: RunLog

    /// Emulated time at which this rank started its last step, and its actions' durations.
    var lastStepStart = 0.0
    var lastDurations: [Action: Double] = [:]

    /// One optimizer step, its kernels reported to this trainer's `kernels` context only.
    public func trainStep(_ step: Int) throws -> StepRecord {
        try Kernels.with(kernels) { try trainStepInContext(step) }
    }

    func trainStepInContext(_ step: Int) throws -> StepRecord {
        settleCheckpointOrAbort(force: false)
        faults.beforeStep(step, clock: clock, log: log)
        let t0 = DispatchTime.now().uptimeNanoseconds
        lastStepStart = clock.now
        let c = config.model
        let T = c.seqLen
        let scale = LossScale(tokens: plan.globalBatch * T, sequences: plan.globalBatch)
        let clockStart = clock.now, flopsStart = clock.executedFLOPs, spanStart = clock.spans.count
        params.zeroGrads()
        zero.beginStep()
        let rankFirst = groups.coordinates.dp * plan.perRank
        // Overlapped gradient reduction starts each bucket as the backward completes it (an
        // injected NaN goes in before its bucket leaves, as it would without overlap).
        let ready: ((GradientUnit) -> Void)? = zero.overlapGradReduce && zero.stage < 2 ? { [zero, faults, params] unit in
            if zero.unit(holding: 0) == unit { faults.poison(params.grads, step: step) }
            zero.gradientsReady(unit, params.grads)
        } : nil
        let result = executor.runStep(width: c.dModel, rows: model.parallel.shard.residualRows(tokens: plan.microBatchSize * T), batch: { m in
            data.batch(step: step, first: rankFirst + m * plan.microBatchSize, count: plan.microBatchSize, seqLen: T)
        }, scale: scale, hooks: stepHooks(ready))
        zero.finishParameterGather()   // every unit was needed by the forward; nothing is left in flight
        lastDurations = result.durations
        if ready == nil { faults.poison(zero.poisonTarget(params.grads), step: step) }
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
            let values = GlobalParameters.gather(zero.wholeValues(), layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf)
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
                    let n = zero.chargedCount(owned: optimizer.range)
                    Kernels.account(flops: 16 * n, elements: n * emulator.precision.optimizerStepBytesPerParameter / emulator.precision.elementBytes)
                    optimizer.step(parameters: params.valuePointer(optimizer.range.lowerBound),
                                   gradients: zero.gradientPointer(optimizer.range.lowerBound, in: params.grads), lr: lr, gradScale: clip)
                }
            }
            zero.gatherParameters(params.values)
        }
        if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 {
            zero.finishParameterGather()   // the checkpoint holds the updated parameters
            saveCheckpoint(step)
        }
        let timing = stepTiming(start: clockStart, pipeline: result, spans: clock.spans[spanStart...],
                                executedFLOPs: clock.executedFLOPs - flopsStart, tokens: job.timing.tokensPerStep)
        let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return StepRecord(step: step, loss: loss, aux: aux, zLoss: z, gradNorm: gradNorm, lr: lr, load: stats.load,
                          dropped: stats.dropped, assignments: stats.assignments, skipped: skipped,
                          wallSeconds: wall, tokens: scale.tokens, timing: timing,
                          peakActivationFloats: result.peakActivationFloats)
    }

    /// The data-parallel side's part in a step: overlapped reduction (`ready`) and gathers
    /// (ZeRO-1 and 2), per-micro-batch reduction (ZeRO-2 and 3), gathers per pass (ZeRO-3).
    func stepHooks(_ ready: ((GradientUnit) -> Void)?) -> PipelineExecutor.Hooks {
        var h = PipelineExecutor.Hooks()
        h.gradientsReady = ready
        if zero.stage == 3 {
            h.parametersNeeded = { [zero] in zero.need($0) }
            h.parametersNeededInBackward = { [zero] in zero.need($0) }
            h.passBegins = { [zero] in zero.beginPass($0) }
            h.passEnds = { [zero] in zero.endPass() }
        } else if zero.overlapParamGather {
            h.parametersNeeded = { [zero] in zero.parametersNeeded($0) }
        }
        if zero.stage >= 2 {
            h.unitCompleted = { [zero] in zero.unitCompleted($0) }
            h.backwardCompleted = { [zero] in zero.backwardCompleted() }
        }
        return h
    }

    /// Appends the step to the run directory's step log and beats the heartbeat (rank 0).
    func logStep(_ r: StepRecord) throws {
        let t = r.timing
        let imbalance = r.imbalance(moeLayers: moeLayers)
        try runLog.step(StepLogLine(attempt: config.attempt, step: r.step, loss: r.loss, skipped: r.skipped,
                                    emulated: .init(step: t.stepTime, compute: t.compute, communication: t.communication,
                                                    idle: t.idle, checkpoint: t.checkpoint),
                                    wallSeconds: r.wallSeconds, modelFLOPs: Double(job.timing.tokensPerStep) * flopsPerToken,
                                    ranks: groups.world.size, peakFLOPS: emulator.profile.peakFLOPS,
                                    expertImbalance: imbalance?.overall, expertImbalancePerLayer: imbalance?.perLayer))
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
        let local = RankStepFigures(stage: groups.coordinates.pp, start: start, end: clock.now,
                                    pipelineStart: pipeline.start, pipelineEnd: pipeline.end,
                                    pipelineWork: pipelineWork.compute + pipelineWork.communication,
                                    compute: whole.compute, communication: whole.communication, idle: whole.idle,
                                    executedFLOPs: executedFLOPs, checkpoint: whole.io)
        let all = groups.world.untimed { groups.world.allGather(local.packed) }
        let rows = RankStepFigures.unpack(all, ranks: groups.world.size)
        let stepStart = rows.map(\.start).min()!, stepEnd = rows.map(\.end).max()!
        let phaseStart = rows.map(\.pipelineStart).min()!, phaseEnd = rows.map(\.pipelineEnd).max()!
        let phase = phaseEnd - phaseStart
        let stepTime = stepEnd - stepStart
        let stages = groups.topology.pp
        var bubble = [Double](repeating: 0, count: stages), counts = [Double](repeating: 0, count: stages)
        for r in rows where phase > 0 { bubble[r.stage] += (phase - r.pipelineWork) / phase; counts[r.stage] += 1 }
        for i in 0..<stages where counts[i] > 0 { bubble[i] /= counts[i] }
        let n = Double(rows.count)
        let peak = emulator.profile.peakFLOPS * n
        func mean(_ figure: KeyPath<RankStepFigures, Double>) -> Double { rows.reduce(0) { $0 + $1[keyPath: figure] } / n }
        return StepTiming(stepTime: stepTime, compute: mean(\.compute),
                          communication: mean(\.communication), idle: mean(\.idle),
                          checkpoint: mean(\.checkpoint),
                          bubblePerStage: bubble, pipelinePhase: phase,
                          simulatedBubblePerStage: simulatedBubble(pipeline.durations),
                          mfu: stepTime > 0 ? Double(tokens) * flopsPerToken / (stepTime * peak) : 0,
                          hfu: stepTime > 0 ? rows.reduce(0) { $0 + $1.executedFLOPs } / (stepTime * peak) : 0)
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
        // The activation a stage sends, in the timed model when there is one.
        let t = job.timing
        let rows = t.placement(of: groups.world.rank).shard.residualRows(tokens: t.batch.microBatchSize * t.model.seqLen)
        let bytes = Double(rows * t.model.dModel) * emulator.precision.elementBytes
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

}
