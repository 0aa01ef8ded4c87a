import Plan
import ArgumentParser
import Foundation
import Train

/// `moe-train comm-check`: checks every MPI operation moe-train uses, on this launch's ranks.
struct CommCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm-check",
        abstract: "Check every Communicator operation over MPI on the world and its tp/pp/dp/ep groups."
    )
    @Option(help: "Tensor-parallel group size for the sub-group checks.") var tp = 1
    @Option(help: "Pipeline stages for the sub-group checks.") var pp = 1
    @Option(help: "Expert-parallel group size for the sub-group checks.") var ep = 1

    func run() throws {
        let ok: Bool
        do { ok = try Launcher.commCheck(tp: tp, pp: pp, ep: ep) { print($0); fflush(stdout) } } catch let e as UsageError {
            throw ValidationError(e.description)
        }
        if !ok { throw ExitCode(1) }
    }
}
