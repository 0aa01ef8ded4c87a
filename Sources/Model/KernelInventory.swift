/// The kernels and messages one rank runs for a chunk of the model, listed from the shapes
/// alone, in the order the layers run them: the same GEMM shapes and elementwise traffic the
/// layers report to `Kernels`, so that the projection to cluster scale costs exactly what the
/// emulator would measure, without allocating the model. `KernelInventoryTests` holds the
/// two together: the real layers' forward and backward of several shards must report
/// exactly this list. Expert work follows a routing (`ExpertRows` per MoE layer): by default
/// balanced, every expert getting its share of the assignments and none dropped; a run timed
/// as another model (`--time-as`) passes the rows its router really chose, scaled.
public enum KernelInventory {
    /// What one MoE layer's routing gives one rank to do: the assignments of its tokens it
    /// sends to the experts (the kept ones), and the rows each of its local experts receives.
    public struct ExpertRows: Equatable, Sendable {
        public var sent: Double
        public var received: [Double]
        public init(sent: Double, received: [Double]) { self.sent = sent; self.received = received }
        /// The same routing for `factor` times as many tokens.
        public func scaled(by factor: Double) -> ExpertRows { ExpertRows(sent: sent * factor, received: received.map { $0 * factor }) }
    }

    public enum Work: Equatable, Sendable {
        case kernel(flops: Double, elements: Double)
        /// A sum over the tensor-parallel group of `floats` values.
        case tpAllReduce(floats: Double)
        /// A max over the tensor-parallel group of `floats` values.
        case tpAllReduceMax(floats: Double)
        /// Sequence parallelism: an all-gather over the tensor-parallel group of `floats` values in all.
        case tpAllGather(floats: Double)
        /// Sequence parallelism: a reduce-scatter over the tensor-parallel group of `floats` values in all.
        case tpReduceScatter(floats: Double)
        /// An expert-parallel exchange in which this rank sends `floats` values.
        case epAllToAll(floats: Double)
        /// The expert-parallel exchange of per-expert counts (32-bit integers).
        case epCounts(bytes: Double)
    }

    /// C = A B with A (m x k), B (k x n); `accumulate` reads C too.
    static func gemm(_ m: Double, _ n: Double, _ k: Double, accumulate: Bool = false) -> Work {
        .kernel(flops: 2 * m * n * k, elements: m * k + k * n + (accumulate ? 2 : 1) * m * n)
    }

    struct Dims {
        let N, B, T, C, D, qw, kw, Fl, Vl, E, K, El, rows, rowsPerExpert: Double
        /// Rows of the residual stream on this rank (`ShardSpec.residualRows`): N, or N / tp under sequence parallelism.
        let n: Double
        let tp: Int, ep: Int, sp: Bool
        init(_ c: ModelConfig, _ s: ShardSpec, sequences: Int) {
            let h = s.heads(c)
            B = Double(sequences); T = Double(c.seqLen); N = B * T; C = Double(c.dModel); D = Double(c.headDim)
            n = Double(s.residualRows(tokens: sequences * c.seqLen)); sp = s.sequenceParallel
            qw = Double(h.qHeads * c.headDim); kw = Double(h.kvHeads * c.headDim)
            Fl = Double(c.ffnHidden / s.tp); Vl = Double(s.vocabRange(c).count)
            E = Double(c.experts); K = Double(c.topK); El = Double(c.experts / s.ep)
            rows = N / Double(s.tp) * K                            // assignments this rank sends
            rowsPerExpert = Double(s.ep) * rows / E                // received per local expert, balanced
            tp = s.tp; ep = s.ep
        }
        /// Balanced routing: every local expert receives its share, nothing dropped.
        var balanced: ExpertRows { ExpertRows(sent: rows, received: Array(repeating: rowsPerExpert, count: Int(El))) }
        /// Attention: (sequence, query head) pairs, T x T scores and T x D values per pair.
        var bh: Double { B * qw / D }
        var tt: Double { T * T }
        var td: Double { T * D }
    }

