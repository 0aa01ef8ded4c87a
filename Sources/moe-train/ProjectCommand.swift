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
            // The emulator's own prediction of the same run (not the account's inputs).
            let (config, world) = Projection.config(for: account)
            let p = try Projection(config: config, worldSize: world)
            let stepsToTrain = account.tokens / Double(p.tokensPerStep)
            let days = stepsToTrain * p.stepTime / 86400
            let mem = p.memory.roles.map(\.breakdown).max { $0.total < $1.total }!
            print("the emulator's prediction (1F1B, cost model of \(account.device), \(world) GPUs: TP\(config.tp) x PP\(config.pp) x DP\(world / (config.tp * config.pp)), experts over the TP ranks):")
            print(String(format: "  step %.2f s for %d tokens; pipeline bubble %.1f%% (closed form %.1f%% for P=%d, M=%d); MFU %.1f%%",
                         p.stepTime, p.tokensPerStep, 100 * p.bubble,
                         100 * Double(config.pp - 1) / Double(config.globalBatch! / (world / (config.tp * config.pp)) + config.pp - 1),
                         config.pp, config.globalBatch! / (world / (config.tp * config.pp)), 100 * p.mfu))
            print(String(format: "  memory per GPU %.1f GiB (parameters %.1f, gradients %.1f, optimizer %.1f, activations %.1f, communication %.1f) of the device's %.1f GiB",
                         mem.total / 1073741824, mem.parameters / 1073741824, mem.gradients / 1073741824, mem.optimizerState / 1073741824,
                         mem.activations / 1073741824, mem.communication / 1073741824, device.memoryBytes / 1073741824))
            print(String(format: "  %.0f steps of 13e12 tokens: %.1f days, %.3g GPU-hours, $%.1fM at $%.2f per GPU-hour",
                         stepsToTrain, days, days * 24 * Double(world), days * 24 * Double(world) * account.usdPerGPUHour / 1e6,
                         account.usdPerGPUHour))
        } catch let e as Account.Invalid {
            throw ValidationError(e.description)
        } catch let e as UsageError {
            throw ValidationError(e.description)
        }
    }
}
