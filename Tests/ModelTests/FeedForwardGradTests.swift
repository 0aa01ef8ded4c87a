import Foundation
import Model
import Tensor
import TestSupport
import XCTest

/// MLP backward (x, w_up, w_down; SwiGLU also w_gate) against central differences of
/// L = sum r * FFN(x).
final class FeedForwardGradTests: XCTestCase {
    func testSwiGLUGradients() {
        let n = 6, C = 8, F = 12
        let x = randomTensor([n, C], seed: 41)
        // Gate pre-activations ~ N(0, 2): silu is exercised on both sides of its minimum.
        let wUp = randomTensor([F, C], seed: 42, std: 0.5)
        let wGate = randomTensor([F, C], seed: 45, std: 0.5)
        let wDown = randomTensor([C, F], seed: 43, std: 0.3)
        let r = randomTensor([n, C], seed: 44)
        let cache = FeedForward.forward(x, wUp: wUp, wDown: wDown, wGate: wGate, y: Tensor(zeros: [n, C]))
        let dx = Tensor(zeros: [n, C]), dwUp = Tensor(zeros: [F, C]), dwDown = Tensor(zeros: [C, F]), dwGate = Tensor(zeros: [F, C])
        FeedForward.backward(cache, wUp: wUp, wDown: wDown, wGate: wGate, dy: r, dwUp: dwUp, dwDown: dwDown, dwGate: dwGate,
                             dx: dx, accumulate: false)
        func objective() -> Double? {
            let y = Tensor(zeros: [n, C])
            _ = FeedForward.forward(x, wUp: wUp, wDown: wDown, wGate: wGate, y: y)
            return weightedSum(y, r)
        }
        // SwiGLU's value: a = silu(g) * h at one element, by hand.
        let (g0, h0) = ((0..<C).reduce(Float(0)) { $0 + x[$1] * wGate[$1] }, (0..<C).reduce(Float(0)) { $0 + x[$1] * wUp[$1] })
        XCTAssertEqual(cache.activation(0), g0 / (1 + expf(-g0)) * h0, accuracy: 1e-5)
        assertGradient(gradCheck("swiglu.x", param: x, analytic: dx, eps: 1e-2, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("swiglu.w_up", param: wUp, analytic: dwUp, eps: 3e-3, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("swiglu.w_gate", param: wGate, analytic: dwGate, eps: 3e-3, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("swiglu.w_down", param: wDown, analytic: dwDown, eps: 1e-2, floorFraction: 2e-2, objective: objective))
    }

    func testGradients() {
        let n = 6, C = 8, F = 12
        let x = randomTensor([n, C], seed: 31)
        // Pre-activations ~ N(0, 2): the GELU is exercised on both sides of its bend.
        let wUp = randomTensor([F, C], seed: 32, std: 0.5)
        let wDown = randomTensor([C, F], seed: 33, std: 0.3)
        let r = randomTensor([n, C], seed: 34)
        let cache = FeedForward.forward(x, wUp: wUp, wDown: wDown, y: Tensor(zeros: [n, C]))
        let dx = Tensor(zeros: [n, C]), dwUp = Tensor(zeros: [F, C]), dwDown = Tensor(zeros: [C, F])
        FeedForward.backward(cache, wUp: wUp, wDown: wDown, dy: r, dwUp: dwUp, dwDown: dwDown, dx: dx, accumulate: false)

        func objective() -> Double? {
            let y = Tensor(zeros: [n, C])
            _ = FeedForward.forward(x, wUp: wUp, wDown: wDown, y: y)
            return weightedSum(y, r)
        }
        // Tolerance 1e-2, floor 2e-2 * max|grad| (fp32 round-off, see GradCheck.swift). eps 1e-2, except
        // 3e-3 for w_up, whose perturbation goes through the GELU's curvature.
        assertGradient(gradCheck("ffn.x", param: x, analytic: dx, eps: 1e-2, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("ffn.w_up", param: wUp, analytic: dwUp, eps: 3e-3, floorFraction: 2e-2, objective: objective))
        assertGradient(gradCheck("ffn.w_down", param: wDown, analytic: dwDown, eps: 1e-2, floorFraction: 2e-2,
                                 objective: objective))
    }
}
