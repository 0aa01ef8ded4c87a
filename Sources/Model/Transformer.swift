import Tensor

/// The whole model on one rank: embedding, L pre-norm blocks, final norm, LM head, loss.
///
///     h_0 = Emb[tokens]
///     a_l = h_l + Attn(RMSNorm(h_l; attn_norm))
///     h_{l+1} = a_l + FFN_or_MoE(RMSNorm(a_l; ffn_norm))
///     logits = RMSNorm(h_L; norm_f) W_head^T,   W_head = tok_emb when tied
///
/// Each piece is a forward/backward pair over flat buffers; this type only wires them.
/// Under tensor and expert parallelism the same wiring runs on each rank's shard
/// (`params.layout.shard`), with the f/g all-reduces of `parallel` at the points Megatron
/// puts them: after the row-parallel attention output and FFN down projection (forward),
/// before the norms that feed column-parallel layers (backward), around the
/// vocabulary-parallel embedding and cross-entropy. Under sequence parallelism
/// (`ShardSpec.sequenceParallel`, Korthikanti et al. 2022) the residual stream, the norms
/// and every chunk's input and output are the rank's block of token rows; each all-reduce
/// becomes an all-gather before the column-parallel layers and a reduce-scatter after the
/// row-parallel ones, and a layer keeps its norms' outputs as blocks, gathering them again
/// for the weight gradients (as Megatron-LM does).
public final class Transformer {
    public let config: ModelConfig
    public let params: Parameters
    public let parallel: ModelParallelism
    let rotary: Rotary
    let heads: HeadSlice
    let vocab: Range<Int>
    let moeOptions: MoE.Options
    let eps: Float
    /// What the forward keeps for the backward (`Recompute`).
    public let recompute: Recompute
    /// How the emulated GPU runs the attention core (`AttentionKernel`).
    public let attention: AttentionKernel

    public init(config: ModelConfig, params: Parameters, parallel: ModelParallelism = SingleRank(), recompute: Recompute = .none,
                attention: AttentionKernel = .naive) {
        precondition(parallel.shard == params.layout.shard, "parameters are laid out for another shard")
        self.config = config
        self.params = params
        self.parallel = parallel
        self.recompute = recompute
        self.attention = attention
        rotary = Rotary(headDim: config.headDim, seqLen: config.seqLen, theta: config.ropeTheta)
        heads = parallel.shard.heads(config)
        vocab = parallel.shard.vocabRange(config)
        moeOptions = MoE.Options(config: config)
        eps = Float(config.normEps)
    }

    // MARK: - Blocks

    enum FFNCache { case dense(FeedForward.Cache), moe(MoE.Cache) }

    struct BlockCache {
        let x: Tensor, xn1: Tensor, rstd1: Tensor, attn: Attention.Cache
        let a: Tensor, xn2: Tensor, rstd2: Tensor, ffn: FFNCache
        /// Floats kept for the backward beyond the block's input (the previous block's output).
        var floatCount: Int {
            let f: Int
            switch ffn { case .dense(let c): f = c.floatCount; case .moe(let c): f = c.floatCount }
            return xn1.count + rstd1.count + attn.floatCount + a.count + xn2.count + rstd2.count + f
        }
    }

    func attnWeights(_ l: Int, grads: Bool = false) -> Attention.Weights {
        let get = grads ? params.grad : params.value
        return Attention.Weights(wq: get("layers.\(l).attn.wq"), wk: get("layers.\(l).attn.wk"),
                                 wv: get("layers.\(l).attn.wv"), wo: get("layers.\(l).attn.wo"))
    }

    func moeWeights(_ l: Int, grads: Bool = false) -> MoE.Weights {
        let get = grads ? params.grad : params.value
        return MoE.Weights(router: get("layers.\(l).moe.router"), wUp: get("layers.\(l).moe.w_up"),
                           wDown: get("layers.\(l).moe.w_down"), wGate: config.ffn == .swiglu ? get("layers.\(l).moe.w_gate") : nil)
    }

