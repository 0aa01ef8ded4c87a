import Foundation
import XCTest
import TestSupport
import Formats

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
        // On one rank the default config's timed model does not fit: the executed sizes are timed.
        let s = try summary(["--config", "configs/default.json", "--steps", "8", "--log-every", "1", "--time-as", "none"])
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

    /// The summary a real run writes decodes as the typed `RunSummary` (every key present with
    /// its type), which writes the file back byte for byte (no key lost or added, no value
    /// changed), and its values are the JSON object's.
    func testSummaryDecodesAsTheTypedRecord() throws {
        let dir = try Subprocess.tempDir()
        let path = dir + "/summary.json"
        let r = try Subprocess.mpirun(np: 1, ["--config", "configs/tiny.json", "--steps", "3", "--summary-json", path])
        XCTAssertEqual(r.status, 0, r.output)
        let typed = try RunSummary.read(path)
        XCTAssertEqual(try JSONText.encode(typed), try String(contentsOfFile: path, encoding: .utf8))
        let o = try Subprocess.readJSON(path)
        // JSONSerialization's reader can differ from the exact value in the last digit.
        func close(_ a: [Double], _ b: Any?, file: StaticString = #filePath, line: UInt = #line) {
            let b = b as? [Double] ?? []
            XCTAssertEqual(a.count, b.count, file: file, line: line)
            for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-15 * max(abs(x), 1), file: file, line: line) }
        }
        close(typed.losses, o["losses"])
        close(typed.gradNorms, o["grad_norms"])
        close(typed.emulatedStepTimesS, o["emulated_step_times_s"])
        close([typed.finalLoss, typed.mfu, typed.bubbleFraction, typed.timeBreakdownS.total],
              [o["final_loss"], o["mfu"], o["bubble_fraction"], (o["time_breakdown_s"] as? [String: Any])?["total"]].compactMap { $0 as? Double })
        XCTAssertEqual(typed.paramChecksum, o["param_checksum"] as? String)
        XCTAssertEqual(typed.steps, o["steps"] as? Int)
        XCTAssertEqual(typed.worldSize, o["world_size"] as? Int)
        XCTAssertEqual(typed.schedule, o["schedule"] as? String)
        XCTAssertEqual(typed.seed, (o["seed"] as? NSNumber)?.uint64Value)
        XCTAssertEqual(typed.entropyFloor.map { [$0] } ?? [], [o["entropy_floor"] as? Double].compactMap { $0 })
        let load = try XCTUnwrap(o["expert_load"] as? [String: Any])
        XCTAssertEqual(typed.expertLoad.perLayerTotal, load["per_layer_total"] as? [[Int]])
        XCTAssertEqual(typed.expertLoad.capacityPerSequence, load["capacity_per_sequence"] as? Int)
        let memory = try XCTUnwrap(o["memory_bytes"] as? [[String: Any]])
        XCTAssertEqual(typed.memoryBytes.map(\.role), memory.compactMap { $0["role"] as? String })
        XCTAssertEqual(typed.memoryBytes.map(\.total), memory.compactMap { $0["total"] as? Double })
    }
}
