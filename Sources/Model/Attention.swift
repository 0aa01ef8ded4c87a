import Tensor

/// Which heads a rank computes. On one rank all of them; under tensor parallelism a
/// contiguous block of query heads, and either a block of KV heads or all of them
/// (replicated, when there are fewer KV heads than TP ranks, as with multi-query attention).
public struct HeadSlice: Sendable, Equatable {
    public let qHeads: Int        // local query heads
    public let kvHeads: Int       // local KV heads
    public let qHeadBase: Int     // global index of the first local query head
    public let kvHeadBase: Int    // global index of the first local KV head
    public let groupSize: Int     // global H / G: query heads sharing one KV head
    public let headDim: Int

    public init(qHeads: Int, kvHeads: Int, qHeadBase: Int, kvHeadBase: Int, groupSize: Int, headDim: Int) {
        self.qHeads = qHeads; self.kvHeads = kvHeads; self.qHeadBase = qHeadBase
        self.kvHeadBase = kvHeadBase; self.groupSize = groupSize; self.headDim = headDim
    }

    public static func full(_ c: ModelConfig) -> HeadSlice {
        HeadSlice(qHeads: c.heads, kvHeads: c.kvHeads, qHeadBase: 0, kvHeadBase: 0,
                  groupSize: c.heads / c.kvHeads, headDim: c.headDim)
    }

    /// Local KV head used by local query head `h`.
    @inline(__always) func kvHead(for h: Int) -> Int { (qHeadBase + h) / groupSize - kvHeadBase }
}

/// Causal self-attention with rotary positions and grouped KV heads (MHA when G = H,
/// multi-query when G = 1). Forward caches q, k, v (after rotation), the concatenated head
/// outputs and, with the naive kernel and no selective recomputation, the softmax P (else
/// the backward recomputes P from q and k; the fused kernel keeps each row's log-sum-exp, as
/// FlashAttention does); the backward is the hand-derived chain rule below.
public enum Attention {
    public struct Weights {
        public let wq: Tensor  // (Hl*D, C)
        public let wk: Tensor  // (Gl*D, C)
        public let wv: Tensor  // (Gl*D, C)
        public let wo: Tensor  // (C, Hl*D)
        public init(wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor) { self.wq = wq; self.wk = wk; self.wv = wv; self.wo = wo }
    }

    public struct Cache {
        var x: Tensor      // (N, C) the normalised input (under sequence parallelism, gathered again for the backward)
        let q: Tensor      // (N, Hl*D)
        let k: Tensor      // (N, Gl*D)
        let v: Tensor      // (N, Gl*D)
        let probs: Tensor? // (B, Hl, T, T); nil when the backward recomputes them (selective, fused)
        let o: Tensor      // (N, Hl*D)
        let lse: Tensor?   // (B, Hl, T): the fused kernel's softmax statistics, one log-sum-exp per row
        let kernel: AttentionKernel
        /// Floats this cache holds beyond its input (which belongs to the caller).
        public var floatCount: Int { q.count + k.count + v.count + (probs?.count ?? 0) + o.count + (lse?.count ?? 0) }
    }

    /// One (sequence, head)'s causal softmax probabilities P = softmax(q k^T * scale) into
    /// `p` (T x T, zero above the diagonal). The forward's kernel, and the backward's under
    /// selective recomputation.
    /// With `lse`, each row's log-sum-exp of its scaled scores is written there too.
    static func probabilities(q qp: UnsafeMutablePointer<Float>, lda qw: Int, k kp: UnsafeMutablePointer<Float>, ldb kw: Int,
                              T: Int, D: Int, scale: Float, into p: UnsafeMutablePointer<Float>,
                              lse: UnsafeMutablePointer<Float>? = nil) {
        Kernels.gemm(transA: false, transB: true, m: T, n: T, k: D, alpha: scale, a: qp, lda: qw,
                     b: kp, ldb: kw, beta: 0, c: p, ldc: T)
        for i in 0..<T {
            let row = p + i * T
            let m = VectorMath.maximum(row, count: i + 1)
            let sum = VectorMath.expShifted(row, count: i + 1, shift: m)
            VectorMath.scale(row, count: i + 1, by: Float(1 / sum))
            if i + 1 < T { (row + i + 1).update(repeating: 0, count: T - i - 1) }
            lse?[i] = m + Float(log(sum))
        }
    }

    /// The fused kernel's forward over all (sequence, head) pairs (FlashAttention-2): the
    /// two GEMMs on the causal half, the softmax on chip; HBM traffic of Q, K and V read
    /// (K and V once per query head), O and the statistics written.
    static func fusedForward(bh: Double, tt: Double, td: Double, T: Double, D: Double) -> [(flops: Double, elements: Double)] {
        [(2 * bh * tt * D + 2.5 * bh * tt, bh * (4 * td + T))]
    }

