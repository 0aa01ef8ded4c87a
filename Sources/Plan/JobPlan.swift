import Foundation
import Emulation
import Model
import Schedule

/// The plan of a run, built once from (configuration, world size) and read by everyone:
/// training, `project`, `project-layout`, `export`, `compare-schedules`, `bench` and the
/// resume checks. It holds the rank grid, the batch plan, the stage plan, the lowered and
/// validated schedule, the emulated device, the memory plan and the placement of every
/// rank. Building it is the one place input is validated: every rule that can fail on
/// what the user typed throws a `UsageError` naming the flag or key and its value, before
/// anything is allocated or written.
public struct JobPlan: Sendable {
    /// What the plan is for: a run that executes (message tags bound the schedule, the
    /// memory plan must fit unless --ignore-oom) or a projection that only costs it.
    public enum Purpose: Sendable, Equatable {
        case training
        case projection
    }

    public let config: RunConfig
    public let purpose: Purpose
    public let topology: Topology
    public let batch: BatchPlan
    public let stages: StagePlan
    public let schedule: PipelineSchedule
    public private(set) var emulator: EmulatorSetup
    public let memory: MemoryPlan
    /// Model FLOPs per token of training (the numerator of MFU).
    public let modelFLOPsPerToken: Double
    /// The single-rank layout: the order of checksums, dumps and exports.
    public let singleLayout: ParameterLayout
    /// With `time_as`: the plan of the timed model (same layout, layers, experts and
    /// micro-batch count; the target's dimensions), which the clock, MFU and memory use.
    public let timed: TimedModel?

    /// The plan whose shapes the emulated clock charges: the timed model's, or this one.
    public var timing: JobPlan { timed?.plan ?? self }

    /// A box for the timed model's plan (a plan cannot hold a plan inline).
    public final class TimedModel: Sendable {
        public let plan: JobPlan
        public let target: TimingTarget
        init(plan: JobPlan, target: TimingTarget) { self.plan = plan; self.target = target }
    }

    public var model: ModelConfig { config.model }
    public var world: Int { topology.world }
    /// Tokens of one optimizer step over all data-parallel ranks.
    public var tokensPerStep: Int { batch.globalBatch * config.model.seqLen }

    /// What rank `rank` holds. Computed on demand: a projection's world can be 25,000 ranks.
    public func placement(of rank: Int) -> Placement {
        Placement(rank: rank, topology: topology, stages: stages, model: config.model, zero: config.zero,
                  sequenceParallel: config.sequenceParallel)
    }