    // Norms, residual additions and copies run on the rank's rows of the residual stream.
    static func norm(_ d: Dims) -> Work { .kernel(flops: 4 * d.n * d.C, elements: 2 * d.n * d.C + d.C + d.n) }
    static func normBackward(_ d: Dims, accumulate: Bool) -> Work {
        .kernel(flops: 10 * d.n * d.C, elements: (accumulate ? 4 : 3) * d.n * d.C + 2 * d.C + d.n)
    }
    static func residual(_ d: Dims) -> Work { .kernel(flops: d.n * d.C, elements: 3 * d.n * d.C) }
    static func copy(_ d: Dims) -> Work { .kernel(flops: 0, elements: 2 * d.n * d.C) }
    static func rotary(_ d: Dims, width: Double) -> Work { .kernel(flops: 3 * d.N * width, elements: 2 * d.N * width + d.N * d.D) }
    static func tp(_ d: Dims, _ floats: Double) -> [Work] { d.tp > 1 ? [.tpAllReduce(floats: floats)] : [] }
    /// The input of a column-parallel region (`Transformer.gathered`): an all-gather of the
    /// micro-batch's N x C under sequence parallelism, nothing otherwise.
    static func gathered(_ d: Dims) -> [Work] { d.sp ? [.tpAllGather(floats: d.N * d.C)] : [] }
    /// The output of a row-parallel region, or the input gradient of a column-parallel one,
    /// summed over TP (`Transformer.reduced`): a reduce-scatter under sequence parallelism,
    /// an all-reduce otherwise.
    static func reduced(_ d: Dims) -> [Work] { d.sp ? [.tpReduceScatter(floats: d.N * d.C)] : tp(d, d.N * d.C) }

    /// Forward of `layers` on one micro-batch of `sequences`, with the embedding (first chunk)
    /// and the head and loss (last chunk).
    /// `routing`: the MoE layers' rows by layer (balanced where absent).
    public static func forward(config c: ModelConfig, shard s: ShardSpec, sequences: Int, layers: Range<Int>,
                               embedding: Bool, head: Bool, attention: AttentionKernel = .naive,
                               routing: [Int: ExpertRows] = [:]) -> [Work] {
        forwardUnits(config: c, shard: s, sequences: sequences, layers: layers, embedding: embedding, head: head,
                     attention: attention, routing: routing).flatMap(\.work)
    }

    /// The same forward cut where each `GradientUnit`'s parameters are first read (the points
    /// where `Transformer.forwardChunk` asks for them), in order.
    public static func forwardUnits(config c: ModelConfig, shard s: ShardSpec, sequences: Int, layers: Range<Int>,
                                    embedding: Bool, head: Bool, attention: AttentionKernel = .naive,
                                    routing: [Int: ExpertRows] = [:]) -> [(unit: GradientUnit, work: [Work])] {
        let d = Dims(c, s, sequences: sequences)
        var units: [(unit: GradientUnit, work: [Work])] = []
        if embedding { units.append((.embedding, [.kernel(flops: 0, elements: 2 * d.N * d.C)] + reduced(d))) }
        for l in layers { units.append((.layer(l), layerForward(c, d, l, attention: attention, routing: routing[l] ?? d.balanced))) }
        if head {
            var w: [Work] = [norm(d)] + gathered(d)
            w.append(gemm(d.N, d.Vl, d.C))
            w.append(.kernel(flops: 6 * d.N * d.Vl, elements: 2 * d.N * d.Vl))
            if d.tp > 1 { w += [.tpAllReduceMax(floats: d.N), .tpAllReduce(floats: 2 * d.N)] }
            units.append((.head, w))
        }
        return units
    }

    /// The MLP of a dense layer or an expert on `rows` rows of hidden width `f` (`FeedForward`).
    static func ffnForward(_ c: ModelConfig, _ d: Dims, rows: Double, hidden f: Double) -> [Work] {
        let act = FeedForward.activationWork(c.ffn, rows: rows, hidden: f)
        return [gemm(rows, f, d.C)] + (c.ffn == .swiglu ? [gemm(rows, f, d.C)] : [])
            + [.kernel(flops: act.flops, elements: act.elements), gemm(rows, d.C, f)]
    }

    /// Its backward: the down projection, the activation, the gate (SwiGLU) and up projections.
    static func ffnBackward(_ c: ModelConfig, _ d: Dims, rows: Double, hidden f: Double) -> [Work] {
        let act = FeedForward.activationBackwardWork(c.ffn, rows: rows, hidden: f)
        var w = linear(d, rows, out: d.C, inDim: f) + [.kernel(flops: act.flops, elements: act.elements)]
        if c.ffn == .swiglu { w += linear(d, rows, out: f, inDim: d.C) }
        return w + linear(d, rows, out: f, inDim: d.C, accumulateDx: c.ffn == .swiglu)
    }

