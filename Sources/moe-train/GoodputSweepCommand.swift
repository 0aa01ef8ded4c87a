import Resilience
import Plan
import Model
import ArgumentParser
import Foundation
import Train

/// `moe-train goodput-sweep --np N --mtbf-hours H --checkpoint-every 2,5,10 -- TRAINING-FLAGS`
struct GoodputSweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "goodput-sweep",
        abstract: "Supervised runs with MTBF crashes for several checkpoint intervals, against the Young/Daly optimum."
    )
    @Option(help: "Ranks per attempt.") var np: Int
    @Option(name: .customLong("mtbf-hours"), help: "Mean time between failures of one emulated GPU, emulated hours.") var mtbfHours: Double
    @Option(name: .customLong("checkpoint-every"), help: "Comma-separated checkpoint intervals in steps.") var checkpointEvery: String
    @Option(name: .customLong("max-restarts"), help: "Restarts allowed per run.") var maxRestarts = 50
    @Option(help: "Directory for the runs (one per interval; must not exist).") var out = "runs/goodput-sweep"
    @Argument(parsing: .postTerminator, help: "Training flags (after --).") var trainingFlags: [String] = []

    func validate() throws {
        do {
            try Validation.require(np, in: 1...Supervisor.maxRanks, "--np")
            try Validation.require(mtbfHours, in: 1e-9...1e9, "--mtbf-hours")
            try Validation.require(maxRestarts, in: 0...10_000, "--max-restarts")
        } catch { throw ValidationError(String(describing: error)) }
        guard !intervals.isEmpty, intervals.allSatisfy({ $0 != nil && (1...1_000_000_000).contains($0!) }) else {
            throw ValidationError("--checkpoint-every \(checkpointEvery): expected comma-separated step counts from 1 to 1000000000, such as 2,5,10")
        }
    }

    var intervals: [Int?] { checkpointEvery.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() throws {
        let intervals = self.intervals.compactMap { $0 }
        let config: RunConfig
        let plan: JobPlan
        do { config = try TrainCommand.parse(NegativeValues.joined(trainingFlags)).resolvedConfig(); plan = try JobPlan(config: config, world: np) } catch {
            throw ValidationError("training flags: " + MoeTrain.message(for: error))
        }
        let binary = Installation.executablePath
        do {
            _ = try GoodputSweep.run(np: np, mtbfHours: mtbfHours, intervals: intervals, maxRestarts: maxRestarts,
                                     trainingFlags: trainingFlags, baseDirectory: out, binary: binary,
                                     restartCostS: config.restartCostS,
                                     persistPerSnapshot: config.checkpointMode == .async ? plan.emulator.profile.hostBandwidth / config.checkpointBandwidth : 0,
                                     mode: config.checkpointMode.rawValue) {
                print($0); fflush(stdout)
            }
        } catch let e as UsageError { throw ValidationError(e.description) }
    }
}
