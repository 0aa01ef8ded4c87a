import Plan
import ArgumentParser
import Foundation
import Train

/// `moe-train export --checkpoint DIR --out model.safetensors`
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Consolidate a sharded checkpoint into one safetensors file in the single-rank layout."
    )
    @Option(help: "A checkpoint step directory, or a run directory (its newest valid checkpoint).") var checkpoint: String
    @Option(help: "Output safetensors file (must not exist).") var out: String

    func run() throws {
        do { try Export.run(checkpoint: checkpoint, out: out) { print($0) } } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }
}