    public init(config: RunConfig, world: Int, purpose: Purpose = .training) throws {
        do {
            try config.validate()
            try Validation.require(world, in: 1...Validation.maxCount, "the world size (ranks)")
            let topo = try Topology(world: world, tp: config.tp, pp: config.pp, dp: config.dp, ep: config.ep, zeroGroup: config.zeroGroup,
                                    model: config.model)
            if topo.zeroReplicas > 1 && config.zero == 1 && config.overlapGradReduce {
                throw UsageError("--zero-group \(topo.zeroGroup) with --zero 1 and --overlap-grad-reduce is not supported: the buckets' replica all-reduce would follow their reduce-scatter after the backward; use --zero 2 or 3, or leave out the overlap")
            }
            if topo.pp > 1 && config.model.tieEmbeddings {
                throw UsageError("tied embeddings with --pp \(topo.pp) are not supported: the embedding (first stage) and the LM head (last stage) would need a tied-gradient all-reduce; untie them or use --pp 1")
            }
            let batch = try BatchPlan(globalBatch: config.globalBatch, microBatchSize: config.microBatchSize,
                                      microBatches: config.microBatches, dp: topo.dp)
            try Self.checkSizes(config.model, microBatchSize: batch.microBatchSize)
            let tokensPerMicroBatch = try Checked.product(batch.microBatchSize, config.model.seqLen,
                                                          what: "a micro-batch of --micro-batch-size \(batch.microBatchSize) x --seq-len \(config.model.seqLen) tokens")
            guard tokensPerMicroBatch % topo.tp == 0 else {
                throw UsageError("a micro-batch of \(batch.microBatchSize) x \(config.model.seqLen) = \(tokensPerMicroBatch) tokens does not split over --tp \(topo.tp) (expert dispatch and sequence parallelism give each tensor-parallel rank an equal block of them)")
            }
            _ = try Checked.product(batch.globalBatch, config.model.seqLen,
                                    what: "a step of --global-batch \(batch.globalBatch) x --seq-len \(config.model.seqLen) tokens")
            // Timed as another model, the layers are balanced over the stages by that model's costs
            // (the split the user is reasoning about); both models then use the same split.
            let timedConfig = config.timeAs?.timedConfig(of: config, batch: batch)
            var counts = config.ppLayers
            if counts == nil, let timedConfig {
                counts = try StagePlan(config: timedConfig.model, stages: topo.pp, virtualStages: config.virtualStages).layers.map(\.count)
            }
            let stages = try StagePlan(config: config.model, stages: topo.pp, virtualStages: config.virtualStages, counts: counts)
            if purpose == .training {
                let limits = PipelineSchedule.executorLimits
                guard batch.microBatches <= limits.microbatches else {
                    throw UsageError("--micro-batches \(batch.microBatches): at most \(limits.microbatches) micro-batches per step can run (MPI message tags); `moe-train project` has no such bound")
                }
                guard stages.virtualStageCount <= limits.virtualStages else {
                    throw UsageError("--pp \(topo.pp) x --virtual-stages \(config.virtualStages) = \(stages.virtualStageCount) virtual stages: at most \(limits.virtualStages) can run (MPI message tags)")
                }
            }
            let schedule = try PipelineSchedule(config.schedule, stages: stages.stages,
                                                virtualStages: stages.virtualStages, microbatches: batch.microBatches)
            let emulator = try EmulatorSetup.resolve(config)
            let memory = try MemoryPlan(config: config, topology: topo, plan: batch, stagePlan: stages, schedule: schedule,
                                        precision: emulator.precision)
            // The executed model is allocated for real; timed as another, that one must fit too.
            if purpose == .training && !config.ignoreOOM, let oom = memory.outOfMemory(device: emulator.profile) {
                throw UsageError(oom)
            }
            let timed = try config.timeAs.map { target in
                try Self.timedModel(target, timedConfig!, of: config, world: world, stages: stages, purpose: purpose)
            }
            // An injected failure fires on the first attempt only: a restart on fewer ranks
            // (elastic) keeps the flags but no longer has that rank.
            if config.failAtStep != nil && config.attempt == 1 && config.failRank >= topo.world {
                throw UsageError("--fail-rank \(config.failRank) does not exist: the world has \(topo.world) rank(s)")
            }
            let single = ParameterLayout(config: config.model)
            self.config = config
            self.purpose = purpose
            self.topology = topo
            self.batch = batch
            self.stages = stages
            self.schedule = schedule
            self.emulator = emulator
            self.memory = memory
            self.singleLayout = single
            self.timed = timed
            self.modelFLOPsPerToken = Plan.modelFLOPsPerToken(config.model, layout: single)
            if purpose == .training { try checkOutputPaths() }
        } catch let e as UsageError {
            throw e
        } catch {
            throw UsageError(String(describing: error))
        }
    }

    /// The plan of the timed model of `target`, checked as the run would be: its dimensions
    /// against the layout (in the words of `time_as`), and its memory against the device.
    /// `timedConfig` is the executed configuration with the target's dimensions (`TimingTarget.timedConfig`).
    static func timedModel(_ target: TimingTarget, _ timedConfig: RunConfig, of config: RunConfig, world: Int, stages: StagePlan,
                           purpose: Purpose) throws -> TimedModel {
        guard config.clock == .modeled else {
            throw UsageError("time_as needs --clock modeled: the measured clock times the executed kernels on this CPU, which cannot be timed as another model's; pass --time-as none to time the executed sizes")
        }
        guard config.schedule != .zbH1 else {
            throw UsageError("time_as with --schedule zb-h1 is not supported: the kernel inventory does not split the backward into input and weight gradients; use 1f1b, gpipe or interleaved, or --time-as none")
        }
        var t = timedConfig
        t.ppLayers = stages.layers.map(\.count)
        let plan: JobPlan
        do { plan = try JobPlan(config: t, world: world, purpose: .projection) } catch {
            throw UsageError(TimingTarget.reword(String(describing: error)))
        }
        if purpose == .training && !config.ignoreOOM, let oom = plan.memory.outOfMemory(device: plan.emulator.profile) {
            throw UsageError("time_as: the timed model (\(target.summary)) does not fit: " + oom + ", or --time-as none to time the executed sizes")
        }
        return TimedModel(plan: plan, target: target)
    }

