import Model
import Tensor
import TestSupport
import XCTest

/// End to end: the gradients `Transformer.forwardBackward` accumulates into `params.grads`
/// against central differences of the step loss, for every parameter tensor by name.
///
/// The objective is evaluated with `forwardBackward` itself (its statistics carry the summed
/// LM, aux and z losses and the expert load); the test first checks that its LM loss equals
/// `Transformer.loss` bit for bit. A coordinate whose perturbation changes any expert's load
/// (a top-k decision flipped) is skipped and counted.
final class TransformerGradTests: XCTestCase {
    static let minChecked = 0.9
    /// At most this many coordinates of each tensor, sampled deterministically.
    static let samplesPerTensor = 48

    /// Tolerance 1e-2 with floor 5e-2 * max|grad|. The mean loss of the fp32 model carries ~3e-8 of
    /// round-off, which leaves central differences with errors of 1e-4..3e-4 * max|grad| (measured
    /// over six seeds), so coordinates below 5% of a tensor's largest gradient are held to an
    /// absolute 5e-4 * max|grad|. The per-layer tests check each piece more tightly; this test
    /// is about the wiring (residuals, accumulation, tied embeddings, loss scaling).
    static let floorFraction = 5e-2

    /// eps per parameter: 1e-2 for most; smaller for the tensors that write straight into the
    /// residual stream (embedding, attention value/output, dense FFN output), which the next
    /// RMSNorm sees amplified by 1/rms(residual) (about 5 here), and so with more curvature.
    static func eps(_ name: String) -> Float {
        if name == "tok_emb" { return 1e-3 }
        if name.hasSuffix(".attn.wo") || name.hasSuffix(".attn.wv") || name.hasSuffix(".ffn.w_down") { return 2e-3 }
        return 1e-2
    }

    func config(tied: Bool, aux: Double = 0, z: Double = 0) -> ModelConfig {
        var c = ModelConfig()
        c.vocab = 16; c.dModel = 16; c.layers = 2; c.heads = 4; c.kvHeads = 2; c.ffnHidden = 8
        c.experts = 4; c.topK = 2; c.seqLen = 6; c.moeEvery = 2  // layer 0 dense, layer 1 MoE
        c.auxLossCoef = aux; c.zLossCoef = z
        c.capacityFactor = 0  // unlimited: a flipped choice always shows in the load
        c.tieEmbeddings = tied
        // Larger than training's 0.02 so that the inner layers' gradients stand above fp32
        // round-off; router std 0.4, logits of O(1): top-k margins wide enough that few flip.
        c.initStd = 0.2
        c.routerInitScale = 2
        return c
    }

    func testUntiedEmbeddings() { check("transformer", config: config(tied: false), seed: 1) }

    func testTiedEmbeddings() {
        let c = config(tied: true)
        XCTAssertNil(ParameterLayout(config: c)["lm_head"])
        check("transformer[tied]", config: c, seed: 2)
    }

    func testWithAuxAndZLoss() { check("transformer[aux z]", config: config(tied: false, aux: 0.5, z: 0.25), seed: 3) }

    /// SwiGLU in the dense layer and in every expert: w_gate is checked like every tensor.
    func testSwiGLU() {
        var c = config(tied: false, aux: 0.5)
        c.ffn = .swiglu
        XCTAssertNotNil(ParameterLayout(config: c)["layers.0.ffn.w_gate"])
        XCTAssertNotNil(ParameterLayout(config: c)["layers.1.moe.w_gate"])
        check("transformer[swiglu]", config: c, seed: 4)
    }

    func check(_ label: String, config c: ModelConfig, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNoThrow(try c.validate(), file: file, line: line)
        let params = Parameters(layout: ParameterLayout(config: c))
        params.layout.initialize(params.values, seed: seed)
        let model = Transformer(config: c, params: params)
        let B = 2, n = B * c.seqLen
        let tokens = randomTokens(count: n, vocab: c.vocab, seed: seed + 10)
        let targets = randomTokens(count: n, vocab: c.vocab, seed: seed + 11)
        let scale = LossScale(tokens: n, sequences: B)

        params.zeroGrads()
        let base = model.forwardBackward(tokens: tokens, targets: targets, scale: scale)
        let grads = Tensor(view: params.grads, offset: 0, shape: [params.layout.totalCount]).copy()
        XCTAssertEqual(base.lossSum, model.loss(tokens: tokens, targets: targets), "forwardBackward and loss disagree",
                       file: file, line: line)
        XCTAssertEqual(base.dropped, 0, file: file, line: line)

        let auxCoef = Double(Float(c.auxLossCoef)), zCoef = Double(Float(c.zLossCoef))
        func objective() -> Double? {
            let s = model.forwardBackward(tokens: tokens, targets: targets, scale: scale)
            guard s.load == base.load else { return nil }
            return s.lossSum / Double(scale.tokens) + auxCoef * s.auxSum / Double(scale.sequences)
                + zCoef * s.zSum / Double(scale.tokens)
        }
        for (i, spec) in params.layout.specs.enumerated() {
            let analytic = Tensor(view: grads.storage, offset: spec.offset, shape: spec.shape)
            let indices = sampleIndices(count: spec.count, limit: Self.samplesPerTensor, seed: seed &* 1000 &+ UInt64(i))
            let report = gradCheck("\(label).\(spec.name)", param: params.value(spec.name), analytic: analytic,
                                   eps: Self.eps(spec.name), floorFraction: Self.floorFraction, indices: indices,
                                   objective: objective)
            assertGradient(report, minCheckedFraction: Self.minChecked, file: file, line: line)
        }
    }
}
