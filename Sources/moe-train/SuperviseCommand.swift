import Resilience
import Plan
import Model
import ArgumentParser
import Foundation
import Train

/// `moe-train supervise --np N [--max-restarts R] [--hang-timeout S] -- TRAINING-FLAGS`
struct SuperviseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervise",
        abstract: "Run a training job under mpirun, restart it from its last good checkpoint when it fails, and report goodput.",
        discussion: "Example: moe-train supervise --np 4 --max-restarts 2 -- --config configs/tiny.json --tp 2 --pp 2 --checkpoint-every 5 --fail-at-step 13 --fail-rank 3"
    )
    @Option(help: "Ranks per attempt.") var np: Int
    @Option(name: .customLong("max-restarts"), help: "Restarts allowed after the first attempt.") var maxRestarts = 3
    @Option(name: .customLong("hang-timeout"), help: "Seconds without a step heartbeat after which an attempt is killed.") var hangTimeout = 60.0
    @Option(name: .customLong("summary-json"), help: "Write the whole job's summary here.") var summaryJSON: String?
    @Option(name: .customLong("mpirun-args"), help: "Extra mpirun arguments, as one string.") var mpirunArgs = ""
    @Option(name: .customLong("min-np"), help: "Elastic restarts: when slots are lost (--fail-mode lose-slot, a shrinking --hostfile), restart on the largest world of at least this many ranks that the training flags plan on, resharding from the checkpoint (fewer data-parallel replicas, the same global batch).") var minNP: Int?
    @Option(help: "An Open MPI hostfile, read again before every attempt; its slots bound the world (with --min-np, a smaller hostfile shrinks the job and a larger one grows it back).") var hostfile: String?
    @Argument(parsing: .postTerminator, help: "Training flags (after --).") var trainingFlags: [String] = []


    func validate() throws {
        do {
            try Validation.require(np, in: 1...Supervisor.maxRanks, "--np")
            try Validation.require(maxRestarts, in: 0...10_000, "--max-restarts")
            try Validation.require(hangTimeout, in: 0.001...1e7, "--hang-timeout", note: "seconds")
            if let minNP { try Validation.require(minNP, in: 1...np, "--min-np", note: "at most --np \(np)") }
            if let hostfile, !FileManager.default.isReadableFile(atPath: hostfile) {
                throw ValidationError("--hostfile \(hostfile): cannot read it")
            }
        } catch { throw ValidationError(String(describing: error)) }
    }

    func run() throws {
        // The training flags are checked here first, so that bad input fails once, not per attempt.
        let config: RunConfig
        let full: JobPlan
        do { config = try TrainCommand.parse(NegativeValues.joined(trainingFlags)).resolvedConfig(); full = try JobPlan(config: config, world: np) } catch {
            throw ValidationError("training flags: " + (error is ValidationError ? String(describing: error) : MoeTrain.message(for: error)))
        }
        guard !trainingFlags.contains("--summary-json") && !trainingFlags.contains("--attempt") else {
            throw ValidationError("pass --summary-json to supervise itself, not in the training flags; --attempt is set by the supervisor")
        }
        let binary = Installation.executablePath  // this very binary, wherever it was started from
        let options = Supervisor.Options(np: np, maxRestarts: maxRestarts, hangTimeout: hangTimeout, summaryJSON: summaryJSON,
                                         mpirunArgs: mpirunArgs.split(separator: " ").map(String.init), trainingFlags: trainingFlags,
                                         binary: binary, runDirectory: config.runDirectory, restartCostS: config.restartCostS,
                                         minNP: minNP, hostfile: hostfile, plans: { world in
                                             // A restart's world must plan and keep the global batch
                                             // (a derived one changes with the replicas).
                                             var restart = config
                                             restart.attempt = 2
                                             guard let plan = try? JobPlan(config: restart, world: world) else { return false }
                                             return plan.batch.globalBatch == full.batch.globalBatch
                                         })
        let result: Supervisor.Result
        do { result = try Supervisor(options: options) { print($0); fflush(stdout) }.run() } catch let e as UsageError {
            throw ValidationError(e.description)
        }
        if result.status != .success { throw ExitFailure(result.status, result.message) }
    }
}
