import Foundation
import Resilience
import Formats
import Comm
import Model
import Parallel
import Schedule
import Plan
import Tensor

/// Runs a training job from a resolved configuration: checks it, initialises MPI, trains,
/// writes the summary, finalises.
public enum Launcher {
    /// Everything checked and resolved before MPI starts, identically on every rank.
    public struct Prepared {
        public let plan: JobPlan
        public let data: DataSource
        /// The checkpoints to resume from, newest first, checked but not yet hashed: each
        /// rank hashes its own shard after MPI starts (`chooseCheckpoint`).
        public let resume: ResumePlan
    }

    /// Builds the job's plan (which validates the input), opens the data source and lists the
    /// checkpoints to resume from. Writes nothing: the run directory is created by the trainer.
    public static func prepare(_ config: RunConfig, env: LaunchEnvironment) throws -> Prepared {
        let plan = try JobPlan(config: config, world: env.worldSize)
        do {
            let data: DataSource = config.data == "markov"
                ? MarkovSource(spec: config.markov, seed: config.seed)
                : try TextFileSource(path: config.data, seed: config.seed, seqLen: config.model.seqLen)
            guard data.maxToken < config.model.vocab else {
                throw UsageError("vocab \(config.model.vocab) is too small for the data, whose largest token is \(data.maxToken) (byte-level data needs vocab 256)")
            }
            return Prepared(plan: plan, data: data, resume: try resumePlan(plan))
        } catch let e as UsageError { throw e } catch {
            throw UsageError(String(describing: error))
        }
    }

    /// The data source in words, for the run's header.
    static func dataLines(_ data: DataSource, seqLen: Int) -> [String] {
        var lines = ["data: \(data.description)"]
        if let floor = data.entropyFloor(seqLen: seqLen) {
            lines.append(String(format: "entropy floor: %.4f nats/token (the lowest loss any model can reach on this data)", floor))
        }
        return lines
    }

    /// `--dry-run`: everything a run checks before it starts (the plan, the data, the
    /// checkpoint to resume from), printed, with nothing run or written.
    public static func dryRun(_ config: RunConfig, log: (String) -> Void) throws {
        let prepared = try prepare(config, env: LaunchEnvironment.current)
        guard LaunchEnvironment.current.rank == 0 else { return }
        for line in prepared.plan.headerLines(data: dataLines(prepared.data, seqLen: config.model.seqLen)) { log(line) }
        for entry in prepared.resume.entries {
            switch entry {
            case .skipped(let why): log("resume: would skip \(why)")
            case .candidate(let c):
                let reshard = c.writer.map { _ in ", resharded from \(c.manifest.layout) to \(Checkpoint.Layout(prepared.plan))" } ?? ""
                log("resume: would continue from \(c.path) (step \(c.step)\(reshard)) once every shard hashes to its manifest")
            case .refused(let why): log("resume: would stop at an older checkpoint: \(why)")
            }
            if case .candidate = entry { break }
        }
        log("dry run: the plan is valid; nothing was run or written")
    }

    /// Trains; returns normally on success. Throws `UsageError` for bad input: before MPI
    /// starts, or on every rank alike when hashing finds the checkpoint to resume from corrupt.
    public static func train(_ config: RunConfig, log: @escaping (String) -> Void) throws {
        let env = LaunchEnvironment.current
        let prepared = try prepare(config, env: env)
        if config.checkpointMode == .memory && config.checkpointEvery > 0 {
            // The hosts' memory must be usable before the first checkpoint needs it.
            if let problem = HostMemory.prepare(root: HostMemory.root(runDirectory: config.runDirectory)) {
                throw UsageError("--checkpoint-mode memory: cannot keep the hosts' memory: \(problem); set MOE_TRAIN_HOST_MEMORY to a writable directory of yours, ideally on a tmpfs")
            }
        }
        prepareBLAS(rank: env.rank, log: log)
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        let groups = ProcessGroups(world: world, topology: prepared.plan.topology)
        let trainer: Trainer
        let resume: ResumeReport
        do {
            trainer = try Trainer(plan: prepared.plan, groups: groups, data: prepared.data, log: log)
            resume = try Self.resume(prepared.resume, trainer: trainer, world: world, log: log)
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
            var summary = trainer.summary()
            summary.resume = resume.record
            try AtomicFile.write(try JSONText.encode(summary), to: path)
            log("summary written to \(path)")
        }
    }

    /// Ranks are processes sharing few cores: each must use exactly one BLAS thread. Then
    /// OpenBLAS's work buffer is written once (`Kernels.touchBlasWorkBuffer`).
    public static func prepareBLAS(rank: Int, log: (String) -> Void) {
        let env = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"]
        if env != "1" && rank == 0 {
            log("note: OPENBLAS_NUM_THREADS is \(env.map { "\"\($0)\"" } ?? "unset"); forcing 1 BLAS thread per rank")
        }
        Kernels.setBlasThreads(1)
        Kernels.touchBlasWorkBuffer()
        precondition(Kernels.blasThreads == 1, "OpenBLAS still uses \(Kernels.blasThreads) threads")
    }
}

extension Launcher {
    /// `moe-train comm-check`: runs every Communicator operation on the world and on the
    /// groups of a tp x pp grid and checks the results. Returns the number of checks passed.
    public static func commCheck(tp: Int, pp: Int, ep: Int, log: @escaping (String) -> Void) throws -> Bool {
        let env = LaunchEnvironment.current
        for (flag, value) in [("--tp", tp), ("--pp", pp), ("--ep", ep)] {
            do { try Validation.require(value, in: 1...max(env.worldSize, 1), flag, note: "the world has \(env.worldSize) rank(s)") } catch {
                throw UsageError(String(describing: error))
            }
        }
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
        let able = world.allGather([Int32(Communicator.couldBlock ? 1 : 0)]).reduce(0, +)
        for f in report.failures { log("FAIL \(f)") }
        if world.rank == 0 {
            let waits = "waits: \(Communicator.waitsDescription), \(able) of \(world.size) ranks could block"
            log("comm-check: \(report.checks) checks per rank on \(world.size) ranks (tp \(tp) pp \(pp) dp \(topology.dp) ep \(ep); \(waits)): "
                + (failures == 0 ? "all passed" : "\(failures) FAILED"))
        }
        return failures == 0
    }
}
