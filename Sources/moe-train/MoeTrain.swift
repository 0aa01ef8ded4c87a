import Resilience
import ArgumentParser

struct MoeTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-train",
        abstract: "A distributed training emulator: every MPI rank plays one GPU training a small MoE transformer.",
        discussion: """
        Examples:
          mpirun -np 1 moe-train --config configs/tiny.json --steps 300 --summary-json s.json
          moe-train --config configs/default.json --d-model 128 --experts 8
        """,
        subcommands: [TrainCommand.self, SuperviseCommand.self, ExportCommand.self, GoodputSweepCommand.self, ProjectCommand.self, ProjectLayoutCommand.self, ValidateCommand.self, BenchCommand.self, BenchCommCommand.self, CompareSchedulesCommand.self, CommCheckCommand.self],
        defaultSubcommand: TrainCommand.self
    )
}
