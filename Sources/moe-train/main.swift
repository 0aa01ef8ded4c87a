import Plan
import ArgumentParser
import Emulation
import Formats
import Model
import Projection
import Foundation
import Resilience
import Train
import Tensor

/// Entry point: parse, run, and turn every error into one message and the exit status of
/// its class (`ExitStatus`): bad input is printed once, by rank 0, and every rank exits 2;
/// a failure while running is printed by the rank that met it.
let launch = LaunchEnvironment.current
if !Allocation.keepLargeBuffersInHeap() && launch.rank == 0 {
    FileHandle.standardError.write(Data("moe-train: warning: glibc refused the allocator settings (mallopt); large buffers are mapped afresh\n".utf8))
}
// A rank started by mpirun stops when mpirun (or the supervisor of its job) is gone.
Lifeline.watchIfLaunched()
do {
    var command = try MoeTrain.parseAsRoot(NegativeValues.joined(Array(CommandLine.arguments.dropFirst())))
    try command.run()
} catch {
    let (status, message) = classify(error)
    if status == .success {
        print(message)
        exit(0)
    }
    if status == .badInput {
        if launch.rank == 0 {
            FileHandle.standardError.write(Data("moe-train: error: \(message)\n".utf8))
        } else {
            // mpirun aborts the job when the first rank exits non-zero, and may drop output not
            // yet forwarded: give rank 0 a moment to print the one message before we exit too.
            usleep(1_000_000)
        }
    } else if !message.isEmpty {
        let who = launch.worldSize > 1 ? "rank \(launch.rank): " : ""
        FileHandle.standardError.write(Data("moe-train: error: \(who)\(message)\n".utf8))
    }
    exit(status.rawValue)
}

/// The exit status and the one-sentence message for an error.
func classify(_ error: Error) -> (ExitStatus, String) {
    switch error {
    case let e as ExitFailure: return (e.status, e.description)
    case let e as AtomicFile.WriteError: return (e.isOutOfSpace ? .outOfSpace : .failure, e.description)
    case let e as ExitCode:
        if e == .success { return (.success, MoeTrain.fullMessage(for: error)) }
        return (ExitStatus(rawValue: e.rawValue) ?? .failure, "")
    case is UsageError, is ValidationError, is RunConfig.ConfigError, is ModelConfig.InvalidConfig, is Validation.OutOfRange,
         is Topology.InvalidLayout, is StagePlan.InvalidPlan, is PublishedRun.Invalid, is DeviceProfile.ProfileError:
        return (.badInput, oneLine(MoeTrain.message(for: error)))
    default:
        // ArgumentParser's own errors (unknown flag, bad value, --help) are bad input or a clean exit.
        if MoeTrain.exitCode(for: error) == .success { return (.success, MoeTrain.fullMessage(for: error)) }
        if MoeTrain.exitCode(for: error) == .validationFailure { return (.badInput, oneLine(MoeTrain.message(for: error))) }
        return (.failure, String(describing: error))
    }
}

/// The parser lists the choices of an option with many as an indented list; a bad-input
/// message is one line: "Please provide one of 'crash', 'hang', ...".
func oneLine(_ message: String) -> String {
    let lines = message.split(separator: "\n", omittingEmptySubsequences: true)
    guard lines.count > 1 else { return message }
    let items = lines.dropFirst().filter { $0.hasPrefix("  - ") }.map { "'\($0.dropFirst(4))'" }
    guard items.count == lines.count - 1 else { return lines.joined(separator: " ") }
    return lines[0].replacingOccurrences(of: "one of the following:", with: "one of " + items.joined(separator: ", "))
}