    /// A dense layer's FFN weights (or their gradients): up, down, and SwiGLU's gate.
    func ffnWeights(_ l: Int, grads: Bool = false) -> (up: Tensor, down: Tensor, gate: Tensor?) {
        let get = grads ? params.grad : params.value
        return (get("layers.\(l).ffn.w_up"), get("layers.\(l).ffn.w_down"), config.ffn == .swiglu ? get("layers.\(l).ffn.w_gate") : nil)
    }

    var sequenceParallel: Bool { parallel.shard.sequenceParallel }

    /// The input of a column-parallel region: under sequence parallelism the TP group's blocks
    /// of rows gathered into the whole micro-batch (g, Korthikanti et al. 2022); otherwise
    /// `x` itself (f is the identity in a forward).
    func gathered(_ x: Tensor) -> Tensor {
        guard sequenceParallel else { return x }
        let all = Tensor(zeros: [x.rows * parallel.shard.tp, x.cols])
        parallel.tpAllGather(x.ptr, all.ptr, countPerRank: x.count)
        return all
    }

    /// The output of a row-parallel region (or the input gradient of a column-parallel one),
    /// summed over the TP group: this rank's block of rows under sequence parallelism
    /// (reduce-scatter), all of them otherwise (all-reduce in place).
    func reduced(_ y: Tensor) -> Tensor {
        guard sequenceParallel else { parallel.tpAllReduce(y); return y }
        let mine = Tensor(zeros: [y.rows / parallel.shard.tp, y.cols])
        parallel.tpReduceScatter(y.ptr, mine.ptr, countPerRank: mine.count)
        return mine
    }

    func blockForward(_ l: Int, _ x: Tensor) -> (Tensor, BlockCache) {
        let n = x.rows, c = x.cols
        let xn1 = Tensor(zeros: [n, c]), rstd1 = Tensor(zeros: [n])
        RMSNorm.forward(x, params.value("layers.\(l).attn_norm"), eps: eps, y: xn1, rstd: rstd1)
        let attnIn = gathered(xn1)
        let attnOut = Tensor(zeros: [attnIn.rows, c])
        var attn = Attention.forward(attnIn, attnWeights(l), heads: heads, seqLen: config.seqLen, rotary: rotary, y: attnOut,
                                     keepProbabilities: recompute != .selective, kernel: attention)
        attn.x = xn1   // the block is kept; the backward gathers it again
        let a = reduced(attnOut)  // g: sum of the row-parallel output projection's partial outputs
        Self.residual(x, into: a)
        let xn2 = Tensor(zeros: [n, c]), rstd2 = Tensor(zeros: [n])
        RMSNorm.forward(a, params.value("layers.\(l).ffn_norm"), eps: eps, y: xn2, rstd: rstd2)
        let out: Tensor
        let ffn: FFNCache
        if config.isMoE(layer: l) {
            out = Tensor(zeros: [n, c])
            ffn = .moe(MoE.forward(xn2, moeWeights(l), options: moeOptions, parallel: parallel, y: out))
        } else {
            let ffnIn = gathered(xn2)
            let partial = Tensor(zeros: [ffnIn.rows, c])
            let w = ffnWeights(l)
            var fc = FeedForward.forward(ffnIn, wUp: w.up, wDown: w.down, wGate: w.gate, y: partial)
            fc.x = xn2
            ffn = .dense(fc)
            out = reduced(partial)  // g: row-parallel down projection
        }
        Self.residual(a, into: out)
        return (out, BlockCache(x: x, xn1: xn1, rstd1: rstd1, attn: attn, a: a, xn2: xn2, rstd2: rstd2, ffn: ffn))
    }