    /// The fused backward: D = rowsum(dO * O), then one kernel that recomputes the
    /// probabilities and makes dV, dP, dQ and dK (five GEMMs on the causal half); HBM traffic
    /// counted as Q, K, V, O, dO and the statistics read, dQ, dK and dV written. (FlashAttention-2's
    /// main kernel reads D instead of O, so this counts one T x D read per head more than it
    /// does; K and V are counted once per query head, where the kernel rereads them per query
    /// block; the softmax FLOPs, 2.5 and 4.5 per causal score, are beyond the paper's GEMM count.)
    static func fusedBackward(bh: Double, tt: Double, td: Double, T: Double, D: Double) -> [(flops: Double, elements: Double)] {
        [(2 * bh * td, 2 * bh * td + bh * T), (5 * bh * tt * D + 4.5 * bh * tt, bh * (8 * td + 2 * T))]
    }

    /// The accounting of the score GEMM and the causal softmax over all (sequence, head)
    /// pairs: one batched kernel each on a GPU.
    static func accountProbabilities(bh: Double, tt: Double, td: Double, D: Double) {
        Kernels.account(flops: 2 * bh * tt * D, elements: bh * (2 * td + tt))
        Kernels.account(flops: 5 * bh * tt, elements: 2 * bh * tt)
    }

    /// The accounting of O = P V over all (sequence, head) pairs: one batched GEMM.
    static func accountValues(bh: Double, tt: Double, td: Double, D: Double) {
        Kernels.account(flops: 2 * bh * tt * D, elements: bh * (tt + 2 * td))
    }

    /// x (N, C) -> y (N, C). Under tensor parallelism y is this rank's partial sum
    /// (row-parallel output projection) and the caller all-reduces it.
    /// `keepProbabilities` false (selective recomputation), or the fused kernel: the
    /// probabilities are made head by head in one T x T buffer and not kept; the fused kernel
    /// keeps each row's log-sum-exp instead, as FlashAttention does.
    public static func forward(_ x: Tensor, _ w: Weights, heads hs: HeadSlice, seqLen T: Int,
                               rotary: Rotary, y: Tensor, keepProbabilities: Bool = true, kernel: AttentionKernel = .naive) -> Cache {
        let keepProbabilities = keepProbabilities && kernel == .naive
        let n = x.rows, B = n / T, D = hs.headDim
        let qw = hs.qHeads * D, kw = hs.kvHeads * D
        // Written whole before they are read: the projections (beta 0), each (sequence, head)'s
        // rows of P (zero above the diagonal) and its block of o.
        let q = Tensor(uninitialized: [n, qw]), k = Tensor(uninitialized: [n, kw]), v = Tensor(uninitialized: [n, kw])
        Kernels.linearForward(x, w.wq, into: q)
        Kernels.linearForward(x, w.wk, into: k)
        Kernels.linearForward(x, w.wv, into: v)
        rotary.apply(q, heads: hs.qHeads)
        rotary.apply(k, heads: hs.kvHeads)
        let probs = keepProbabilities ? Tensor(uninitialized: [B, hs.qHeads, T, T]) : Tensor(uninitialized: [T, T])
        let o = Tensor(uninitialized: [n, qw])
        let scale = 1 / Float(D).squareRoot()
        // The per-(sequence, head) loops below are one batched kernel each on a GPU:
        // S = QK^T, causal softmax, O = PV. They are costed once, from their total shapes.
        let bh = Double(B * hs.qHeads), tt = Double(T * T), td = Double(T * D)
        let lse = kernel == .fused ? Tensor(zeros: [B, hs.qHeads, T]) : nil
        if kernel == .fused {
            for k in fusedForward(bh: bh, tt: tt, td: td, T: Double(T), D: Double(D)) { Kernels.account(flops: k.flops, elements: k.elements) }
        } else {
            accountProbabilities(bh: bh, tt: tt, td: td, D: Double(D))
            accountValues(bh: bh, tt: tt, td: td, D: Double(D))
        }
        Kernels.unaccounted {
        for b in 0..<B {
            for h in 0..<hs.qHeads {
                let g = hs.kvHead(for: h)
                let qp = q.ptr + b * T * qw + h * D, kp = k.ptr + b * T * kw + g * D, vp = v.ptr + b * T * kw + g * D
                let p = keepProbabilities ? probs.ptr + (b * hs.qHeads + h) * T * T : probs.ptr
                probabilities(q: qp, lda: qw, k: kp, ldb: kw, T: T, D: D, scale: scale, into: p,
                              lse: lse.map { $0.ptr + (b * hs.qHeads + h) * T })
                // O = P v (T, D) into the head's columns of o.
                Kernels.gemm(transA: false, transB: false, m: T, n: D, k: T, a: p, lda: T, b: vp, ldb: kw,
                             beta: 0, c: o.ptr + b * T * qw + h * D, ldc: qw)
            }
        }
        }
        Kernels.linearForward(o, w.wo, into: y)
        return Cache(x: x, q: q, k: k, v: v, probs: keepProbabilities ? probs : nil, o: o, lse: lse, kernel: kernel)
    }

