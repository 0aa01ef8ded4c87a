import Foundation
import Tensor
import TestSupport
import XCTest

/// The checker itself: it passes a right gradient, fails a wrong one, and counts skips.
final class GradCheckTests: XCTestCase {
    /// f(x) = sum_i c_i x_i^3, gradient 3 c_i x_i^2.
    func cubic(_ n: Int) -> (x: Tensor, c: Tensor, grad: Tensor, f: () -> Double?) {
        let x = randomTensor([n], seed: 61), c = randomTensor([n], seed: 62)
        let grad = Tensor(zeros: [n])
        for i in 0..<n { grad[i] = 3 * c[i] * x[i] * x[i] }
        return (x, c, grad, { (0..<n).reduce(0.0) { $0 + Double(c[$1]) * pow(Double(x[$1]), 3) } })
    }

    func testAcceptsTheRightGradientAndRestoresTheInput() {
        let (x, _, grad, f) = cubic(20)
        let before = x.array
        let report = gradCheck("cubic", param: x, analytic: grad, eps: 1e-3, floorFraction: 1e-3, objective: f)
        print(report)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.checked, 20)
        XCTAssertEqual(x.array, before, "the check must restore every coordinate exactly")
    }

    func testRejectsAWrongGradient() {
        let (x, _, grad, f) = cubic(20)
        grad[7] *= 1.05  // 5% off on one coordinate
        let report = gradCheck("cubic (deliberately wrong: NOT OK expected)", param: x, analytic: grad, eps: 1e-3, floorFraction: 1e-3,
                               objective: f)
        print(report)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.worstIndex, 7)
    }

    func testSkipsCoordinatesAtDiscontinuities() {
        let (x, _, grad, f) = cubic(10)
        var calls = 0
        let report = gradCheck("cubic (every 5th call discontinuous)", param: x, analytic: grad, eps: 1e-3,
                               floorFraction: 1e-3, objective: { calls += 1; return calls % 5 == 0 ? nil : f() })
        XCTAssertEqual(report.checked + report.skipped, 10)
        XCTAssertEqual(report.skipped, 4)  // calls 5, 10, 15, 20 fall in coordinates 2, 4, 7, 9
        XCTAssertTrue(report.passed)
    }

    func testRelativeErrorFloor() {
        XCTAssertEqual(relativeError(analytic: 1, numeric: 1.01, floor: 0), 0.01 / 1.01, accuracy: 1e-12)
        XCTAssertEqual(relativeError(analytic: 1e-6, numeric: 2e-6, floor: 1e-3), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(relativeError(analytic: 0, numeric: 0, floor: 0), 0)
    }
}
