/// Which part of the model one rank holds: its tensor-parallel and expert-parallel
/// coordinates. The single-rank model is `ShardSpec.single`.
public struct ShardSpec: Sendable, Equatable {
    public let tp: Int
    public let tpRank: Int
    public let ep: Int
    public let epRank: Int
    /// The transformer layers this rank holds (all its pipeline chunks); nil: every layer.
    public let layers: [Int]?
    /// Whether this rank holds the token embedding (first pipeline stage) and the final norm
    /// and LM head (last pipeline stage).
    public let embedding: Bool
    public let head: Bool
    /// Sequence parallelism (Korthikanti et al. 2022, section 4.2.2): outside the
    /// tensor-parallel regions (norms, residual additions, the stream between layers and
    /// pipeline stages) each TP rank holds a contiguous 1/tp block of the micro-batch's token
    /// rows instead of all of them.
    public let sequenceParallel: Bool

    public init(tp: Int, tpRank: Int, ep: Int, epRank: Int, layers: [Int]? = nil, embedding: Bool = true, head: Bool = true,
                sequenceParallel: Bool = false) {
        self.tp = tp; self.tpRank = tpRank; self.ep = ep; self.epRank = epRank
        self.layers = layers; self.embedding = embedding; self.head = head
        self.sequenceParallel = sequenceParallel && tp > 1
    }

    /// Rows of the residual stream this rank holds for a micro-batch of `tokens` tokens: its
    /// sequence block under sequence parallelism, all of them otherwise.
    public func residualRows(tokens: Int) -> Int { sequenceParallel ? tokens / tp : tokens }

    /// The same shard holding other layers (a pipeline chunk's view of it).
    public func holding(layers: [Int]?, embedding: Bool, head: Bool) -> ShardSpec {
        ShardSpec(tp: tp, tpRank: tpRank, ep: ep, epRank: epRank, layers: layers, embedding: embedding, head: head,
                  sequenceParallel: sequenceParallel)
    }

    public static let single = ShardSpec(tp: 1, tpRank: 0, ep: 1, epRank: 0)

    public func holds(layer l: Int) -> Bool { layers?.contains(l) ?? true }

    /// The attention heads this rank computes: a block of H/tp query heads; KV heads split
    /// the same way when there are at least tp of them, else all replicated.
    public func heads(_ c: ModelConfig) -> HeadSlice {
        let local = c.heads / tp
        let splitKV = c.kvHeads >= tp
        return HeadSlice(qHeads: local, kvHeads: splitKV ? c.kvHeads / tp : c.kvHeads, qHeadBase: tpRank * local,
                         kvHeadBase: splitKV ? tpRank * (c.kvHeads / tp) : 0, groupSize: c.heads / c.kvHeads,
                         headDim: c.headDim)
    }

    public func kvReplicated(_ c: ModelConfig) -> Bool { tp > 1 && c.kvHeads < tp }

    /// This rank's vocabulary rows [start, start + V/tp).
    public func vocabRange(_ c: ModelConfig) -> Range<Int> {
        let n = c.vocab / tp
        return (tpRank * n)..<((tpRank + 1) * n)
    }

    /// This rank's experts [start, start + E/ep).
    public func expertRange(_ c: ModelConfig) -> Range<Int> {
        let n = c.experts / ep
        return (epRank * n)..<((epRank + 1) * n)
    }
}

/// How a rank's local tensor sits inside the full tensor: a contiguous block of `length`
/// indices starting at `start` along dimension `dim`, all of every other dimension.
public struct TensorSlice: Sendable, Equatable {
    public let dim: Int
    public let start: Int
    public let length: Int

    /// Calls `body(localIndex, globalIndex)` for every element of the local tensor.
    public func forEachElement(globalShape: [Int], _ body: (Int, Int) -> Void) {
        // Rows of the slice: all indices before `dim` (outer), then the sliced block, then
        // the contiguous tail after `dim` (inner).
        let outer = globalShape[..<dim].reduce(1, *)
        let inner = globalShape[(dim + 1)...].reduce(1, *)
        let full = globalShape[dim]
        var local = 0
        for o in 0..<outer {
            for i in 0..<length {
                let g = (o * full + start + i) * inner
                for j in 0..<inner { body(local, g + j); local += 1 }
            }
        }
    }
}
