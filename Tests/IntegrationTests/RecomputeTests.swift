import Foundation
import XCTest
import TestSupport

/// `--recompute none|selective|full` runs for real: the same numbers, more executed FLOPs
/// (HFU over MFU), less activation memory.
final class RecomputeTests: XCTestCase {
    func run(np: Int, _ flags: [String]) throws -> [String: Any] {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: np, ["--config", "configs/tiny.json", "--steps", "6", "--summary-json", dir + "/s.json"] + flags)
        XCTAssertEqual(r.status, 0, r.output)
        return try Subprocess.readJSON(dir + "/s.json")
    }

    /// On one rank and on tp 2 x pp 2 (MoE, experts over the TP ranks, 1F1B), selective and
    /// full recomputation give the losses and parameters of no recomputation exactly (the
    /// recomputed values are the forward's), execute more FLOPs for the same model FLOPs, and
    /// keep less: full least, selective less than none by the attention probabilities.
    func testRecomputationChangesTimeAndMemoryNotNumbers() throws {
        for (np, layout) in [(1, [String]()), (4, ["--tp", "2", "--pp", "2", "--ep", "2"])] {
            var summaries: [String: [String: Any]] = [:]
            for mode in ["none", "selective", "full"] { summaries[mode] = try run(np: np, layout + ["--recompute", mode]) }
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
}
