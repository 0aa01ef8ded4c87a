import Model
import Tensor
import TestSupport
import XCTest

/// Rotary is linear, y = R x; its backward is `apply(inverse: true)`, which must be R^T.
final class RotaryGradTests: XCTestCase {
    let heads = 2, headDim = 8, seqLen = 5
    var n: Int { 2 * seqLen }  // two sequences, so positions wrap (t = row % T)
    var width: Int { heads * headDim }

    func testInverseIsTheBackward() {
        let rotary = Rotary(headDim: headDim, seqLen: seqLen, theta: 10000)
        let x = randomTensor([n, width], seed: 21)
        let r = randomTensor([n, width], seed: 22)
        let grad = r.copy()
        rotary.apply(grad, heads: heads, inverse: true)  // R^T r
        func objective() -> Double? {
            let y = x.copy()
            rotary.apply(y, heads: heads)
            return weightedSum(y, r)
        }
        // L is linear in x: eps 1e-2, tolerance 1e-2, floor 1e-3 * max|grad|.
        assertGradient(gradCheck("rotary.x (inverse = transpose)", param: x, analytic: grad, eps: 1e-2,
                                 floorFraction: 1e-3, objective: objective))
    }

    func testRotationIsOrthogonalAndIdentityAtPositionZero() {
        let rotary = Rotary(headDim: headDim, seqLen: seqLen, theta: 10000)
        let x = randomTensor([n, width], seed: 23)
        let y = x.copy()
        rotary.apply(y, heads: heads)
        // <Rx, Rx> = <x, x> per row, and position 0 (rows 0 and T) is not rotated.
        for row in 0..<n {
            var a = 0.0, b = 0.0
            for j in 0..<width { a += Double(x[row * width + j] * x[row * width + j]); b += Double(y[row * width + j] * y[row * width + j]) }
            XCTAssertEqual(a, b, accuracy: 1e-5 * a)
        }
        for row in [0, seqLen] { for j in 0..<width { XCTAssertEqual(y[row * width + j], x[row * width + j]) } }
        rotary.apply(y, heads: heads, inverse: true)
        for i in 0..<x.count { XCTAssertEqual(y[i], x[i], accuracy: 1e-5) }
    }
}
