import Projection
import Plan
import Model
import ArgumentParser
import Foundation
import Train

/// `moe-train project-layout --world N TRAINING-FLAGS`: one step of a training configuration
/// projected from shapes, cost model and schedule simulation, without MPI or allocation.
struct ProjectLayoutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project-layout",
        abstract: "Project one training step of a configuration and layout (no MPI, nothing allocated)."
    )
    @Option(help: "Ranks (emulated GPUs) of the layout.") var world: Int
    @Option(name: .customLong("json"), help: "Write the projection as JSON here.") var json: String?
    @OptionGroup var training: TrainCommand

    func validate() throws {
        do { try Validation.require(world, in: 1...Validation.maxCount, "--world") } catch {
            throw ValidationError(String(describing: error))
        }
    }

    func run() throws {
        do {
            let config = try training.resolvedConfig()
            let p = try Projection(config: config, worldSize: world)
            if let t = config.timeAs { print("the timed model (time_as: \(t.summary)), as a run of this configuration charges it") }
            print(String(format: "projected step: %.6f ms emulated, pipeline phase %.6f ms, bubble %.1f%% (per stage %@), MFU %.3f%%",
                         p.stepTime * 1e3, p.pipelinePhase * 1e3, 100 * p.bubble,
                         p.bubblePerStage.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " "), 100 * p.mfu))
            for r in p.memory.roles {
                print("memory \(r.name): \(Int(r.breakdown.total)) bytes")
            }
            if let json {
                let out: [String: Any] = ["step_time_s": p.stepTime, "pipeline_phase_s": p.pipelinePhase, "bubble_fraction": p.bubble,
                                          "bubble_fraction_per_stage": p.bubblePerStage, "mfu": p.mfu,
                                          "memory_bytes_per_gpu": p.memory.roles.map(\.breakdown.total).max() ?? 0]
                try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
            }
        } catch let e as UsageError {
            throw ValidationError(e.description)
        } catch {
            throw ValidationError(String(describing: error))
        }
    }
}
