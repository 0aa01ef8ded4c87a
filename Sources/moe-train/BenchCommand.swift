import Bench
import Plan
import ArgumentParser
import Foundation
import Formats
import Train

/// `moe-train bench`: single-process measurements for `make bench` (GEMM path, step
/// breakdown, emulator overhead, scaling). `make bench` runs the rest under mpirun.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the GEMM path, the step's CPU time by kernel category, the emulator's overhead and scaling (see make bench)."
    )
    @Flag(help: "A fast, small run (checks that the output is well formed).") var quick = false
    @Option(help: "Write the measurements as JSON here.") var json: String?
    @Option(help: "Model config (default configs/default.json).") var config: String?
    @Flag(help: "Only run 3 training steps with the emulated clock and 3 without, alternating, to be counted under callgrind (make bench); prints nothing.")
    var instructions = false

    func run() throws {
        let base: RunConfig
        do { base = try config.map(ConfigFile.load) ?? ConfigFile.loadDefault() } catch { throw ValidationError(String(describing: error)) }
        if instructions {
            if quick || json != nil { throw ValidationError("--instructions runs steps for callgrind and writes nothing; drop \(quick ? "--quick" : "--json").") }
            return try Bench.instructionSteps(base: base, steps: 3)
        }
        let out = try Bench.run(base: base, quick: quick) { print($0) }
        let text = JSONText.encode(out)
        if let json { try text.write(toFile: json, atomically: true, encoding: .utf8) } else { print(text) }
    }
}

/// `mpirun -np N moe-train bench-comm`: the Communicator's latency and bandwidth.
struct BenchCommCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-comm",
        abstract: "Time every Communicator operation for 8 B to 16 MiB (run under mpirun; see make bench)."
    )
    @Flag(help: "Two sizes only.") var quick = false
    @Option(help: "Write the measurements as JSON here (rank 0).") var json: String?

    func run() throws {
        let out = CommBench.run(quick: quick) { print($0) }
        if LaunchEnvironment.current.rank == 0 {
            let text = JSONText.encode(out)
            if let json { try text.write(toFile: json, atomically: true, encoding: .utf8) } else { print(text) }
        }
    }
}
