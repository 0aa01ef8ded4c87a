import Plan
import ArgumentParser
import Foundation
import Train

/// Entry point: parse, run, and turn every user error into one message from rank 0 and
/// exit status 2 on every rank (ArgumentParser's own codes are remapped).
let launch = LaunchEnvironment.current
do {
    var command = try MoeTrain.parseAsRoot(NegativeValues.joined(Array(CommandLine.arguments.dropFirst())))
    try command.run()
} catch {
    let code = MoeTrain.exitCode(for: error)
    if code == .success {
        print(MoeTrain.fullMessage(for: error))
        exit(0)
    }
    if launch.rank == 0 {
        let message = MoeTrain.message(for: error)
        FileHandle.standardError.write(Data("moe-train: error: \(message)\n".utf8))
    } else {
        // mpirun aborts the job when the first rank exits non-zero, and may drop output not
        // yet forwarded: give rank 0 a moment to print the one message before we exit too.
        usleep(1_000_000)
    }
    exit(2)
}