    /// The expert part of an MoE layer's forward or backward (`MoE`): this rank's rows sent to
    /// the experts' owners, each local expert's rows gathered, its MLP work (`mlp`, given the
    /// rows), its output scattered, and the rows sent back.
    /// An expert that receives no row runs nothing.
    static func experts(_ d: Dims, _ r: ExpertRows, _ mlp: (Double) -> [Work]) -> [Work] {
        var w: [Work] = []
        if d.ep > 1 { w.append(.epAllToAll(floats: r.sent * d.C)) }
        for rows in r.received where rows > 0 {
            w.append(.kernel(flops: 0, elements: 2 * rows * d.C))
            w += mlp(rows)
            w.append(.kernel(flops: 0, elements: 2 * rows * d.C))
        }
        if d.ep > 1 { w.append(.epAllToAll(floats: r.received.reduce(0, +) * d.C)) }
        return w
    }

    /// The score GEMM and the causal softmax of every (sequence, head): the attention core's
    /// probabilities, which selective recomputation makes again in the backward.
    static func attentionProbabilities(_ d: Dims) -> [Work] {
        let (bh, tt, td) = (d.bh, d.tt, d.td)
        return [.kernel(flops: 2 * bh * tt * d.D, elements: bh * (2 * td + tt)), .kernel(flops: 5 * bh * tt, elements: 2 * bh * tt)]
    }

    /// O = P V for every (sequence, head): the attention core's product with V.
    static func attentionValues(_ d: Dims) -> Work {
        let (bh, tt, td) = (d.bh, d.tt, d.td)
        return .kernel(flops: 2 * bh * tt * d.D, elements: bh * (tt + 2 * td))
    }

    /// One transformer layer's forward.
    static func layerForward(_ c: ModelConfig, _ d: Dims, _ l: Int, attention: AttentionKernel, routing r: ExpertRows) -> [Work] {
        var w: [Work] = []
        // attention
        w.append(norm(d))
        w += gathered(d)
        w += [gemm(d.N, d.qw, d.C), gemm(d.N, d.kw, d.C), gemm(d.N, d.kw, d.C)]
        w += [rotary(d, width: d.qw), rotary(d, width: d.kw)]
        let (bh, tt, td) = (d.bh, d.tt, d.td)
        if attention == .fused {
            w += Attention.fusedForward(bh: bh, tt: tt, td: td, T: d.T, D: d.D).map { .kernel(flops: $0.flops, elements: $0.elements) }
        } else {
            w += attentionProbabilities(d)
            w.append(attentionValues(d))
        }
        w.append(gemm(d.N, d.C, d.qw))
        w += reduced(d)
        w.append(residual(d))
        w.append(norm(d))
        if c.isMoE(layer: l) {
            // Under sequence parallelism each rank scores its own rows and the scores are gathered.
            w.append(gemm(d.n, d.E, d.C))
            if d.sp { w.append(.tpAllGather(floats: d.N * d.E)) }
            w.append(.kernel(flops: d.N * d.E * (5 + d.K), elements: 2 * d.N * d.E + 2 * d.N * d.K))
            if d.ep > 1 { w.append(.epCounts(bytes: 4 * d.E)) }
            w.append(.kernel(flops: 0, elements: 2 * r.sent * d.C))
            w += experts(d, r) { ffnForward(c, d, rows: $0, hidden: Double(c.ffnHidden)) }
            w.append(.kernel(flops: 2 * r.sent * d.C, elements: 2 * r.sent * d.C + d.N / Double(d.tp) * d.C))
            if !d.sp { w += tp(d, d.N * d.C) }
        } else {
            w += gathered(d)
            w += ffnForward(c, d, rows: d.N, hidden: d.Fl)
            w += reduced(d)
        }
        w.append(residual(d))
        return w
    }

    /// Backward of the same chunk. `recompute` (`Recompute`): selective adds the attention
    /// probabilities again before each attention backward; full reruns each layer's forward
    /// just before its backward.
    public static func backward(config c: ModelConfig, shard s: ShardSpec, sequences: Int, layers: Range<Int>,
                                embedding: Bool, head: Bool, recompute: Recompute = .none, attention: AttentionKernel = .naive,
                                routing: [Int: ExpertRows] = [:]) -> [Work] {
        backwardUnits(config: c, shard: s, sequences: sequences, layers: layers, embedding: embedding, head: head,
                      recompute: recompute, attention: attention, routing: routing).flatMap(\.work)
    }

