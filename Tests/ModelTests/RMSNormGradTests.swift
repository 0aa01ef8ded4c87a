import Model
import Tensor
import TestSupport
import XCTest

/// RMSNorm backward against central differences of L = sum r * RMSNorm(x; w).
final class RMSNormGradTests: XCTestCase {
    let n = 6, c = 8
    let normEps: Float = 1e-5

    func testInputAndWeightGradients() {
        let x = randomTensor([n, c], seed: 1)
        let w = randomTensor([c], seed: 2, std: 0.3, mean: 1)
        let r = randomTensor([n, c], seed: 3)
        let y = Tensor(zeros: [n, c]), rstd = Tensor(zeros: [n])
        RMSNorm.forward(x, w, eps: normEps, y: y, rstd: rstd)
        let dx = Tensor(zeros: [n, c]), dw = Tensor(zeros: [c])
        RMSNorm.backward(x, w, rstd: rstd, dy: r, dx: dx, dw: dw, accumulate: false)

        func objective() -> Double? {
            let y = Tensor(zeros: [n, c]), rstd = Tensor(zeros: [n])
            RMSNorm.forward(x, w, eps: normEps, y: y, rstd: rstd)
            return weightedSum(y, r)
        }
        // eps 1e-2 on O(1) values; tolerance 1e-2, floor 2e-2 * max|grad| (fp32 round-off, see GradCheck.swift).
        assertGradient(gradCheck("rmsnorm.x", param: x, analytic: dx, eps: 1e-2, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("rmsnorm.w", param: w, analytic: dw, eps: 1e-2, floorFraction: 2e-2, objective: objective))
    }

    /// `accumulate` adds the input gradient; the weight gradient always accumulates.
    func testAccumulateAddsToExistingGradients() {
        let x = randomTensor([n, c], seed: 11)
        let w = randomTensor([c], seed: 12, std: 0.3, mean: 1)
        let dy = randomTensor([n, c], seed: 13)
        let y = Tensor(zeros: [n, c]), rstd = Tensor(zeros: [n])
        RMSNorm.forward(x, w, eps: normEps, y: y, rstd: rstd)
        let dxPlain = Tensor(zeros: [n, c]), dwPlain = Tensor(zeros: [c])
        RMSNorm.backward(x, w, rstd: rstd, dy: dy, dx: dxPlain, dw: dwPlain, accumulate: false)

        let dxPrior = randomTensor([n, c], seed: 14), dwPrior = randomTensor([c], seed: 15)
        let dx = dxPrior.copy(), dw = dwPrior.copy()
        RMSNorm.backward(x, w, rstd: rstd, dy: dy, dx: dx, dw: dw, accumulate: true)
        for i in 0..<dx.count { XCTAssertEqual(dx[i], dxPrior[i] + dxPlain[i], accuracy: 1e-6) }
        for i in 0..<dw.count { XCTAssertEqual(dw[i], dwPrior[i] + dwPlain[i], accuracy: 1e-5) }

        // Without `accumulate` the input gradient is overwritten, whatever it held.
        let dxOver = randomTensor([n, c], seed: 16)
        RMSNorm.backward(x, w, rstd: rstd, dy: dy, dx: dxOver, dw: Tensor(zeros: [c]), accumulate: false)
        XCTAssertEqual(dxOver.array, dxPlain.array)
    }
}
