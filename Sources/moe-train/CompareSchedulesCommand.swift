import Bench
import Plan
import ArgumentParser
import Foundation
import Train

/// `moe-train compare-schedules`: the same training run under every pipeline schedule.
struct CompareSchedulesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare-schedules",
        abstract: "Run GPipe, 1F1B, interleaved 1F1B and ZB-H1 on one configuration and compare their bubbles.",
        discussion: "Takes the training flags. Example: mpirun -np 4 moe-train compare-schedules --config configs/tiny.json --layers 8 --pp 4 --micro-batches 8"
    )
    @Option(help: "Directory for compare.json, trace-SCHEDULE.json and timeline-SCHEDULE.svg.") var out = "runs/compare"
    @OptionGroup var training: TrainCommand

    func run() throws {
        var config: RunConfig
        do { config = try training.resolvedConfig() } catch { throw ValidationError(String(describing: error)) }
        if training.steps == nil { config.steps = 3 }
        do {
            try ScheduleComparison.run(config, outDir: out, dryRun: training.dryRun) { print($0); fflush(stdout) }
        } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }
}
