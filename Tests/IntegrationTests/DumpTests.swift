import Foundation
import XCTest
import TestSupport

/// Acceptance 6: the dump of step N loads with Python's safetensors and holds a gradient
/// for every parameter.
final class DumpTests: XCTestCase {
    func testDumpLoadsInPythonSafetensors() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 1, ["--config", "configs/tiny.json", "--steps", "4", "--dump-step", "3",
                                              "--dump-dir", dir + "/dump", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let file = dir + "/dump/step-000003.safetensors"
        XCTAssertTrue(FileManager.default.fileExists(atPath: file))
        let script = """
        import json, sys
        import numpy as np
        from safetensors.numpy import load_file
        t = load_file(sys.argv[1])
        params = sorted(k for k in t if not k.endswith(".grad") and k not in ("tokens", "targets"))
        missing = [p for p in params if p + ".grad" not in t]
        bad = [p for p in params if t[p].shape != t[p + ".grad"].shape or t[p].dtype != np.float32]
        zero = [p for p in params if not np.any(t[p + ".grad"])]
        nonfinite = [k for k in t if k not in ("tokens", "targets") and not np.all(np.isfinite(t[k]))]
        loss = json.load(open(sys.argv[2]))
        print(json.dumps({"params": len(params), "missing": missing, "bad": bad, "zero": zero,
                          "nonfinite": nonfinite, "tokens": list(t["tokens"].shape), "targets": list(t["targets"].shape),
                          "shifted": bool((t["tokens"][:, 1:] == t["targets"][:, :-1]).all()),
                          "names": params[:3], "loss": loss["loss"], "step": loss["step"]}))
        """
        try script.write(toFile: dir + "/check.py", atomically: true, encoding: .utf8)
        let py = try Subprocess.run("/usr/bin/env", ["python3", dir + "/check.py", file, dir + "/dump/loss.json"], timeout: 120)
        XCTAssertEqual(py.status, 0, py.output)
        let result = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(py.stdout.utf8)) as? [String: Any], py.output)
        // tiny: tok_emb, 2 layers x (2 norms + 4 attention + router + w_up + w_down), norm_f, lm_head
        XCTAssertEqual(result["params"] as? Int, 1 + 2 * 9 + 2)
        XCTAssertEqual((result["missing"] as? [String])?.count, 0, "\(result)")
        XCTAssertEqual((result["bad"] as? [String])?.count, 0, "\(result)")
        XCTAssertEqual((result["nonfinite"] as? [String])?.count, 0, "\(result)")
        XCTAssertEqual((result["zero"] as? [String])?.count, 0, "every parameter gets some gradient: \(result)")
        XCTAssertEqual(result["tokens"] as? [Int], [16, 32])
        XCTAssertEqual(result["targets"] as? [Int], [16, 32])
        XCTAssertEqual(result["shifted"] as? Bool, true, "targets are the inputs shifted by one")
        XCTAssertEqual(result["step"] as? Int, 3)
        let s = try Subprocess.readJSON(dir + "/s.json")
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        XCTAssertEqual(try XCTUnwrap(result["loss"] as? Double), losses[2], accuracy: 1e-9)
    }

    func testDumpRefusesToOverwrite() throws {
        let dir = try Subprocess.tempDir()
        let args = ["--config", "configs/tiny.json", "--steps", "2", "--dump-step", "1", "--dump-dir", dir]
        XCTAssertEqual(try Subprocess.mpirun(np: 1, args).status, 0)
        let again = try Subprocess.mpirun(np: 1, args)
        XCTAssertEqual(again.status, 2, again.output)
        XCTAssertTrue(again.output.contains("already exists"), again.output)
    }
}
