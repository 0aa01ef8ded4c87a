import ArgumentParser
import Foundation
import Pipeline
import Train

/// `moe-train project --config configs/gpt4-account.json`: the background account's run,
/// recomputed. This build prints the account's own arithmetic; the emulator's prediction of
/// the same run (schedule simulation with the cost model) is the projection issue's next part.
struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Recompute the background account's training run (parameters, FLOPs, days, cost) from its figures."
    )
    @Option(help: "The account's figures (JSON with model, training and sources).") var config = "configs/gpt4-account.json"
    @Option(name: .customLong("usd-per-gpu-hour"), help: "Price per GPU-hour (default: the account's).") var usdPerGPUHour: Double?

    func run() throws {
        do {
            var account = try Account.load(config)
            if let p = usdPerGPUHour { account.usdPerGPUHour = p }
            let device = try EmulatorSetup.findProfile(account.device)
            let alt = try EmulatorSetup.findProfile(account.altDevice)
            for line in account.report(peak: device.peakFLOPS, altPeakBF16: alt.peakFLOPS, altPeakFP8: alt.peakFLOPSFP8 ?? .nan) {
                print(line)
            }
        } catch let e as Account.Invalid {
            throw ValidationError(e.description)
        } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }
}
