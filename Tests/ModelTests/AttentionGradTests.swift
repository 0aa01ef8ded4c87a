import Model
import Tensor
import TestSupport
import XCTest

/// Causal attention backward (x, wq, wk, wv, wo) against central differences of
/// L = sum r * Attention(x), for multi-head, grouped-query and multi-query layouts.
final class AttentionGradTests: XCTestCase {
    func testMultiHeadAttention() { check(heads: 4, kvHeads: 4, label: "MHA") }
    func testGroupedQueryAttention() { check(heads: 4, kvHeads: 2, label: "GQA") }
    func testMultiQueryAttention() { check(heads: 4, kvHeads: 1, label: "MQA") }

    func check(heads: Int, kvHeads: Int, label: String, file: StaticString = #filePath, line: UInt = #line) {
        var config = ModelConfig()
        config.dModel = 16; config.heads = heads; config.kvHeads = kvHeads; config.seqLen = 5
        XCTAssertNoThrow(try config.validate())
        let B = 2, T = config.seqLen, n = B * T, C = config.dModel, D = config.headDim
        let hs = HeadSlice.full(config)
        let rotary = Rotary(headDim: D, seqLen: T, theta: config.ropeTheta)
        let seed = UInt64(100 + kvHeads)
        // Weights large enough (std 0.4 on unit inputs) that the softmax is far from uniform.
        let w = Attention.Weights(wq: randomTensor([heads * D, C], seed: seed + 1, std: 0.4),
                                  wk: randomTensor([kvHeads * D, C], seed: seed + 2, std: 0.4),
                                  wv: randomTensor([kvHeads * D, C], seed: seed + 3, std: 0.4),
                                  wo: randomTensor([C, heads * D], seed: seed + 4, std: 0.3))
        let x = randomTensor([n, C], seed: seed + 5)
        let r = randomTensor([n, C], seed: seed + 6)

        let y = Tensor(zeros: [n, C])
        let cache = Attention.forward(x, w, heads: hs, seqLen: T, rotary: rotary, y: y)
        let dw = Attention.Weights(wq: Tensor(zeros: w.wq.shape), wk: Tensor(zeros: w.wk.shape),
                                   wv: Tensor(zeros: w.wv.shape), wo: Tensor(zeros: w.wo.shape))
        let dx = Tensor(zeros: [n, C])
        Attention.backward(cache, w, heads: hs, seqLen: T, rotary: rotary, dy: r, dw: dw, dx: dx, accumulate: false)

        func objective() -> Double? {
            let y = Tensor(zeros: [n, C])
            _ = Attention.forward(x, w, heads: hs, seqLen: T, rotary: rotary, y: y)
            return weightedSum(y, r)
        }
        // eps 1e-2 on O(0.4..1) values; tolerance 1e-2, floor 1e-3 * max|grad|.
        let eps: Float = 1e-2
        let name = "attention[\(label) H\(heads) G\(kvHeads)]"
        assertGradient(gradCheck("\(name).x", param: x, analytic: dx, eps: eps, objective: objective), file: file, line: line)
        assertGradient(gradCheck("\(name).wq", param: w.wq, analytic: dw.wq, eps: eps, objective: objective), file: file, line: line)
        assertGradient(gradCheck("\(name).wk", param: w.wk, analytic: dw.wk, eps: eps, objective: objective), file: file, line: line)
        assertGradient(gradCheck("\(name).wv", param: w.wv, analytic: dw.wv, eps: eps, objective: objective), file: file, line: line)
        assertGradient(gradCheck("\(name).wo", param: w.wo, analytic: dw.wo, eps: eps, objective: objective), file: file, line: line)
    }

    /// `accumulate` adds the input gradient to what `dx` holds.
    func testAccumulateAddsInputGradient() {
        var config = ModelConfig()
        config.dModel = 8; config.heads = 2; config.kvHeads = 1; config.seqLen = 4
        let T = config.seqLen, n = 2 * T, C = config.dModel, D = config.headDim
        let hs = HeadSlice.full(config)
        let rotary = Rotary(headDim: D, seqLen: T, theta: config.ropeTheta)
        let w = Attention.Weights(wq: randomTensor([2 * D, C], seed: 1, std: 0.4), wk: randomTensor([D, C], seed: 2, std: 0.4),
                                  wv: randomTensor([D, C], seed: 3, std: 0.4), wo: randomTensor([C, 2 * D], seed: 4, std: 0.4))
        let x = randomTensor([n, C], seed: 5), dy = randomTensor([n, C], seed: 6)
        let cache = Attention.forward(x, w, heads: hs, seqLen: T, rotary: rotary, y: Tensor(zeros: [n, C]))
        func grads() -> Attention.Weights {
            Attention.Weights(wq: Tensor(zeros: w.wq.shape), wk: Tensor(zeros: w.wk.shape),
                              wv: Tensor(zeros: w.wv.shape), wo: Tensor(zeros: w.wo.shape))
        }
        let dxPlain = randomTensor([n, C], seed: 7)  // garbage that must be overwritten
        Attention.backward(cache, w, heads: hs, seqLen: T, rotary: rotary, dy: dy, dw: grads(), dx: dxPlain, accumulate: false)
        let prior = randomTensor([n, C], seed: 8)
        let dx = prior.copy()
        Attention.backward(cache, w, heads: hs, seqLen: T, rotary: rotary, dy: dy, dw: grads(), dx: dx, accumulate: true)
        for i in 0..<dx.count { XCTAssertEqual(dx[i], prior[i] + dxPlain[i], accuracy: 1e-5) }
    }
}
