import Foundation
import Comm
import Model
import Parallel
import Pipeline
import Tensor

/// Rank and world size as the MPI launcher announces them in the environment, readable
/// before MPI is initialised: bad input is rejected by every rank before any MPI call, so
/// that no rank can hang waiting for another that already gave up.
public struct LaunchEnvironment: Sendable {
    public let rank: Int
    public let worldSize: Int

    public static var current: LaunchEnvironment {
        let env = ProcessInfo.processInfo.environment
        func int(_ keys: [String]) -> Int? { keys.lazy.compactMap { env[$0].flatMap(Int.init) }.first }
        return LaunchEnvironment(rank: int(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]) ?? 0,
                                 worldSize: int(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]) ?? 1)
    }
}

/// An error in what the user asked for. Printed once by rank 0; every rank exits with status 2.
public struct UsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Runs a training job from a resolved configuration: checks it, initialises MPI, trains,
/// writes the summary, finalises.
public enum Launcher {
    /// Checks everything that can be checked without MPI and returns the data source.
    public static func preflight(_ config: RunConfig, env: LaunchEnvironment) throws -> (Topology, DataSource, EmulatorSetup) {
        let p = try prepare(config, env: env)
        return (p.topology, p.data, p.emulator)
    }

    /// Everything checked and resolved before MPI starts, identically on every rank.
    public struct Prepared {
        public let topology: Topology
        public let data: DataSource
        public let emulator: EmulatorSetup
        /// The checkpoint to resume from, and a sentence for each newer one that was skipped.
        public let resume: Checkpoint.Candidate?
        public let skipped: [String]
    }

