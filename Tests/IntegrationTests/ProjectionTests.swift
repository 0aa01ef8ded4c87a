import Foundation
import XCTest
import TestSupport

/// `moe-train project`: the background account's arithmetic from the command line.
final class ProjectionTests: XCTestCase {
    override func setUpWithError() throws {
        guard Subprocess.binary != nil else { throw XCTSkip("MOE_TRAIN_BIN not set; run through `make test`") }
    }

    func testAccountArithmeticIsPrinted() throws {
        let bin = try XCTUnwrap(Subprocess.binary)
        let r = try Subprocess.run(bin, ["project", "--config", "configs/gpt4-account.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        for text in ["1.83e+12", "2.77e+11", "2.16e+25", "89.1 to 100.2 days", "105 days", "$21.6M", "56% of the bf16 peak", "30.5 GB"] {
            XCTAssertTrue(r.stdout.contains(text), "\(text) missing from:\n\(r.stdout)")
        }
        let bad = try Subprocess.run(bin, ["project", "--config", "/nonexistent.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(bad.status, 2, bad.output)
        XCTAssertTrue(bad.stderr.contains("cannot read /nonexistent.json"), bad.output)
    }
}