    /// dOut (N, C) -> dx (N, C).
    func blockBackward(_ l: Int, _ cache: BlockCache, dOut: Tensor, scale: LossScale) -> Tensor {
        let n = dOut.rows, c = dOut.cols
        // FFN branch: da = dOut + d(FFN(norm(a)))/da
        let dxn2: Tensor
        switch cache.ffn {
        case .moe(let mc):
            dxn2 = Tensor(zeros: [n, c])
            MoE.backward(mc, moeWeights(l), options: moeOptions, parallel: parallel, scale: scale, dy: dOut,
                         dw: moeWeights(l, grads: true), dx: dxn2, accumulate: false)
        case .dense(var fc):
            let dy = gathered(dOut)   // the backward of the reduce-scatter
            fc.x = gathered(fc.x)
            let partial = Tensor(zeros: [dy.rows, c])
            let (w, g) = (ffnWeights(l), ffnWeights(l, grads: true))
            FeedForward.backward(fc, wUp: w.up, wDown: w.down, wGate: w.gate, dy: dy, dwUp: g.up, dwDown: g.down, dwGate: g.gate,
                                 dx: partial, accumulate: false)
            dxn2 = reduced(partial)  // f: column-parallel up projection's partial input gradients
        }
        let da = dOut.copy()
        Kernels.account(flops: 0, elements: Double(2 * n * c))
        RMSNorm.backward(cache.a, params.value("layers.\(l).ffn_norm"), rstd: cache.rstd2, dy: dxn2, dx: da,
                         dw: params.grad("layers.\(l).ffn_norm"), accumulate: true)
        // Attention branch: dx = da + d(Attn(norm(x)))/dx
        var attn = cache.attn
        let dy = gathered(da)
        attn.x = gathered(attn.x)
        let partial = Tensor(zeros: [dy.rows, c])
        Attention.backward(attn, attnWeights(l), heads: heads, seqLen: config.seqLen, rotary: rotary,
                           dy: dy, dw: attnWeights(l, grads: true), dx: partial, accumulate: false)
        let dxn1 = reduced(partial)  // f: column-parallel q/k/v projections
        // A copy, not `da` itself: the output projection's weight gradient may still read `da`
        // later (deferred to a zero-bubble W action).
        let dx = da.copy()
        Kernels.account(flops: 0, elements: Double(2 * n * c))
        RMSNorm.backward(cache.x, params.value("layers.\(l).attn_norm"), rstd: cache.rstd1, dy: dxn1, dx: dx,
                         dw: params.grad("layers.\(l).attn_norm"), accumulate: true)
        return dx
    }

    /// y += x, the residual connection.
    static func residual(_ x: Tensor, into y: Tensor) {
        Kernels.account(flops: Double(x.count), elements: Double(3 * x.count))
        Kernels.axpy(x.count, 1, x.ptr, y.ptr)
    }

    var headName: String { config.tieEmbeddings ? "tok_emb" : "lm_head" }

    // MARK: - Whole micro-batch

    /// What the forward of one pipeline chunk (a contiguous run of layers; the first chunk
    /// also embeds, the last also runs the head and the loss) keeps for its backward.
    public struct ChunkPass {
        public let layers: Range<Int>
        let tokens: [Int32]?       // first chunk: the input tokens
        var caches: [BlockCache]
        /// Full recomputation: each layer's input instead of its cache (the backward reruns the layer).
        var inputs: [Tensor]
        /// The chunk's output: the activation sent to the next chunk (the last block's output).
        public let output: Tensor
        let head: (xf: Tensor, rstdF: Tensor, dLogits: Tensor)?
        public let stats: MicroBatchStats
        /// Floats of activations this pass keeps (its input, caches and output).
        public let activationFloats: Int
        /// Floats that exist only while one layer is recomputed (full recomputation: the
        /// largest layer's working set), on top of what the passes in flight keep.
        public let transientFloats: Int
        public var isLast: Bool { head != nil }
    }

    /// Where a chunk's input comes from.
    public enum ChunkInput {
        case tokens([Int32])       // the first chunk embeds them
        case activation(Tensor)    // received from the previous chunk
    }

