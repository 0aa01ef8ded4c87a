import Foundation
import XCTest
import TestSupport

/// The emulated device clock through real runs: determinism, traces, memory, out-of-memory.
final class EmulatedTimeTests: XCTestCase {
    func run(np: Int, _ args: [String], in dir: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let r = try Subprocess.mpirun(np: np, ["--config", "configs/tiny.json", "--summary-json", dir + "/s.json"] + args)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        return try Subprocess.readJSON(dir + "/s.json")
    }

    /// Acceptance 2: modeled mode is deterministic: equal step times, byte-identical traces.
    func testModeledClockIsDeterministic() throws {
        let a = try Subprocess.tempDir(), b = try Subprocess.tempDir()
        let args = ["--steps", "4", "--tp", "2", "--ep", "2"]
        let sa = try run(np: 2, args + ["--trace", a + "/t.json"], in: a)
        let sb = try run(np: 2, args + ["--trace", b + "/t.json"], in: b)
        let ta = try Data(contentsOf: URL(fileURLWithPath: a + "/t.json"))
        let tb = try Data(contentsOf: URL(fileURLWithPath: b + "/t.json"))
        XCTAssertGreaterThan(ta.count, 1000)
        XCTAssertEqual(ta, tb, "traces differ")
        let stepA = try XCTUnwrap(sa["emulated_step_time_s"] as? Double)
        XCTAssertEqual(stepA, sb["emulated_step_time_s"] as? Double)
        XCTAssertGreaterThan(stepA, 0)
        XCTAssertEqual(sa["emulated_step_times_s"] as? [Double], sb["emulated_step_times_s"] as? [Double])
        for key in ["mfu", "hfu", "bubble_fraction", "bubble_fraction_per_stage", "exposed_comm_fraction", "device", "clock", "memory_bytes"] {
            XCTAssertNotNil(sa[key], "summary lacks \(key)")
        }
        XCTAssertEqual(sa["clock"] as? String, "modeled")
        XCTAssertEqual(sa["device"] as? String, "a100-40gb")
        // Tensor parallelism communicates: some of the step is exposed communication.
        XCTAssertGreaterThan(try XCTUnwrap(sa["exposed_comm_fraction"] as? Double), 0)
    }

