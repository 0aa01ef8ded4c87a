import Foundation
import XCTest
import TestSupport

/// `--recompute none|selective|full` and `--attention fused|naive` run for real: the same
/// numbers; recomputation executes more FLOPs (HFU over MFU) and keeps less; the fused
/// attention kernel is charged less time and keeps the softmax statistics instead of the
/// probabilities.
final class RecomputeTests: XCTestCase {
    func run(np: Int, _ flags: [String]) throws -> [String: Any] {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: np, ["--config", "configs/tiny.json", "--steps", "6", "--summary-json", dir + "/s.json"] + flags)
        XCTAssertEqual(r.status, 0, r.output)
        return try Subprocess.readJSON(dir + "/s.json")
    }

    /// On one rank and on tp 2 x pp 2 (MoE, experts over the TP ranks, 1F1B), with the naive
    /// attention kernel (which keeps the probabilities selective recomputation drops),
    /// selective and full recomputation give the losses and parameters of no recomputation
    /// exactly (the recomputed values are the forward's), execute more FLOPs for the same
    /// model FLOPs, and keep less: full least, selective less than none by the probabilities.
    /// With the fused kernel, which never keeps them, selective is no recomputation.
    func testRecomputationChangesTimeAndMemoryNotNumbers() throws {
        for (np, layout) in [(1, [String]()), (4, ["--tp", "2", "--pp", "2", "--ep", "2"])] {
            var summaries: [String: [String: Any]] = [:]
            for mode in ["none", "selective", "full"] { summaries[mode] = try run(np: np, layout + ["--recompute", mode, "--attention", "naive"]) }
            let fusedNone = try run(np: np, layout), fusedSelective = try run(np: np, layout + ["--recompute", "selective"])
            for key in ["emulated_step_time_s", "mfu", "hfu"] {
                XCTAssertEqual(fusedSelective[key] as? Double, fusedNone[key] as? Double, "\(np) ranks, fused: \(key)")
            }
            XCTAssertEqual(fusedSelective["peak_activation_bytes_per_stage"] as? [Double], fusedNone["peak_activation_bytes_per_stage"] as? [Double])
            let none = try XCTUnwrap(summaries["none"])
            func value(_ mode: String, _ key: String) throws -> Double { try XCTUnwrap(summaries[mode]?[key] as? Double, "\(mode) \(key)") }
            func peak(_ mode: String) throws -> Double {
                try XCTUnwrap((summaries[mode]?["peak_activation_bytes_per_stage"] as? [Double])?.max(), mode)
            }
            for mode in ["selective", "full"] {
                let s = try XCTUnwrap(summaries[mode])
                XCTAssertEqual(s["losses"] as? [Double], none["losses"] as? [Double], "\(np) ranks, \(mode): losses")
                XCTAssertEqual(s["param_checksum"] as? String, none["param_checksum"] as? String, "\(np) ranks, \(mode): parameters")
                XCTAssertGreaterThan(try value(mode, "hfu") / value(mode, "mfu"), try value("none", "hfu") / value("none", "mfu"),
                                     "\(np) ranks, \(mode): executed FLOPs over model FLOPs")
                XCTAssertGreaterThan(try value(mode, "emulated_step_time_s"), try value("none", "emulated_step_time_s"), "\(np) ranks, \(mode)")
                XCTAssertLessThan(try peak(mode), try peak("none"), "\(np) ranks, \(mode): peak activations")
            }
            XCTAssertLessThan(try peak("full"), try peak("selective"), "\(np) ranks")
            XCTAssertGreaterThan(try value("full", "hfu") / value("full", "mfu"), try value("selective", "hfu") / value("selective", "mfu"))
        }
    }

    /// The default fused kernel against the naive one, on 1 rank and on tp 2 x pp 2: the same
    /// losses and parameters bit for bit (the CPU computes the same function either way),
    /// a shorter emulated step (half the causal score FLOPs, no T x T traffic through HBM)
    /// and a smaller activation peak.
    func testAttentionKernelChangesTimeAndMemoryNotNumbers() throws {
        for (np, layout) in [(1, [String]()), (4, ["--tp", "2", "--pp", "2"])] {
            let fused = try run(np: np, layout), naive = try run(np: np, layout + ["--attention", "naive"])
            XCTAssertEqual(fused["losses"] as? [Double], naive["losses"] as? [Double], "\(np) ranks: losses")
            XCTAssertEqual(fused["param_checksum"] as? String, naive["param_checksum"] as? String, "\(np) ranks: parameters")
            let step = { (s: [String: Any]) in try XCTUnwrap(s["emulated_step_time_s"] as? Double) }
            XCTAssertLessThan(try step(fused), try step(naive), "\(np) ranks: emulated step")
            let peak = { (s: [String: Any]) in try XCTUnwrap((s["peak_activation_bytes_per_stage"] as? [Double])?.max()) }
            XCTAssertLessThan(try peak(fused), try peak(naive), "\(np) ranks: peak activations")
        }
    }
}
