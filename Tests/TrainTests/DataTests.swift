import Foundation
import XCTest
import Train
import Plan

final class DataTests: XCTestCase {
    /// Samples depend on (seed, step, index) only.
    func testSamplesAreDeterministicPerIndex() {
        let a = MarkovSource(spec: MarkovSpec(), seed: 1)
        let b = MarkovSource(spec: MarkovSpec(), seed: 1)
        XCTAssertEqual(a.sample(step: 3, index: 5, length: 40), b.sample(step: 3, index: 5, length: 40))
        XCTAssertNotEqual(a.sample(step: 3, index: 5, length: 40), a.sample(step: 3, index: 6, length: 40))
        XCTAssertNotEqual(a.sample(step: 3, index: 5, length: 40), MarkovSource(spec: MarkovSpec(), seed: 2).sample(step: 3, index: 5, length: 40))
        // A batch is the concatenation of its samples, independent of how it is cut.
        let whole = a.batch(step: 2, first: 0, count: 4, seqLen: 8)
        let half1 = a.batch(step: 2, first: 0, count: 2, seqLen: 8), half2 = a.batch(step: 2, first: 2, count: 2, seqLen: 8)
        XCTAssertEqual(whole.tokens, half1.tokens + half2.tokens)
        XCTAssertEqual(whole.targets, half1.targets + half2.targets)
    }

    /// The entropy floor is what the true chain's predictor scores on samples: estimate
    /// the per-token loss of the exact conditional probabilities by Monte Carlo.
    func testEntropyFloorMatchesTheChainsOwnLoss() throws {
        for order in [1, 2, 3] {
            var spec = MarkovSpec(); spec.order = order; spec.alphabet = 6; spec.branching = 3
            let src = MarkovSource(spec: spec, seed: 11)
            let T = 16
            let floor = try XCTUnwrap(src.entropyFloor(seqLen: T))
            let estimate = src.empiricalLoss(samples: 4000, seqLen: T)
            XCTAssertEqual(estimate, floor, accuracy: 0.02, "order \(order)")
            XCTAssertGreaterThan(floor, 0)
            XCTAssertLessThan(floor, log(Double(spec.branching)) + 1e-9)
        }
    }

    func testTextFileWindows() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moe-data-\(UUID()).txt").path
        try "abcdefghijklmnopqrstuvwxyz".write(toFile: path, atomically: true, encoding: .utf8)
        let src = try TextFileSource(path: path, seed: 1, seqLen: 8)
        let s = src.sample(step: 1, index: 0, length: 9)
        XCTAssertEqual(s.count, 9)
        for i in 1..<9 { XCTAssertEqual(s[i], s[i - 1] + 1, "a window is a contiguous run of bytes") }
        XCTAssertThrowsError(try TextFileSource(path: path, seed: 1, seqLen: 100))
        XCTAssertThrowsError(try TextFileSource(path: "/nonexistent", seed: 1, seqLen: 8))
    }
}