    /// Acceptance 4: a 4-rank trace loads, has one track per rank, and no two spans of a
    /// track overlap.
    func testFourRankTraceHasOneTrackPerRankWithoutOverlaps() throws {
        let dir = try Subprocess.tempDir()
        _ = try run(np: 4, ["--steps", "3", "--tp", "2", "--ep", "4", "--trace", dir + "/t.json", "--trace-wall"], in: dir)
        let script = """
        import json, sys
        t = json.load(open(sys.argv[1]))
        ev = [e for e in t["traceEvents"] if e["ph"] == "X"]
        names = {e["pid"]: e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
        emulated = sorted({e["pid"] for e in ev if e["pid"] < 100000})
        overlaps = 0
        for pid in emulated:
            spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e["pid"] == pid)
            overlaps += sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1] - 1e-3)
        kinds = sorted({e["name"] for e in ev})
        print(json.dumps({"tracks": emulated, "wall_tracks": len({e["pid"] for e in ev if e["pid"] >= 100000}),
                          "overlaps": overlaps, "kinds": kinds, "named": all(p in names for p in emulated)}))
        """
        try script.write(toFile: dir + "/check.py", atomically: true, encoding: .utf8)
        let py = try Subprocess.run("/usr/bin/env", ["python3", dir + "/check.py", dir + "/t.json"])
        XCTAssertEqual(py.status, 0, py.output)
        let r = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(py.stdout.utf8)) as? [String: Any], py.output)
        XCTAssertEqual(r["tracks"] as? [Int], [0, 1, 2, 3])
        XCTAssertEqual(r["wall_tracks"] as? Int, 4)
        XCTAssertEqual(r["overlaps"] as? Int, 0)
        XCTAssertEqual(r["named"] as? Bool, true)
        let kinds = try XCTUnwrap(r["kinds"] as? [String])
        for k in ["forward", "backward", "optimizer", "all-reduce", "all-to-all"] { XCTAssertTrue(kinds.contains(k), "\(kinds)") }
    }

    /// Acceptance 5: optimizer state is 12 bytes per parameter held (fp32 master + 2 moments)
    /// in the default bf16 precision, 8 in fp32; parameters and gradients 2 and 4.
    func testMemoryTableAccounting() throws {
        let dir = try Subprocess.tempDir()
        let s = try run(np: 1, ["--steps", "1"], in: dir)
        let params = try XCTUnwrap(s["local_params"] as? Int)
        let mem = try XCTUnwrap((s["memory_bytes"] as? [[String: Any]])?.first)
        XCTAssertEqual(mem["optimizer_state"] as? Double, Double(12 * params))
        XCTAssertEqual(mem["parameters"] as? Double, Double(2 * params))
        XCTAssertEqual(mem["gradients"] as? Double, Double(2 * params))
        // The pre-run activation figure bounds what the forward really kept.
        let planned = try XCTUnwrap(mem["activations"] as? Double), measured = try XCTUnwrap(mem["activations_measured"] as? Double)
        XCTAssertGreaterThan(measured, 0.9 * planned)
        XCTAssertLessThanOrEqual(measured, planned)
        let fp32 = try run(np: 1, ["--steps", "1", "--precision", "fp32"], in: try Subprocess.tempDir())
        let mem32 = try XCTUnwrap((fp32["memory_bytes"] as? [[String: Any]])?.first)
        XCTAssertEqual(mem32["optimizer_state"] as? Double, Double(8 * params))
        XCTAssertEqual(mem32["parameters"] as? Double, Double(4 * params))
    }

    /// Acceptance 5: a model scaled past 40 GB per rank stops before allocating, exit 2,
    /// with the breakdown and the capacity; --ignore-oom is named as the way out.
    func testOutOfMemoryStopsBeforeAllocating() throws {
        let r = try Subprocess.mpirun(np: 2, ["--config", "configs/default.json", "--device", "a100-40gb",
                                              "--d-model", "8192", "--heads", "64", "--layers", "64"], timeout: 60)
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertLessThan(r.seconds, 20, "a 24 GB-per-rank model must not be allocated")
        let line = try XCTUnwrap(r.output.split(separator: "\n").first { $0.hasPrefix("moe-train: error:") })
        for word in ["out of memory", "rank 0", "optimizer state", "a100-40gb", "40.0 GiB", "--ignore-oom"] {
            XCTAssertTrue(line.contains(word), "\(word) missing from: \(line)")
        }
    }

    /// The measured clock runs and reports itself; the device profile changes modeled time.
    func testMeasuredClockAndDeviceChoice() throws {
        let m = try run(np: 1, ["--steps", "2", "--clock", "measured", "--clock-scale", "0.01"], in: try Subprocess.tempDir())
        XCTAssertEqual(m["clock"] as? String, "measured")
        XCTAssertGreaterThan(try XCTUnwrap(m["emulated_step_time_s"] as? Double), 0)
        let a100 = try run(np: 1, ["--steps", "2"], in: try Subprocess.tempDir())
        let h100 = try run(np: 1, ["--steps", "2", "--device", "h100-sxm"], in: try Subprocess.tempDir())
        XCTAssertLessThan(try XCTUnwrap(h100["emulated_step_time_s"] as? Double), try XCTUnwrap(a100["emulated_step_time_s"] as? Double))
        let bad = try Subprocess.mpirun(np: 1, ["--config", "configs/tiny.json", "--device", "tpu-v9"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.output.contains("unknown --device tpu-v9"), bad.output)
    }

    /// Inter-node links are slower: the same TP layout across a node boundary costs more.
    func testGPUsPerNodeSelectsTheLinkClass() throws {
        let intra = try run(np: 2, ["--steps", "2", "--tp", "2", "--gpus-per-node", "8"], in: try Subprocess.tempDir())
        let inter = try run(np: 2, ["--steps", "2", "--tp", "2", "--gpus-per-node", "1"], in: try Subprocess.tempDir())
        let ideal = try run(np: 2, ["--steps", "2", "--tp", "2", "--link", "ideal"], in: try Subprocess.tempDir())
        let ti = try XCTUnwrap(intra["emulated_step_time_s"] as? Double)
        let tx = try XCTUnwrap(inter["emulated_step_time_s"] as? Double)
        let t0 = try XCTUnwrap(ideal["emulated_step_time_s"] as? Double)
        XCTAssertLessThan(t0, ti)
        XCTAssertLessThan(ti, tx)
        XCTAssertEqual(try XCTUnwrap(ideal["exposed_comm_fraction"] as? Double), 0, accuracy: 1e-12)
    }
}