    /// dy (N, C) -> dx (N, C), accumulating weight gradients into `dw`.
    /// With `accumulate` the input gradient is added to `dx`.
    public static func backward(_ cache: Cache, _ w: Weights, heads hs: HeadSlice, seqLen T: Int,
                                rotary: Rotary, dy: Tensor, dw: Weights, dx: Tensor, accumulate: Bool) {
        let n = cache.x.rows, B = n / T, D = hs.headDim
        let qw = hs.qHeads * D, kw = hs.kvHeads * D
        let dO = Tensor(uninitialized: [n, qw])  // written whole (beta 0)
        Kernels.linearBackward(cache.o, w.wo, dy, dx: dO, dw: dw.wo)
        let dq = Tensor(zeros: [n, qw]), dk = Tensor(zeros: [n, kw]), dv = Tensor(zeros: [n, kw])
        let dP = Tensor(zeros: [T, T])
        let scale = 1 / Float(D).squareRoot()
        let bh = Double(B * hs.qHeads), tt = Double(T * T), td = Double(T * D)
        // Selective recomputation or the fused kernel: the probabilities again, head by head,
        // from q and k (the same function as the forward's, so the same values). Selective
        // recomputation reruns the whole attention core as Megatron-LM does (Korthikanti et al.
        // 2022, section 5: QK^T, softmax and the product with V), the product into a scratch
        // buffer the backward does not need.
        let recomputed = cache.probs == nil ? Tensor(zeros: [T, T]) : nil
        let selective = recomputed != nil && cache.kernel == .naive
        let values = selective ? Tensor(zeros: [T, D]) : nil
        if cache.kernel == .fused {
            for k in fusedBackward(bh: bh, tt: tt, td: td, T: Double(T), D: Double(D)) { Kernels.account(flops: k.flops, elements: k.elements) }
        } else {
            if selective {
                accountProbabilities(bh: bh, tt: tt, td: td, D: Double(D))
                accountValues(bh: bh, tt: tt, td: td, D: Double(D))
            }
            // Batched on a GPU: dP = dO V^T, dV = P^T dO, softmax backward, dQ = dS K, dK = dS^T Q.
            for _ in 0..<4 { Kernels.account(flops: 2 * bh * tt * Double(D), elements: bh * (tt + 2 * td)) }
            Kernels.account(flops: 4 * bh * tt, elements: 3 * bh * tt)
        }
        Kernels.unaccounted {
        for b in 0..<B {
            for h in 0..<hs.qHeads {
                let g = hs.kvHead(for: h)
                let qOff = b * T * qw + h * D, kvOff = b * T * kw + g * D
                let p: UnsafeMutablePointer<Float>
                if let probs = cache.probs {
                    p = probs.ptr + (b * hs.qHeads + h) * T * T
                } else {
                    p = recomputed!.ptr
                    probabilities(q: cache.q.ptr + qOff, lda: qw, k: cache.k.ptr + kvOff, ldb: kw, T: T, D: D, scale: scale, into: p)
                    if let values {
                        Kernels.gemm(transA: false, transB: false, m: T, n: D, k: T, a: p, lda: T, b: cache.v.ptr + kvOff, ldb: kw,
                                     beta: 0, c: values.ptr, ldc: D)
                    }
                }
                let dOh = dO.ptr + qOff
                // dP = dO v^T ; dv += P^T dO
                Kernels.gemm(transA: false, transB: true, m: T, n: T, k: D, a: dOh, lda: qw,
                             b: cache.v.ptr + kvOff, ldb: kw, beta: 0, c: dP.ptr, ldc: T)
                Kernels.gemm(transA: true, transB: false, m: T, n: D, k: T, a: p, lda: T, b: dOh, ldb: qw,
                             beta: 1, c: dv.ptr + kvOff, ldc: kw)
                // dS = P * (dP - rowsum(dP * P)) * scale (masked entries have P = 0).
                for i in 0..<T {
                    let pr = p + i * T, dr = dP.ptr + i * T
                    var s: Float = 0
                    for j in 0...i { s += pr[j] * dr[j] }
                    for j in 0...i { dr[j] = pr[j] * (dr[j] - s) * scale }
                    if i + 1 < T { (dr + i + 1).update(repeating: 0, count: T - i - 1) }
                }
                // dq = dS k ; dk += dS^T q
                Kernels.gemm(transA: false, transB: false, m: T, n: D, k: T, a: dP.ptr, lda: T,
                             b: cache.k.ptr + kvOff, ldb: kw, beta: 0, c: dq.ptr + qOff, ldc: qw)
                Kernels.gemm(transA: true, transB: false, m: T, n: D, k: T, a: dP.ptr, lda: T,
                             b: cache.q.ptr + qOff, ldb: qw, beta: 1, c: dk.ptr + kvOff, ldc: kw)
            }
        }
        }
        rotary.apply(dq, heads: hs.qHeads, inverse: true)
        rotary.apply(dk, heads: hs.kvHeads, inverse: true)
        Kernels.linearBackward(cache.x, w.wq, dq, dx: dx, dw: dw.wq, accumulateDx: accumulate)
        Kernels.linearBackward(cache.x, w.wk, dk, dx: dx, dw: dw.wk, accumulateDx: true)
        Kernels.linearBackward(cache.x, w.wv, dv, dx: dx, dw: dw.wv, accumulateDx: true)
    }
}

#if canImport(Glibc)
import Glibc
#endif
