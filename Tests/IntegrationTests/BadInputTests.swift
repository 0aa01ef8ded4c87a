import Foundation
import XCTest
import TestSupport

/// Bad input: one clear message from rank 0, exit status 2 on every rank, no hang.
final class BadInputTests: XCTestCase {
    func assertRejected(np: Int = 1, _ args: [String], mentions: [String], within seconds: Double = 60,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Subprocess.mpirun(np: np, args, timeout: max(seconds * 3, 30))
        XCTAssertEqual(r.status, 2, "exit status for \(args):\n\(r.output)", file: file, line: line)
        XCTAssertLessThan(r.seconds, seconds, "took \(r.seconds) s", file: file, line: line)
        let errors = r.output.components(separatedBy: "\n").filter { $0.hasPrefix("moe-train: error:") }
        XCTAssertEqual(errors.count, 1, "want exactly one error line (from rank 0), got:\n\(r.output)", file: file, line: line)
        for m in mentions {
            XCTAssertTrue(errors.first?.contains(m) ?? false, "message should mention \(m): \(errors)", file: file, line: line)
        }
        XCTAssertFalse(r.output.contains("Fatal error"), "a stack trace is not an error message", file: file, line: line)
    }

    /// Acceptance 5: 16 ranks, --tp 3: exits 2 within 10 s naming 16 and 3.
    func testWorldNotDivisibleByTP() throws {
        try assertRejected(np: 16, ["--tp", "3"], mentions: ["16", "3"], within: 10)
    }

    func testMissingConfigFile() throws {
        try assertRejected(["--config", "/nonexistent/nope.json"], mentions: ["/nonexistent/nope.json", "does not exist"])
    }

    func testMalformedConfigFile() throws {
        let dir = try Subprocess.tempDir()
        try "{\"layers\": 2,".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        try assertRejected(np: 2, ["--config", dir + "/bad.json"], mentions: ["bad.json", "not valid JSON"])
    }

    func testUnknownAndMistypedConfigKeys() throws {
        let dir = try Subprocess.tempDir()
        try "{\"layerz\": 2}".write(toFile: dir + "/a.json", atomically: true, encoding: .utf8)
        try assertRejected(["--config", dir + "/a.json"], mentions: ["layerz"])
        try "{\"layers\": \"2\"}".write(toFile: dir + "/b.json", atomically: true, encoding: .utf8)
        try assertRejected(["--config", dir + "/b.json"], mentions: ["layers", "integer"])
    }

    func testTopKZero() throws {
        try assertRejected(np: 2, ["--top-k", "0"], mentions: ["--top-k", "0"])
    }

    func testUnknownFlagAndBadValue() throws {
        try assertRejected(["--no-such-flag"], mentions: ["--no-such-flag"])
        try assertRejected(["--steps", "many"], mentions: ["many"])
    }

    func testInvalidGrids() throws {
        try assertRejected(np: 4, ["--config", "configs/tiny.json", "--tp", "3"], mentions: ["4", "3"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--layers", "1"], mentions: ["--pp 2", "1"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--tp", "2", "--heads", "3", "--d-model", "66"],
                           mentions: ["--heads 3", "--tp 2"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--ep", "3"], mentions: ["--experts 4", "--ep 3"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--ep", "4"], mentions: ["--ep 4", "tp 1 x dp 2"])
    }

    func testBatchThatDoesNotDivide() throws {
        try assertRejected(["--config", "configs/tiny.json", "--global-batch", "10", "--micro-batch-size", "4"],
                           mentions: ["10", "4"])
    }
}

extension BadInputTests {
    /// A vocabulary smaller than the data's byte values would index past the embedding table.
    func testVocabTooSmallForTheData() throws {
        let dir = try Subprocess.tempDir()
        try #"{"vocab": 64}"#.write(toFile: dir + "/v.json", atomically: true, encoding: .utf8)
        try assertRejected(["--config", dir + "/v.json"], mentions: ["vocab 64", "largest token"])
    }
}

extension BadInputTests {
    /// Parallelism issue, acceptance 6.
    func testExpertParallelismThatDoesNotDivideTheStage() throws {
        try assertRejected(np: 3, ["--config", "configs/tiny.json", "--ep", "2"], mentions: ["--ep 2", "tp 1 x dp 3"])
    }

    func testTensorParallelismThatDoesNotDivideTheHeads() throws {
        try assertRejected(np: 3, ["--config", "configs/tiny.json", "--tp", "3", "--heads", "4"], mentions: ["--heads 4", "--tp 3"])
    }

    /// Pipeline issue, acceptance 6.
    func testInvalidPipelineInput() throws {
        try assertRejected(np: 4, ["--config", "configs/tiny.json", "--layers", "4", "--pp", "4", "--micro-batches", "6",
                                   "--global-batch", "12", "--schedule", "interleaved"], mentions: ["interleaved", "6"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--pp-layers", "1,2"], mentions: ["--pp-layers 1,2", "sums to 3"])
        try assertRejected(np: 9, ["--config", "configs/default.json", "--pp", "9"], mentions: ["--pp 9", "8"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--pp-layers", "1,x"], mentions: ["--pp-layers"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--schedule", "zb-h2"], mentions: ["--schedule"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--virtual-stages", "2"],
                           mentions: ["--virtual-stages 2", "interleaved"])
    }
}
