import XCTest
import Projection
import Plan

/// The projection against published measurements: Narayanan et al. 2021, "Efficient
/// Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", Table 1
/// (GPT models, A100-80GB on Selene, sequence 2048, vocabulary 51,200, activation
/// recomputation). The paper counts per-GPU throughput with its equation (3),
/// F = 96 B s l h^2 (1 + s/6h + V/16lh) FLOPs per iteration (recomputation included).
final class MegatronTableTests: XCTestCase {
    struct Row { let billions: Double; let heads, hidden, layers, tp, pp, gpus, batch: Int; let teraflops: Double }

    /// Rows of Table 1 (model size, heads, hidden size, layers, TP, PP, GPUs, batch, achieved teraFLOP/s per GPU).
    static let rows = [
        Row(billions: 18.4, heads: 48, hidden: 6144, layers: 40, tp: 8, pp: 1, gpus: 256, batch: 1024, teraflops: 135),
        Row(billions: 39.1, heads: 64, hidden: 8192, layers: 48, tp: 8, pp: 2, gpus: 512, batch: 1536, teraflops: 138),
        Row(billions: 76.1, heads: 80, hidden: 10240, layers: 60, tp: 8, pp: 4, gpus: 1024, batch: 1792, teraflops: 140),
        Row(billions: 145.6, heads: 96, hidden: 12288, layers: 80, tp: 8, pp: 8, gpus: 1536, batch: 2304, teraflops: 148),
        Row(billions: 310.1, heads: 128, hidden: 16384, layers: 96, tp: 8, pp: 16, gpus: 1920, batch: 2160, teraflops: 155),
        Row(billions: 529.6, heads: 128, hidden: 20480, layers: 105, tp: 8, pp: 35, gpus: 2520, batch: 2520, teraflops: 163),
        Row(billions: 1008, heads: 160, hidden: 25600, layers: 128, tp: 8, pp: 64, gpus: 3072, batch: 3072, teraflops: 163),
    ]

    func projectedTeraflops(_ r: Row) throws -> Double {
        var c = RunConfig()
        c.model.vocab = 51200; c.model.dModel = r.hidden; c.model.heads = r.heads; c.model.kvHeads = r.heads
        c.model.layers = r.layers; c.model.ffnHidden = 4 * r.hidden; c.model.moeEvery = 0; c.model.seqLen = 2048
        c.tp = r.tp; c.pp = r.pp
        c.globalBatch = r.batch; c.microBatchSize = 1; c.microBatches = nil
        c.device = "a100-80gb"
        c.zero = 0
        let p = try Projection(config: c, worldSize: r.gpus, recompute: true)
        let (s, l, h, v) = (2048.0, Double(r.layers), Double(r.hidden), 51200.0)
        let flops = 96 * Double(r.batch) * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h))
        return flops / (p.stepTime * Double(r.gpus)) / 1e12
    }

    func testPublishedThroughputWithinTwentyPercent() throws {
        for r in Self.rows {
            let t = try projectedTeraflops(r)
            print(String(format: "%7.1fB TP%d PP%-2d %5d GPUs batch %4d: projected %.0f teraFLOP/s per GPU, published %.0f (%+.1f%%)",
                         r.billions, r.tp, r.pp, r.gpus, r.batch, t, r.teraflops, 100 * (t / r.teraflops - 1)))
            XCTAssertEqual(t, r.teraflops, accuracy: 0.2 * r.teraflops, "\(r.billions)B")
        }
    }
}
