import Model
import XCTest

/// The activation memory model against Korthikanti et al. 2022 ("Reducing Activation
/// Recomputation in Large Transformer Models", section 4 and Table 2): bytes per transformer
/// layer of a GPT (16-bit activations, s tokens per sequence, b sequences, h width, a heads,
/// t tensor-parallel ranks, FFN 4h):
///
///   tensor parallel                        sbh (10 + 24/t + 5as/(ht))
///   tensor + sequence parallel             sbh/t (34 + 5as/h)
///   tensor parallel, selective recompute   sbh (10 + 24/t)
///   tensor + sequence, selective           34 sbh/t
///   full recomputation                     2 sbh      (the layer's input; its 1/t block under
///                                                      sequence parallelism, as Megatron-LM stores it)
///
/// moe-train's layer has no dropout and keeps each RMSNorm's reciprocal RMS (one float per
/// row); the paper's layer has three dropouts (masks of 1 byte per element: sbh after the
/// attention, sbh after the MLP, as^2b on the probabilities, and the dropped-out probabilities
/// again, 2as^2b). The test adds the dropout terms to moe-train's count and removes the rstd
/// rows, and must then land on the paper's formulas exactly, for each recomputation mode,
/// with and without sequence parallelism, over several shapes.
final class ActivationMemoryTests: XCTestCase {
    struct Shape { let s, b, h, a, t: Int }
    static let shapes = [Shape(s: 64, b: 2, h: 64, a: 4, t: 2), Shape(s: 128, b: 1, h: 96, a: 8, t: 4),
                         Shape(s: 32, b: 3, h: 48, a: 6, t: 1), Shape(s: 256, b: 2, h: 128, a: 16, t: 8)]

    func config(_ x: Shape) -> ModelConfig {
        var c = ModelConfig()
        c.layers = 2; c.dModel = x.h; c.heads = x.a; c.kvHeads = x.a; c.ffnHidden = 4 * x.h
        c.moeEvery = 0; c.seqLen = x.s; c.vocab = 64
        return c
    }

    /// The paper's bytes for one layer.
    func korthikanti(_ x: Shape, sequenceParallel sp: Bool, recompute: Recompute) -> Double {
        let (s, b, h, a, t) = (Double(x.s), Double(x.b), Double(x.h), Double(x.a), Double(x.t))
        let sbh = s * b * h
        switch (recompute, sp) {
        case (.none, false): return sbh * (10 + 24 / t + 5 * a * s / (h * t))
        case (.none, true): return sbh / t * (34 + 5 * a * s / h)
        case (.selective, false): return sbh * (10 + 24 / t)
        case (.selective, true): return 34 * sbh / t
        case (.full, false): return 2 * sbh
        case (.full, true): return 2 * sbh / t
        }
    }

    /// moe-train's bytes for one layer (2 bytes per kept float), with the paper's dropout terms
    /// added and the norms' rstd rows removed.
    func moeTrain(_ x: Shape, sequenceParallel sp: Bool, recompute: Recompute) -> Double {
        let c = config(x)
        let shard = ShardSpec(tp: x.t, tpRank: x.t - 1, ep: 1, epRank: 0, layers: [0], embedding: false, head: false,
                              sequenceParallel: sp)
        let rows = Double(shard.residualRows(tokens: x.s * x.b))
        let kept: Int
        if recompute == .full {
            // A chunk of one layer keeps its input and the layer's output (the next layer's input).
            kept = Transformer.activationFloats(config: c, sequences: x.b, shard: shard, recompute: .full, attention: .naive)
                - shard.residualRows(tokens: x.s * x.b) * x.h
            return 2 * Double(kept)
        }
        kept = Transformer.layerActivationFloats(config: c, sequences: x.b, shard: shard, layer: 0, recompute: recompute, attention: .naive)
        let (s, b, h, a, t) = (Double(x.s), Double(x.b), Double(x.h), Double(x.a), Double(x.t))
        let dropoutMasks = 2 * rows * h                                    // after the attention and after the MLP, 1 byte each
        let probabilityDropout = recompute == .selective ? 0 : 3 * a * s * s * b / t   // mask (1 byte) and output (2 bytes)
        return 2 * (Double(kept) - 2 * rows) + dropoutMasks + probabilityDropout
    }

    func testLayerActivationsMatchKorthikanti() {
        for x in Self.shapes {
            for sp in x.t > 1 ? [false, true] : [false] {
                for mode in Recompute.allCases {
                    let ours = moeTrain(x, sequenceParallel: sp, recompute: mode), paper = korthikanti(x, sequenceParallel: sp, recompute: mode)
                    XCTAssertEqual(ours, paper, "s \(x.s) b \(x.b) h \(x.h) a \(x.a) t \(x.t), sequence parallel \(sp), recompute \(mode)")
                }
            }
        }
    }

    /// Sequence parallelism divides exactly the part tensor parallelism leaves whole: the
    /// paper's 10sbh (norm inputs, the QKV and MLP inputs, dropout masks), here 4 sbh floats
    /// and the rstd rows, by t.
    func testSequenceParallelismShardsTheReplicatedPart() {
        let x = Self.shapes[1]
        let c = config(x)
        func floats(_ sp: Bool) -> Int {
            Transformer.layerActivationFloats(config: c, sequences: x.b, shard: ShardSpec(tp: x.t, tpRank: 0, ep: 1, epRank: 0, sequenceParallel: sp),
                                              layer: 0, recompute: .selective)
        }
        let n = x.s * x.b
        XCTAssertEqual(floats(false) - floats(true), (4 * n * x.h + 2 * n) - (4 * n * x.h + 2 * n) / x.t)
    }
}
