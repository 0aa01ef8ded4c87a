import Foundation
import XCTest
import TestSupport

/// The README runs of at most 4 ranks give what they gave before the JobPlan refactor:
/// Golden/readme-runs.json holds their losses, param_checksum, emulated_step_time_s and mfu,
/// recorded with the same flags (mpirun -np N moe-train FLAGS --summary-json FILE, from an
/// empty directory). Losses within 1e-6 relative; the modeled clock is deterministic, so the
/// step time and MFU within 1e-9 relative; the parameter checksum equal. A change that moves
/// any of these changes the numerics or the clock: rerecord only when that is the intent.
/// The checksums alone were rerecorded once, when GELU and the softmaxes became vectorised
/// kernels (issue 15): the same functions to within 1e-6 relative per element, so the losses
/// (within 6e-9 relative of the recording), the step times and MFU still hold, while the last
/// bits of the parameters do not. (The 16-rank default run is not kept: too slow for every
/// `make test`.)
/// They were recorded before the fused attention kernel existed, with the attention core's
/// kernels as `--attention naive` charges them: the runs pass that flag, so that this
/// test still holds the clock of the naive kernel and every other kernel to the recording
/// (the fused kernel's charges are tied to the layers by `KernelInventoryTests` and to the
/// projection by `ProjectionTests`).
final class GoldenRunTests: XCTestCase {
    static let goldenPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Golden/readme-runs.json"

    func check(_ name: String, np: Int, _ flags: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let gold = try XCTUnwrap(try Subprocess.readJSON(Self.goldenPath)[name] as? [String: Any], "no \(name) in \(Self.goldenPath)")
        let goldLosses = try XCTUnwrap(gold["losses"] as? [Double])
        let goldStep = try XCTUnwrap(gold["emulated_step_time_s"] as? Double)
        let goldMFU = try XCTUnwrap(gold["mfu"] as? Double)
        let goldChecksum = try XCTUnwrap(gold["param_checksum"] as? String)

        // Run from an empty temporary directory, as recorded: the default run directory
        // (checkpoints/<config>) is relative to it, so nothing is written into the repository.
        let dir = try Subprocess.tempDir("moe-train-golden")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = Subprocess.repoRoot + "/configs/tiny.json"
        let r = try Subprocess.mpirun(np: np, ["--config", config] + flags + ["--attention", "naive", "--summary-json", dir + "/s.json"], cwd: dir)
        XCTAssertEqual(r.status, 0, "\(name) failed:\n\(r.output)", file: file, line: line)
        guard r.status == 0 else { return }
        let s = try Subprocess.readJSON(dir + "/s.json")

        let losses = try XCTUnwrap(s["losses"] as? [Double], file: file, line: line)
        XCTAssertEqual(losses.count, goldLosses.count, "\(name): number of losses", file: file, line: line)
        for (i, (loss, expected)) in zip(losses, goldLosses).enumerated() {
            XCTAssertEqual(loss, expected, accuracy: 1e-6 * abs(expected), "\(name): loss of step \(i + 1)", file: file, line: line)
        }
        let step = try XCTUnwrap(s["emulated_step_time_s"] as? Double, file: file, line: line)
        XCTAssertEqual(step, goldStep, accuracy: 1e-9 * abs(goldStep), "\(name): emulated step time", file: file, line: line)
        let mfu = try XCTUnwrap(s["mfu"] as? Double, file: file, line: line)
        XCTAssertEqual(mfu, goldMFU, accuracy: 1e-9 * abs(goldMFU), "\(name): MFU", file: file, line: line)
        XCTAssertEqual(s["param_checksum"] as? String, goldChecksum, "\(name): param_checksum", file: file, line: line)
    }

    func testSingleRank() throws {
        try check("single", np: 1, ["--steps", "20"])
    }

    func testTensorParallel2() throws {
        try check("tp2", np: 2, ["--tp", "2", "--steps", "10"])
    }

    func testTensorParallel2ExpertParallel4() throws {
        try check("tp2ep4", np: 4, ["--tp", "2", "--ep", "4", "--steps", "10"])
    }

    func testPipeline4UnevenSplit() throws {
        try check("pp4split", np: 4, ["--layers", "8", "--pp", "4", "--pp-layers", "1,3,3,1", "--steps", "5"])
    }

    func testInterleavedPipeline() throws {
        try check("interleaved", np: 4, ["--layers", "8", "--pp", "4", "--micro-batches", "8", "--schedule", "interleaved",
                                         "--virtual-stages", "2", "--steps", "5"])
    }

    func testZeroBubbleH1WithTensorParallel() throws {
        try check("zbh1", np: 4, ["--layers", "4", "--pp", "2", "--tp", "2", "--micro-batches", "4", "--schedule", "zb-h1",
                                  "--steps", "5"])
    }
}