    /// Forward of `layers` for one micro-batch. `targets` are given to the last chunk, which
    /// computes the loss (fused with its gradient, scaled for the global batch).
    /// `parametersNeeded` is told each `GradientUnit` just before its parameters are first read
    /// (overlapped parameter gathers wait there).
    public func forwardChunk(layers: Range<Int>, input: ChunkInput, targets: [Int32]?, scale: LossScale,
                             parametersNeeded: ((GradientUnit) -> Void)? = nil) -> ChunkPass {
        var stats = MicroBatchStats(layers: config.layers, experts: config.experts)
        var x: Tensor
        var tokens: [Int32]? = nil
        var live = 0
        switch input {
        case .tokens(let t):
            precondition(t.count % config.seqLen == 0, "micro-batch must hold whole sequences")
            tokens = t
            parametersNeeded?(.embedding)
            x = embed(t)
            live += x.count
        case .activation(let a):
            x = a
            live += a.count   // kept as the first block's input until the backward
        }
        let sequences = (sequenceParallel ? x.rows * parallel.shard.tp : x.rows) / config.seqLen
        var caches: [BlockCache] = [], inputs: [Tensor] = []
        var transient = 0
        for l in layers {
            parametersNeeded?(.layer(l))
            let (out, cache) = blockForward(l, x)
            if case .moe(let mc) = cache.ffn { stats.record(layer: l, routing: mc.routing) }
            if recompute == .full {
                inputs.append(x)   // counted already: the chunk's input or the previous layer's output
                live += out.count
                transient = max(transient, cache.floatCount + out.count)
            } else {
                if recompute == .selective && attention == .naive {
                    transient = max(transient, sequences * heads.qHeads * config.seqLen * config.seqLen)
                }
                live += cache.floatCount + out.count
                caches.append(cache)
            }
            x = out
        }
        var head: (Tensor, Tensor, Tensor)? = nil
        if let targets {
            parametersNeeded?(.head)
            // Head: final norm, logits, loss (fused with its gradient).
            let n = sequences * config.seqLen, c = config.dModel
            precondition(targets.count == n, "targets must match the micro-batch")
            let xf = Tensor(zeros: [x.rows, c]), rstdF = Tensor(zeros: [x.rows])
            RMSNorm.forward(x, params.value("norm_f"), eps: eps, y: xf, rstd: rstdF)
            let logits = Tensor(zeros: [n, vocab.count])
            Kernels.linearForward(gathered(xf), params.value(headName), into: logits)
            live += xf.count + rstdF.count + logits.count
            stats.lossSum = CrossEntropy.forwardBackward(logits: logits, targets: targets, vocab: vocab,
                                                         gradScale: 1 / Float(scale.tokens), parallel: parallel)
            stats.tokens = n
            head = (xf, rstdF, logits)
        }
        stats.peakActivationFloats = live + transient
        return ChunkPass(layers: layers, tokens: tokens, caches: caches, inputs: inputs, output: x, head: head, stats: stats,
                         activationFloats: live, transientFloats: transient)
    }

    /// Backward of a chunk. The last chunk starts from its loss; the others from
    /// `outputGradient`, received from the next chunk. Returns the gradient of the chunk's
    /// input (to send to the previous chunk), or nil for the first chunk. `gradientsReady` is
    /// told each `GradientUnit` as soon as this backward has added its last gradient term
    /// (the head, each layer in reverse, the embedding), and `parametersNeeded` each unit just
    /// before its backward (and, under full recomputation, its forward again) reads it.
    @discardableResult
    public func backwardChunk(_ pass: ChunkPass, outputGradient: Tensor?, scale: LossScale,
                              gradientsReady: ((GradientUnit) -> Void)? = nil,
                              parametersNeeded: ((GradientUnit) -> Void)? = nil) -> Tensor? {
        var pass = pass
        let n = pass.output.rows, c = config.dModel
        var dx: Tensor
        if let head = pass.head {
            parametersNeeded?(.head)
            let xf = gathered(head.xf)
            let partial = Tensor(zeros: [xf.rows, c])
            Kernels.linearBackward(xf, params.value(headName), head.dLogits, dx: partial, dw: params.grad(headName))
            let dxf = reduced(partial)  // vocabulary-parallel head: partial input gradients
            dx = Tensor(zeros: [n, c])
            RMSNorm.backward(pass.output, params.value("norm_f"), rstd: head.rstdF, dy: dxf, dx: dx,
                             dw: params.grad("norm_f"), accumulate: false)
            gradientsReady?(.head)
        } else {
            guard let g = outputGradient else { preconditionFailure("a chunk that is not last needs its output gradient") }
            dx = g
        }
        for l in pass.layers.reversed() {
            parametersNeeded?(.layer(l))
            // Full recomputation: the layer's forward again, from its kept input, just before its backward.
            let cache = recompute == .full ? blockForward(l, pass.inputs.removeLast()).1 : pass.caches.removeLast()
            dx = blockBackward(l, cache, dOut: dx, scale: scale)  // caches freed as their backward ends
            gradientsReady?(.layer(l))
        }
        if let tokens = pass.tokens {
            parametersNeeded?(.embedding)
            Embedding.backward(tokens: tokens, dy: gathered(dx), dTable: params.grad("tok_emb"), vocab: vocab)
            gradientsReady?(.embedding)
            return nil
        }
        return dx
    }

