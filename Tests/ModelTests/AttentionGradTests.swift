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
        // Weights of std 0.2 on unit inputs: scores of std ~0.6, a softmax clearly not uniform
        // yet smooth enough for eps ~1e-2.
        let w = Attention.Weights(wq: randomTensor([heads * D, C], seed: seed + 1, std: 0.2),
                                  wk: randomTensor([kvHeads * D, C], seed: seed + 2, std: 0.2),
                                  wv: randomTensor([kvHeads * D, C], seed: seed + 3, std: 0.2),
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
        // Tolerance 1e-2, floor 2e-2 * max|grad| (fp32 round-off, see GradCheck.swift). eps per tensor, trading
        // fp32 noise (~1/eps) against truncation (~eps^2): q and k enter the softmax quadratically.
        let name = "attention[\(label) H\(heads) G\(kvHeads)]"
        let checks: [(String, Tensor, Tensor, Float)] = [
            ("x", x, dx, 1.5e-2), ("wq", w.wq, dw.wq, 7e-3), ("wk", w.wk, dw.wk, 5e-3),
            ("wv", w.wv, dw.wv, 1e-2), ("wo", w.wo, dw.wo, 1e-2),
        ]
        for (tensor, p, g, eps) in checks {
            assertGradient(gradCheck("\(name).\(tensor)", param: p, analytic: g, eps: eps, floorFraction: 2e-2,
                                     objective: objective), file: file, line: line)
        }
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
