import Foundation
import XCTest
import TestSupport

/// Bad input: one clear message from rank 0, exit status 2 on every rank, no hang.
final class BadInputTests: XCTestCase {
    func assertRejected(np: Int = 1, _ args: [String], mentions: [String], within seconds: Double = 60, environment: [String: String] = [:],
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Subprocess.mpirun(np: np, args, timeout: max(seconds * 3, 30), environment: environment)
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

    /// --checkpoint-mode memory whose host memory cannot be created (MOE_TRAIN_HOST_MEMORY
    /// under a regular file): refused before training, naming the variable, nothing written.
    func testUnusableHostMemory() throws {
        let dir = try Subprocess.tempDir()
        try "".write(toFile: dir + "/file", atomically: true, encoding: .utf8)
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--steps", "4", "--checkpoint-every", "2",
                                   "--checkpoint-mode", "memory", "--checkpoint-dir", dir + "/run"],
                           mentions: ["--checkpoint-mode memory", dir + "/file/", "MOE_TRAIN_HOST_MEMORY"],
                           environment: ["MOE_TRAIN_HOST_MEMORY": dir + "/file"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run"), "nothing is written")
    }

    /// A malformed config file on 2 ranks: both exit 2, one message.
    func testMalformedConfigFile() throws {
        let dir = try Subprocess.tempDir()
        try "{\"layers\": 2,".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        try assertRejected(np: 2, ["--config", dir + "/bad.json"], mentions: ["bad.json", "not valid JSON"])
    }

    /// A range error on 2 ranks, and an invalid pipeline grid on 4.
    func testRangeAndGridErrorsOnEveryRank() throws {
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--top-k", "0"], mentions: ["--top-k", "(got 0)"])
        try assertRejected(np: 4, ["--config", "configs/tiny.json", "--layers", "4", "--pp", "4", "--micro-batches", "6",
                                   "--global-batch", "12", "--schedule", "interleaved"], mentions: ["interleaved", "6"])
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--pp", "2", "--schedule", "zb-h2"], mentions: ["--schedule", "zb-h2"])
    }

    /// The parser's errors take the same path: one message, status 2.
    func testUnknownFlagAndBadValue() throws {
        try assertRejected(["--no-such-flag"], mentions: ["--no-such-flag"])
        try assertRejected(["--steps", "many"], mentions: ["--steps", "many"])
        try assertRejected(["--config", "configs/tiny.json", "--steps", "-1"], mentions: ["--steps", "(got -1)"])
    }

    /// `--dump-dir` naming a regular file used to hang a 2-rank job; now both ranks stop.
    func testDumpDirThatIsAFile() throws {
        let dir = try Subprocess.tempDir()
        try "x".write(toFile: dir + "/file", atomically: true, encoding: .utf8)
        try assertRejected(np: 2, ["--config", "configs/tiny.json", "--steps", "2", "--dump-step", "1", "--dump-dir", dir + "/file"],
                           mentions: ["--dump-dir", "not a directory"], within: 10)
    }

    /// The data check lives in the launcher (it opens the data source): a vocabulary smaller
    /// than the data's byte values would index past the embedding table.
    func testVocabTooSmallForTheData() throws {
        let dir = try Subprocess.tempDir()
        try #"{"vocab": 64}"#.write(toFile: dir + "/v.json", atomically: true, encoding: .utf8)
        try assertRejected(["--config", dir + "/v.json"], mentions: ["vocab 64", "largest token"])
    }
}