    /// The same backward cut where each `GradientUnit`'s gradients are complete (the points
    /// where `Transformer.backwardChunk` reports them), in order.
    public static func backwardUnits(config c: ModelConfig, shard s: ShardSpec, sequences: Int, layers: Range<Int>,
                                     embedding: Bool, head: Bool, recompute: Recompute = .none,
                                     attention: AttentionKernel = .naive, routing: [Int: ExpertRows] = [:]) -> [(unit: GradientUnit, work: [Work])] {
        let d = Dims(c, s, sequences: sequences)
        var units: [(unit: GradientUnit, work: [Work])] = []
        if head {
            units.append((.head, gathered(d) + linear(d, d.N, out: d.Vl, inDim: d.C) + reduced(d) + [normBackward(d, accumulate: false)]))
        }
        for l in layers.reversed() {
            var w: [Work] = []
            let r = routing[l] ?? d.balanced
            if recompute == .full { w += layerForward(c, d, l, attention: attention, routing: r) }
            w += layerBackward(c, d, l, recompute: recompute, attention: attention, routing: r)
            units.append((.layer(l), w))
        }
        if embedding { units.append((.embedding, gathered(d) + [.kernel(flops: d.N * d.C, elements: 3 * d.N * d.C)])) }
        return units
    }

    /// dx = dy W (n x in) and dW += dy^T x (out x in), for y = x W^T with W (out x in).
    static func linear(_ d: Dims, _ n: Double, out: Double, inDim: Double, accumulateDx: Bool = false) -> [Work] {
        [gemm(n, inDim, out, accumulate: accumulateDx), gemm(out, inDim, n, accumulate: true)]
    }

    /// One transformer layer's backward.
    static func layerBackward(_ c: ModelConfig, _ d: Dims, _ l: Int, recompute: Recompute, attention: AttentionKernel,
                              routing r: ExpertRows) -> [Work] {
        var w: [Work] = []
        if c.isMoE(layer: l) {
            w.append(.kernel(flops: 4 * r.sent * d.C, elements: 3 * r.sent * d.C))
            w += experts(d, r) { ffnBackward(c, d, rows: $0, hidden: Double(c.ffnHidden)) }
            w.append(.kernel(flops: r.sent * d.C, elements: 3 * r.sent * d.C))
            let mine = d.N / Double(d.tp)
            w.append(.kernel(flops: 8 * mine * d.E, elements: 3 * mine * d.E + mine * d.K))
            w += linear(d, mine, out: d.E, inDim: d.C, accumulateDx: true)
            if !d.sp { w += tp(d, d.N * d.C) }
        } else {
            w += gathered(d) + gathered(d)   // the output gradient, and the input again for the weight gradients
            w += ffnBackward(c, d, rows: d.N, hidden: d.Fl)
            w += reduced(d)
        }
        w.append(copy(d))
        w.append(normBackward(d, accumulate: true))
        // attention
        w += gathered(d) + gathered(d)
        w += linear(d, d.N, out: d.C, inDim: d.qw)
        let (bh, tt, td) = (d.bh, d.tt, d.td)
        if attention == .fused {
            w += Attention.fusedBackward(bh: bh, tt: tt, td: td, T: d.T, D: d.D).map { .kernel(flops: $0.flops, elements: $0.elements) }
        } else {
            if recompute == .selective {   // the attention core again: probabilities and the product with V
                w += attentionProbabilities(d)
                w.append(attentionValues(d))
            }
            for _ in 0..<4 { w.append(.kernel(flops: 2 * bh * tt * d.D, elements: bh * (tt + 2 * td))) }
            w.append(.kernel(flops: 4 * bh * tt, elements: 3 * bh * tt))
        }
        w += [rotary(d, width: d.qw), rotary(d, width: d.kw)]
        w += linear(d, d.N, out: d.qw, inDim: d.C)
        w += linear(d, d.N, out: d.kw, inDim: d.C, accumulateDx: true)
        w += linear(d, d.N, out: d.kw, inDim: d.C, accumulateDx: true)
        w += reduced(d)
        w.append(copy(d))
        w.append(normBackward(d, accumulate: true))
        return w
    }
}