    /// Largest parameter or activation count a plan accepts: products of the model's sizes
    /// are computed in `Int` everywhere below this, so they must stay far from overflow.
    public static let maxElements = Double(1 << 48)

    /// Estimates (upper bounds, in floating point) of the parameters and of one
    /// micro-batch's activations, refused before any exact count is computed.
    static func checkSizes(_ m: ModelConfig, microBatchSize b: Int) throws {
        let (C, V, L, H, F, E, K, T) = (Double(m.dModel), Double(m.vocab), Double(m.layers), Double(m.heads),
                                        Double(m.ffnHidden), Double(m.experts), Double(m.topK), Double(m.seqLen))
        let parameters = 2 * V * C + L * (4 * C * C + (E + 1) * 3 * C * F + C * E + 4 * C)
        guard parameters < maxElements else {
            throw UsageError(String(format: "the model is too large to plan: about %.2g parameters (at most %.2g); reduce --layers, --d-model, --experts or --ffn-hidden", parameters, maxElements))
        }
        let activations = Double(b) * T * (L * (16 * C + 6 * K * F + 2 * E + 2 * H * T) + 2 * V)
        guard activations < maxElements else {
            throw UsageError(String(format: "a micro-batch is too large to plan: about %.2g activation values (at most %.2g); reduce --micro-batch-size, --seq-len or the model", activations, maxElements))
        }
    }

    /// A file a command will write, named by `flag`: its directory must exist and it must not
    /// be a directory. Only checks; writes nothing.
    public static func checkOutputFile(_ flag: String, _ path: String) throws {
        var isDir: ObjCBool = false
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw UsageError("\(flag) \(path): directory \(dir) does not exist")
        }
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw UsageError("\(flag) \(path) is a directory; name a file")
        }
    }

    /// The files a training run will write: their directories must exist (or be creatable)
    /// and nothing the user already has may be overwritten. Only checks; writes nothing.
    func checkOutputPaths() throws {
        let fm = FileManager.default
        func isDirectory(_ path: String) -> Bool? {
            var isDir: ObjCBool = false
            return fm.fileExists(atPath: path, isDirectory: &isDir) ? isDir.boolValue : nil
        }
        for (flag, path) in [("--summary-json", config.summaryJSON), ("--trace", config.trace)] {
            if let path { try Self.checkOutputFile(flag, path) }
        }
        if let dir = config.dumpDir {
            if isDirectory(dir) == false { throw UsageError("--dump-dir \(dir) exists and is not a directory") }
            if let step = config.dumpStep {
                let path = dir + "/" + RunConfig.dumpFileName(step: step)
                if fm.fileExists(atPath: path) {
                    throw UsageError("--dump-dir \(dir): dump file \(path) already exists; choose another --dump-dir or remove it")
                }
            }
        }
        if config.checkpointEvery > 0 || config.checkpointDir != nil, isDirectory(config.runDirectory) == false {
            throw UsageError("--checkpoint-dir \(config.runDirectory) exists and is not a directory")
        }
    }
}

/// Overflow-checked arithmetic on sizes derived from user input: a product too large for
/// an `Int` is an input error naming what was being computed, never a trap.
public enum Checked {
    public static func product(_ factors: Int..., what: @autoclosure () -> String) throws -> Int {
        var result = 1
        for f in factors {
            let (r, overflow) = result.multipliedReportingOverflow(by: f)
            guard !overflow else { throw UsageError("\(what()) is too large to count") }
            result = r
        }
        return result
    }
}

extension JobPlan {
    /// The same plan costed on another profile of its device (calibration: `validate --fit`).
    /// Only the cost model changes; the memory plan, which does not depend on speeds, stays.
    public func costed(on profile: DeviceProfile) -> JobPlan {
        var plan = self
        plan.emulator = EmulatorSetup(profile: profile, config: config)
        return plan
    }
}
