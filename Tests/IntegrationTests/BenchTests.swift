import Foundation
import XCTest
import TestSupport

/// `moe-train bench --quick` produces well-formed output. (Benchmarks are not tests: this
/// checks the shape of the report, never a speed.)
final class BenchTests: XCTestCase {
    func testQuickBenchIsWellFormed() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.run(try Subprocess.binary, ["bench", "--quick", "--json", dir + "/b.json"],
                                   cwd: Subprocess.repoRoot, timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        let b = try Subprocess.readJSON(dir + "/b.json")
        for key in ["gemm_ratio_min", "non_gemm_fraction", "emulator_overhead_fraction", "scaling_exponent_d_model"] {
            XCTAssertNotNil(b[key] as? Double, "missing \(key)")
        }
        let breakdown = try XCTUnwrap(b["step_breakdown_s"] as? [String: Double])
        XCTAssertNotNil(breakdown["GEMM"])
        XCTAssertTrue(breakdown.values.allSatisfy { $0 >= 0 })
        let gemm = try XCTUnwrap((b["gemm"] as? [String: Any])?["shapes"] as? [[String: Any]])
        XCTAssertFalse(gemm.isEmpty)
        XCTAssertTrue(gemm.allSatisfy { ($0["ratio"] as? Double ?? 0) > 0 })
    }

    /// `bench --instructions` (what `make bench` counts under callgrind) runs its steps, prints
    /// nothing and writes nothing: callgrind's dumps are its only output.
    func testInstructionStepsRunSilently() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.run(try Subprocess.binary, ["bench", "--instructions", "--config", Subprocess.repoRoot + "/configs/tiny.json"],
                                   cwd: dir, timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.output.trimmingCharacters(in: .whitespacesAndNewlines), "")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    func testQuickCommBenchIsWellFormed() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 2, ["bench-comm", "--quick", "--json", dir + "/c.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let c = try Subprocess.readJSON(dir + "/c.json")
        XCTAssertEqual(c["np"] as? Int, 2)
        XCTAssertTrue(["block", "sleep"].contains(c["waits"] as? String ?? ""), "how the ranks waited: \(c["waits"] ?? "absent")")
        let results = try XCTUnwrap(c["results"] as? [[String: Any]])
        XCTAssertEqual(Set(results.compactMap { $0["op"] as? String }), ["all-reduce", "reduce-scatter", "all-gather", "all-to-all-v", "send-recv"])
        XCTAssertTrue(results.allSatisfy { ($0["seconds"] as? Double ?? 0) > 0 })
    }
}
