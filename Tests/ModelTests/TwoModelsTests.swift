import Model
import Tensor
import TestSupport
import XCTest

/// Two models in one process, each with its own accountant, run interleaved (forward of one,
/// then the other, backward inside the other's context, ...): each accountant hears exactly
/// the kernels its own model ran alone, in the same order. Nothing about the kernel hooks is
/// process-wide.
final class TwoModelsTests: XCTestCase {
    struct Run {
        let model: Transformer
        let tokens: [[Int32]], targets: [[Int32]]
        let scale: LossScale
    }

    func makeRun(dModel: Int, moeEvery: Int, seed: UInt64) -> Run {
        var c = ModelConfig()
        c.vocab = 24; c.dModel = dModel; c.heads = 4; c.kvHeads = 2; c.ffnHidden = 24; c.layers = 2
        c.moeEvery = moeEvery; c.experts = 4; c.topK = 2; c.seqLen = 8
        let params = Parameters(layout: ParameterLayout(config: c))
        params.layout.initialize(params.values, seed: seed)
        let B = 2, n = B * c.seqLen
        return Run(model: Transformer(config: c, params: params),
                   tokens: (0..<2).map { randomTokens(count: n, vocab: c.vocab, seed: seed + 10 + UInt64($0)) },
                   targets: (0..<2).map { randomTokens(count: n, vocab: c.vocab, seed: seed + 20 + UInt64($0)) },
                   scale: LossScale(tokens: 2 * n, sequences: 2 * B))
    }

    func forward(_ r: Run, _ mb: Int) -> Transformer.ChunkPass {
        r.model.forwardChunk(layers: 0..<r.model.config.layers, input: .tokens(r.tokens[mb]), targets: r.targets[mb], scale: r.scale)
    }

    func backward(_ r: Run, _ pass: Transformer.ChunkPass) { r.model.backwardChunk(pass, outputGradient: nil, scale: r.scale) }

    func testInterleavedModelsEachHearOnlyTheirOwnKernels() {
        let a = makeRun(dModel: 16, moeEvery: 1, seed: 1), b = makeRun(dModel: 24, moeEvery: 2, seed: 2)
        // Alone: two micro-batches, forward and backward each.
        let aloneA = KernelRecorder(), aloneB = KernelRecorder()
        Kernels.with(aloneA.context) { for mb in 0..<2 { backward(a, forward(a, mb)) } }
        Kernels.with(aloneB.context) { for mb in 0..<2 { backward(b, forward(b, mb)) } }
        XCTAssertNotEqual(aloneA.kernels, aloneB.kernels)
        XCTAssertFalse(aloneA.kernels.isEmpty)

        // Interleaved, with B's work nested inside A's context and the other way round.
        let ra = KernelRecorder(), rb = KernelRecorder()
        let pa0 = Kernels.with(ra.context) { forward(a, 0) }
        let pb0 = Kernels.with(rb.context) { forward(b, 0) }
        Kernels.with(ra.context) {
            let pb1 = Kernels.with(rb.context) { () -> Transformer.ChunkPass in
                backward(b, pb0)
                return forward(b, 1)
            }
            backward(a, pa0)
            Kernels.with(rb.context) { backward(b, pb1) }
            let pa1 = forward(a, 1)
            backward(a, pa1)
        }
        XCTAssertEqual(ra.kernels, aloneA.kernels, "model A's accountant")
        XCTAssertEqual(rb.kernels, aloneB.kernels, "model B's accountant")
        XCTAssertNil(Kernels.context.accountant)
    }
}
