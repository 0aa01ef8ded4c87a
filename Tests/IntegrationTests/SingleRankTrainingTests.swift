import Foundation
import XCTest
import TestSupport

/// The foundation's acceptance runs, through real mpirun on the release binary.
final class SingleRankTrainingTests: XCTestCase {
    func summary(_ args: [String], np: Int = 1, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let dir = try Subprocess.tempDir()
        let path = dir + "/summary.json"
        let r = try Subprocess.mpirun(np: np, args + ["--summary-json", path])
        XCTAssertEqual(r.status, 0, "run failed:\n\(r.output)", file: file, line: line)
        return try Subprocess.readJSON(path)
    }

    /// Acceptance 3: 300 steps of the tiny config fall by more than 1 nat and end within
    /// 0.35 nats of the synthetic data's entropy floor.
    func testTinyConfigLearnsToNearTheEntropyFloor() throws {
        let s = try summary(["--config", "configs/tiny.json", "--steps", "300"])
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        let final = try XCTUnwrap(s["final_loss"] as? Double)
        let floor = try XCTUnwrap(s["entropy_floor"] as? Double)
        XCTAssertEqual(losses.count, 300)
        XCTAssertEqual(final, losses.last)
        print(String(format: "tiny: loss %.4f -> %.4f, floor %.4f, gap %.4f", losses[0], final, floor, final - floor))
        XCTAssertLessThan(final, losses[0] - 1.0)
        XCTAssertLessThan(final - floor, 0.35)
        XCTAssertGreaterThan(final, floor - 0.05, "a loss far below the entropy floor means the floor or the loss is wrong")
        for key in ["world_size", "tp", "pp", "dp", "ep", "steps", "param_checksum", "wall_time_s", "tokens_per_s_wall"] {
            XCTAssertNotNil(s[key], "summary lacks \(key)")
        }
        XCTAssertEqual(s["world_size"] as? Int, 1)
        XCTAssertEqual((s["param_checksum"] as? String)?.count, 64)
    }

    /// Acceptance 4: same seed, same parameters; another seed, other parameters.
    func testSameSeedSameChecksumOtherSeedOther() throws {
        let base = ["--config", "configs/tiny.json", "--steps", "12"]
        let a = try summary(base + ["--seed", "5"])
        let b = try summary(base + ["--seed", "5"])
        let c = try summary(base + ["--seed", "6"])
        let ca = try XCTUnwrap(a["param_checksum"] as? String)
        XCTAssertEqual(ca, b["param_checksum"] as? String)
        XCTAssertEqual(a["losses"] as? [Double], b["losses"] as? [Double])
        XCTAssertNotEqual(ca, c["param_checksum"] as? String)
    }

    /// The default config (16 experts, top-2, MQA, 8 layers) trains: the loss goes down.
    func testDefaultConfigTrains() throws {
        let s = try summary(["--config", "configs/default.json", "--steps", "8", "--log-every", "1"])
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        XCTAssertLessThan(losses.last!, losses.first! - 0.5, "losses: \(losses)")
        let load = try XCTUnwrap(s["expert_load"] as? [String: Any])
        let perLayer = try XCTUnwrap(load["per_layer_total"] as? [[Int]])
        XCTAssertEqual(perLayer.count, 8)
        XCTAssertEqual(perLayer[0].count, 16)
    }

    /// A text file trains too (byte level), and has no entropy floor.
    func testTextFileData() throws {
        let dir = try Subprocess.tempDir()
        let text = String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 200)
        try text.write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        let s = try summary(["--config", "configs/tiny.json", "--steps", "40", "--data", dir + "/t.txt"])
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        XCTAssertLessThan(losses.last!, losses.first! - 1.0)
        XCTAssertTrue(s["entropy_floor"] is NSNull)
    }
}