    /// Vocabulary-parallel embedding: each TP rank looks up its rows, the sum is the lookup
    /// (this rank's block of it under sequence parallelism).
    func embed(_ tokens: [Int32]) -> Tensor {
        let x = Tensor(zeros: [tokens.count, config.dModel])
        Embedding.forward(tokens: tokens, table: params.value("tok_emb"), vocab: vocab, y: x)
        return reduced(x)
    }

    /// Forward and backward of one micro-batch through the whole model, accumulating
    /// gradients (scaled by `scale`) into `params.grads`.
    public func forwardBackward(tokens: [Int32], targets: [Int32], scale: LossScale) -> MicroBatchStats {
        let pass = forwardChunk(layers: 0..<config.layers, input: .tokens(tokens), targets: targets, scale: scale)
        backwardChunk(pass, outputGradient: nil, scale: scale)
        return pass.stats
    }

    /// The activation floats one micro-batch of `sequences` keeps in a pipeline chunk held as
    /// `shard`, from the shapes alone: the buffers `forwardChunk` counts (its input, the
    /// embedding's output or the activation received from the previous stage; every held
    /// layer's `layerActivationFloats`; the head's), assuming every routed assignment is kept
    /// and expert work is balanced over the expert-parallel ranks. A shard of several chunks
    /// counts one input. Used to check memory before anything is allocated.
    /// Under full recomputation a layer keeps only its output (the next layer's input); under
    /// selective, everything but the attention probabilities. `transientFloats` is what one
    /// layer's recomputation holds on top.
    public static func activationFloats(config c: ModelConfig, sequences B: Int, shard: ShardSpec = .single,
                                        recompute: Recompute = .none, attention: AttentionKernel = .naive) -> Int {
        let n = B * c.seqLen, C = c.dModel, r = shard.residualRows(tokens: n)
        var total = r * C                                             // the chunk's input
        for l in 0..<c.layers where shard.holds(layer: l) {
            total += recompute == .full ? r * C
                : layerActivationFloats(config: c, sequences: B, shard: shard, layer: l, recompute: recompute, attention: attention)
        }
        return total + (shard.head ? r * C + r + n * shard.vocabRange(c).count : 0)  // final norm, rstd, logits
    }

    /// Full recomputation: the largest working set of one held layer while it is recomputed
    /// (everything its forward makes, its output again included); selective recomputation with
    /// the naive kernel: one layer's attention probabilities, made again for its backward (a
    /// batched kernel on a GPU; the CPU makes them head by head); 0 otherwise.
    public static func transientFloats(config c: ModelConfig, sequences B: Int, shard: ShardSpec = .single,
                                       recompute: Recompute, attention: AttentionKernel = .naive) -> Int {
        if recompute == .selective && attention == .naive && (0..<c.layers).contains(where: { shard.holds(layer: $0) }) {
            return B * shard.heads(c).qHeads * c.seqLen * c.seqLen
        }
        guard recompute == .full else { return 0 }
        return (0..<c.layers).filter { shard.holds(layer: $0) }
            .map { layerActivationFloats(config: c, sequences: B, shard: shard, layer: $0, attention: attention) }.max() ?? 0
    }