    public static func prepare(_ config: RunConfig, env: LaunchEnvironment) throws -> Prepared {
        do {
            try config.validate()
            let topo = try Topology(world: env.worldSize, tp: config.tp, pp: config.pp, dp: config.dp, ep: config.ep,
                                    model: config.model)
            if topo.pp > 1 && config.model.tieEmbeddings {
                throw UsageError("tied embeddings with --pp \(topo.pp) are not supported: the embedding (first stage) and the LM head (last stage) would need a tied-gradient all-reduce; untie them or use --pp 1")
            }
            let plan = try BatchPlan(globalBatch: config.globalBatch, microBatchSize: config.microBatchSize,
                                     microBatches: config.microBatches, dp: topo.dp)
            let tokensPerMicroBatch = plan.microBatchSize * config.model.seqLen
            guard tokensPerMicroBatch % topo.tp == 0 else {
                throw UsageError("a micro-batch of \(plan.microBatchSize) x \(config.model.seqLen) = \(tokensPerMicroBatch) tokens does not split over --tp \(topo.tp) for expert dispatch")
            }
            let stagePlan: StagePlan
            let schedule: PipelineSchedule
            do {
                stagePlan = try StagePlan(config: config.model, stages: topo.pp, virtualStages: config.virtualStages, counts: config.ppLayers)
                let limits = PipelineSchedule.executorLimits
                guard plan.microBatches <= limits.microbatches, stagePlan.virtualStageCount <= limits.virtualStages else {
                    throw UsageError("at most \(limits.microbatches) micro-batches and \(limits.virtualStages) virtual stages (pp x virtual stages) can run (got \(plan.microBatches) and \(stagePlan.virtualStageCount))")
                }
                schedule = try PipelineSchedule(try config.scheduleKind(), plan: stagePlan, microbatches: plan.microBatches)
            } catch { throw UsageError(String(describing: error)) }
            let emulator = try EmulatorSetup.resolve(config)
            let memory = MemoryPlan(config: config, topology: topo, plan: plan, stagePlan: stagePlan, schedule: schedule,
                                    precision: emulator.precision)
            if !config.ignoreOOM, let oom = memory.outOfMemory(device: emulator.profile) { throw UsageError(oom) }
            let data: DataSource = config.data == "markov"
                ? MarkovSource(spec: config.markov, seed: config.seed)
                : try TextFileSource(path: config.data, seed: config.seed, seqLen: config.model.seqLen)
            guard data.maxToken < config.model.vocab else {
                throw UsageError("vocab \(config.model.vocab) is too small for the data, whose largest token is \(data.maxToken) (byte-level data needs vocab 256)")
            }
            if let dir = config.dumpDir, let step = config.dumpStep {
                let path = dir + "/" + Dump.fileName(step: step)
                if FileManager.default.fileExists(atPath: path) {
                    throw UsageError("dump file \(path) already exists; choose another --dump-dir or remove it")
                }
            }
            for (flag, path) in [("--summary-json", config.summaryJSON), ("--trace", config.trace)] {
                guard let path else { continue }
                let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
                    throw UsageError("\(flag) \(path): directory \(dir) does not exist")
                }
            }
            if config.failAtStep != nil && config.failRank >= topo.world {
                throw UsageError("--fail-rank \(config.failRank) does not exist: the world has \(topo.world) rank(s)")
            }
            if config.checkpointEvery > 0 {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: config.runDirectory, isDirectory: &isDir), !isDir.boolValue {
                    throw UsageError("--checkpoint-dir \(config.runDirectory) exists and is not a directory")
                }
                do { try FileManager.default.createDirectory(atPath: config.runDirectory, withIntermediateDirectories: true) } catch {
                    throw UsageError("cannot create the run directory \(config.runDirectory): \(error.localizedDescription)")
                }
            }
            let (resume, skipped) = try resumePoint(config, topology: topo)
            return Prepared(topology: topo, data: data, emulator: emulator, resume: resume, skipped: skipped)
        } catch let e as UsageError { throw e } catch {
            throw UsageError(String(describing: error))
        }
    }

    /// Which checkpoint to continue from: `--resume never` none; a step directory that one
    /// (it must verify); `auto` the newest one of the run directory that verifies, skipping
    /// (and reporting) torn or corrupt ones. A checkpoint of another layout or configuration
    /// stops the run with a message naming both.
    static func resumePoint(_ config: RunConfig, topology topo: Topology) throws -> (Checkpoint.Candidate?, [String]) {
        var candidate: Checkpoint.Candidate?
        var skipped: [String] = []
        switch config.resume {
        case "never":
            return (nil, [])
        case "auto":
            // A run that neither checkpoints nor names a run directory leaves checkpoints/ alone.
            guard config.checkpointEvery > 0 || config.checkpointDir != nil else { return (nil, []) }
            (candidate, skipped) = Checkpoint.newestValid(in: config.runDirectory)
        default:
            switch Checkpoint.verify(config.resume) {
            case .success(let m): candidate = Checkpoint.Candidate(step: m.step, path: config.resume, manifest: m)
            case .failure(let p): throw UsageError("--resume \(config.resume): \(p.description)")
            }
        }
        guard let c = candidate else { return (nil, skipped) }
        let mine = layout(config, topo)
        guard c.manifest.layout == mine else {
            throw UsageError("cannot resume from \(c.path): it was written with layout \(c.manifest.layout), and this run's layout is \(mine); resharding is not supported: rerun with the checkpoint's layout, or pass --resume never (or another --checkpoint-dir) to start afresh")
        }
        let hash = Checkpoint.configHash(config)
        guard c.manifest.configHash == hash else {
            throw UsageError("cannot resume from \(c.path): it was written by a run with another model, batch, optimizer, data or seed (config hash \(c.manifest.configHash), this run \(hash)); pass --resume never or another --checkpoint-dir")
        }
        return (c, skipped)
    }

    static func layout(_ c: RunConfig, _ t: Topology) -> Checkpoint.Layout {
        let plan = try? StagePlan(config: c.model, stages: t.pp, virtualStages: c.virtualStages, counts: c.ppLayers)
        return Checkpoint.Layout(world: t.world, tp: t.tp, pp: t.pp, dp: t.dp, ep: t.ep, zero: c.zero,
                                 virtualStages: c.virtualStages, ppLayers: plan?.layers.map(\.count) ?? [])
    }

    /// Trains; returns normally on success. Throws `UsageError` for bad input (before MPI starts).
    public static func train(_ config: RunConfig, log: @escaping (String) -> Void) throws {
        let env = LaunchEnvironment.current
        let prepared = try prepare(config, env: env)
        let (topology, data, emulator) = (prepared.topology, prepared.data, prepared.emulator)
        ensureSingleThreadedBLAS(rank: env.rank, log: log)
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        let groups = ProcessGroups(world: world, topology: topology)
        let trainer: Trainer
        do {
            trainer = try Trainer(config: config, groups: groups, data: data, emulator: emulator, log: log)
            if world.rank == 0 { for s in prepared.skipped { log("resume: skipped \(s)") } }
            if let r = prepared.resume { try trainer.restore(from: r) }
        } catch let e as UsageError { throw e } catch {
            throw UsageError(String(describing: error))
        }
        try trainer.run()
        if let path = config.trace {
            let text = trainer.traceJSON(wall: config.traceWall)  // collective: every rank sends its spans
            if world.rank == 0 {
                try AtomicFile.write(text, to: path)
                log("trace written to \(path) (open in https://ui.perfetto.dev or chrome://tracing)")
            }
        }
        if world.rank == 0, let path = config.summaryJSON {
            try AtomicFile.write(JSONText.encode(trainer.summary()), to: path)
            log("summary written to \(path)")
        }
    }

    /// Ranks are processes sharing few cores: each must use exactly one BLAS thread.
    static func ensureSingleThreadedBLAS(rank: Int, log: (String) -> Void) {
        let env = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"]
        if env != "1" && rank == 0 {
            log("note: OPENBLAS_NUM_THREADS is \(env.map { "\"\($0)\"" } ?? "unset"); forcing 1 BLAS thread per rank")
        }
        Kernels.setBlasThreads(1)
        precondition(Kernels.blasThreads == 1, "OpenBLAS still uses \(Kernels.blasThreads) threads")
    }
}

extension Launcher {
    /// `moe-train comm-check`: runs every Communicator operation on the world and on the
    /// groups of a tp x pp grid and checks the results. Returns the number of checks passed.
    public static func commCheck(tp: Int, pp: Int, ep: Int, log: @escaping (String) -> Void) throws -> Bool {
        let env = LaunchEnvironment.current
        // A model shape that any valid grid can hold: only the rank arithmetic is under test.
        var model = ModelConfig()
        model.layers = max(pp, 1); model.heads = max(tp, 1); model.kvHeads = 1; model.dModel = 2 * max(tp, 1)
        model.vocab = 256 * max(tp, 1); model.ffnHidden = max(tp, 1); model.experts = max(ep, 1)
        let topology: Topology
        do { topology = try Topology(world: env.worldSize, tp: tp, pp: pp, ep: ep, model: model) } catch {
            throw UsageError(String(describing: error))
        }
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        let report = CommCheck.run(world: world, topology: topology)
        let failures = world.allGather([Int32(report.failures.count)]).reduce(0, +)
        for f in report.failures { log("FAIL \(f)") }
        if world.rank == 0 {
            log("comm-check: \(report.checks) checks per rank on \(world.size) ranks (tp \(tp) pp \(pp) dp \(topology.dp) ep \(ep)): "
                + (failures == 0 ? "all passed" : "\(failures) FAILED"))
        }
        return failures == 0
    }
}
