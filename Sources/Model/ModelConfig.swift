/// The hyper-parameters of the MoE transformer. Plain data; `validate()` checks the
/// combinations that make the math undefined, with messages naming the numbers.
///
/// Dimension legend used in the model's comments:
/// B micro-batch sequences, T sequence length, N = B*T tokens, C d_model, H query heads,
/// G KV heads, D head dim (C/H), E experts, K top-k, F FFN (expert) hidden size, V vocabulary.
public struct ModelConfig: Equatable, Sendable {
    public var vocab: Int = 256          // V: byte-level
    public var dModel: Int = 64          // C
    public var layers: Int = 2           // L
    public var heads: Int = 4            // H
    public var kvHeads: Int = 1          // G: 1 = multi-query attention, H = multi-head
    public var ffnHidden: Int = 128      // F: hidden size of each expert and of dense FFN layers
    /// The MLP of dense layers and of each expert (`FFNKind`).
    public var ffn: FFNKind = .gelu
    public var experts: Int = 16         // E
    public var topK: Int = 2             // K
    /// Every `moeEvery`-th layer (1-based) is MoE, the others dense: 1 = all MoE, 0 = all dense.
    public var moeEvery: Int = 1
    /// Per-expert capacity = ceil(capacityFactor * T * K / E) assignments per sequence; 0 = unlimited.
    public var capacityFactor: Double = 1.25
    public var auxLossCoef: Double = 0.01
    public var zLossCoef: Double = 0.0
    public var tieEmbeddings: Bool = false
    public var seqLen: Int = 64          // T
    public var ropeTheta: Double = 10000
    public var normEps: Double = 1e-5
    public var initStd: Double = 0.02
    /// Scales the router's initial weights (>1 makes routing deliberately peaked and imbalanced).
    public var routerInitScale: Double = 1.0

    public init() {}

    public var headDim: Int { dModel / heads }

    public func isMoE(layer: Int) -> Bool { moeEvery > 0 && (layer + 1) % moeEvery == 0 && experts > 0 }

    public struct InvalidConfig: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Throws the first violated rule, in words a user can act on.
    public func validate() throws {
        typealias V = Validation
        try V.require(vocab, in: 2...V.maxCount, "vocab")
        try V.require(dModel, in: 2...V.maxCount, "--d-model")
        try V.require(layers, in: 1...1024, "--layers")
        try V.require(heads, in: 1...dModel, "--heads")
        try V.require(dModel % heads == 0, "--d-model \(dModel) is not divisible by --heads \(heads)")
        try V.require(headDim % 2 == 0, "head dimension d-model/heads = \(dModel)/\(heads) = \(headDim) must be even for rotary positions")
        try V.require(kvHeads, in: 1...heads, "--kv-heads")
        try V.require(heads % kvHeads == 0, "--heads \(heads) is not divisible by --kv-heads \(kvHeads)")
        try V.require(ffnHidden, in: 1...V.maxCount, "--ffn-hidden")
        try V.require(moeEvery, in: 0...layers, "--moe-every", note: "0 meaning all dense")
        try V.require(experts, in: 1...4096, "--experts")
        try V.require(topK, in: 1...experts, "--top-k")
        try V.require(seqLen, in: 2...V.maxCount, "--seq-len")
        try V.require(capacityFactor, in: 0...Double(experts), "--capacity-factor", note: "0 meaning unlimited")
        try V.require(auxLossCoef, in: 0...100, "--aux-loss-coef")
        try V.require(zLossCoef, in: 0...100, "--z-loss-coef")
        try V.require(ropeTheta, in: 1.0000001...1e12, "rope_theta")
        try V.require(normEps, in: 1e-30...0.1, "norm_eps")
        try V.require(initStd, in: 1e-30...10, "init_std")
        try V.require(routerInitScale, in: 1e-30...1000, "--router-init-scale")
    }

    /// Expert capacity (assignments per expert per sequence), or nil when unlimited.
    public var expertCapacity: Int? {
        guard capacityFactor > 0 else { return nil }
        // The relative tolerance keeps a product that should be whole (1.1 x 50 = 55.000000000000007
        // in float64) from rounding up one too far.
        let exact = capacityFactor * Double(seqLen * topK) / Double(experts)
        return max(1, Int((exact * (1 - 1e-12)).rounded(.up)))
    }
}

/// Activation recomputation (Korthikanti et al. 2022). `none`: the forward keeps everything
/// the backward reads. `selective`: the attention core's probabilities (B x H x T x T, the
/// largest activation at long sequences) are dropped, and the backward reruns the attention
/// core from the kept q, k and v (the score GEMM, the softmax and the product with V, as
/// Megatron-LM does), head by head. `full` (Megatron's
/// `--recompute-granularity full`): each transformer layer keeps only its input, and the
/// backward reruns the layer's forward (its kernels and its tensor- and expert-parallel
/// messages) just before the layer's backward; the embedding and the head keep theirs. The
/// numbers are the same in every mode: the recomputed values are the ones the forward made.
public enum Recompute: String, Sendable, CaseIterable, Codable {
    case none, selective, full
}

/// How the emulated GPU runs the attention core (the numbers are the same either way).
/// `naive`: score GEMM, softmax and PV as separate kernels, the T x T probabilities written to
/// and read from HBM and kept for the backward. `fused` (FlashAttention-2, Dao 2023): one
/// IO-aware kernel; the probabilities never reach HBM, only O and the softmax statistics (one
/// log-sum-exp per row) are kept, and the backward recomputes the probabilities on chip. Its
/// FLOPs are counted as the kernel does them: blocks above the causal diagonal are skipped, so
/// each T x T product costs half its dense count (the paper's convention for causal FLOPs).
public enum AttentionKernel: String, Sendable, CaseIterable, Codable {
    case fused, naive
}

/// The MLP of dense layers and experts: `gelu`, two matrices (h = x W_up^T, a = gelu(h),
/// y = a W_down^T; GPT-2, GPT-3, Megatron's GPT), or `swiglu`, three (a = silu(x W_gate^T) *
/// (x W_up^T), y = a W_down^T; Shazeer 2020, "GLU Variants Improve Transformer"; LLaMA).
/// F (`ffn_hidden`) is the width of h (and of the gate) either way.
public enum FFNKind: String, CaseIterable, Sendable, Codable {
    case gelu, swiglu
    /// Hidden-width tensors an MLP keeps per row for its backward: h and a; SwiGLU also the gate.
    public var keptPerRow: Int { self == .swiglu ? 3 : 2 }
    /// Weight matrices of C x F.
    public var matrices: Int { self == .swiglu ? 3 : 2 }
}