    /// The floats layer `l`'s forward keeps for its backward beyond its input (its output,
    /// which the next layer keeps as input, included); under selective recomputation, without
    /// the attention probabilities; with the fused attention kernel, the softmax statistics
    /// (one per row) instead of the probabilities.
    public static func layerActivationFloats(config c: ModelConfig, sequences B: Int, shard: ShardSpec, layer l: Int,
                                             recompute: Recompute = .none, attention: AttentionKernel = .naive) -> Int {
        let T = c.seqLen, n = B * T, C = c.dModel, D = c.headDim, r = shard.residualRows(tokens: n)
        let heads = shard.heads(c)
        var total = 4 * r * C + 2 * r                                 // xn1, a, xn2, block output; two rstd (blocks of rows under SP)
        total += n * heads.qHeads * D * 2 + 2 * n * heads.kvHeads * D   // q, o; k, v
        if attention == .fused {
            total += B * heads.qHeads * T                             // softmax statistics
        } else if recompute != .selective {
            total += B * heads.qHeads * T * T                         // attention probabilities
        }
        if c.isMoE(layer: l) {
            let assignments = n / shard.tp * c.topK                   // this rank's tokens' assignments
            total += n * c.experts + n * c.topK + n + B * c.experts   // routing: probabilities, gates, lse, fractions
            // returned rows, and per expert the received x, h, a, y
            total += assignments * C + assignments * (2 * C + c.ffn.keptPerRow * c.ffnHidden)
        } else {
            total += c.ffn.keptPerRow * n * c.ffnHidden / shard.tp
        }
        return total
    }

    /// Forward only, returning the summed LM loss over the tokens (for evaluation and tests).
    public func loss(tokens: [Int32], targets: [Int32]) -> Double {
        let n = tokens.count, c = config.dModel
        var x = embed(tokens)
        for l in 0..<config.layers { x = blockForward(l, x).0 }
        let xf = Tensor(zeros: [x.rows, c]), rstdF = Tensor(zeros: [x.rows])
        RMSNorm.forward(x, params.value("norm_f"), eps: eps, y: xf, rstd: rstdF)
        let logits = Tensor(zeros: [n, vocab.count])
        Kernels.linearForward(gathered(xf), params.value(headName), into: logits)
        return CrossEntropy.forwardBackward(logits: logits, targets: targets, vocab: vocab, gradScale: 0, parallel: parallel)
    }
}

/// What one micro-batch reports: summed losses and the experts' load.
public struct MicroBatchStats: Sendable {
    public var tokens = 0
    public var lossSum = 0.0
    /// Sum over sequences and MoE layers of the per-sequence load-balancing loss.
    public var auxSum = 0.0
    /// Sum over tokens and MoE layers of the router's squared log-sum-exp.
    public var zSum = 0.0
    /// Kept assignments per (MoE layer, expert); rows of dense layers stay zero.
    public var load: [[Int]]
    public var dropped = 0
    public var assignments = 0
    public var peakActivationFloats = 0

    public init(layers: Int, experts: Int) { load = Array(repeating: Array(repeating: 0, count: experts), count: layers) }

    mutating func record(layer: Int, routing r: Routing) {
        auxSum += r.auxSum
        zSum += r.zSum
        for e in 0..<r.experts { load[layer][e] += r.load[e] }
        dropped += r.dropped
        assignments += r.tokens * r.k
    }

    /// Adds another micro-batch's figures.
    public mutating func merge(_ o: MicroBatchStats) {
        tokens += o.tokens; lossSum += o.lossSum; auxSum += o.auxSum; zSum += o.zSum
        for l in load.indices { for e in load[l].indices { load[l][e] += o.load[l][e] } }
        dropped += o.dropped; assignments += o.assignments
        peakActivationFloats = max(peakActivationFloats, o.peakActivationFloats)
    }
}
