/// The hyper-parameters of the MoE transformer. Plain data; `validate()` checks the
/// combinations that make the math undefined, with messages naming the numbers.
///
/// Dimension legend used in the model's comments:
/// B micro-batch sequences, T sequence length, N = B*T tokens, C d_model, H query heads,
/// G KV heads, D head dim (C/H), E experts, K top-k, F FFN (expert) hidden size, V vocabulary.
public struct ModelConfig: Equatable, Sendable, Codable {
    public var vocab: Int = 256          // V: byte-level
    public var dModel: Int = 64          // C
    public var layers: Int = 2           // L
    public var heads: Int = 4            // H
    public var kvHeads: Int = 1          // G: 1 = multi-query attention, H = multi-head
    public var ffnHidden: Int = 128      // F: hidden size of each expert and of dense FFN layers
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
        func need(_ ok: Bool, _ msg: @autoclosure () -> String) throws { if !ok { throw InvalidConfig(msg()) } }
        try need(vocab >= 2 && vocab <= 65536, "vocab must be between 2 and 65536 (got \(vocab))")
        try need(dModel >= 2, "--d-model must be at least 2 (got \(dModel))")
        try need(layers >= 1, "--layers must be at least 1 (got \(layers))")
        try need(heads >= 1, "--heads must be at least 1 (got \(heads))")
        try need(dModel % heads == 0, "--d-model \(dModel) is not divisible by --heads \(heads)")
        try need(headDim % 2 == 0, "head dimension d-model/heads = \(dModel)/\(heads) = \(headDim) must be even for rotary positions")
        try need(kvHeads >= 1 && kvHeads <= heads, "--kv-heads must be between 1 and --heads \(heads) (got \(kvHeads))")
        try need(heads % kvHeads == 0, "--heads \(heads) is not divisible by --kv-heads \(kvHeads)")
        try need(ffnHidden >= 1, "ffn hidden size must be at least 1 (got \(ffnHidden))")
        try need(moeEvery >= 0, "moe_every must be 0 (all dense) or positive (got \(moeEvery))")
        try need(experts >= 1, "--experts must be at least 1 (got \(experts))")
        try need(topK >= 1, "--top-k must be at least 1 (got \(topK))")
        try need(topK <= experts, "--top-k \(topK) exceeds --experts \(experts)")
        try need(capacityFactor >= 0, "--capacity-factor must be >= 0, 0 meaning unlimited (got \(capacityFactor))")
        try need(auxLossCoef >= 0 && zLossCoef >= 0, "loss coefficients must be >= 0")
        try need(seqLen >= 2, "--seq-len must be at least 2 (got \(seqLen))")
        try need(normEps > 0 && initStd > 0 && ropeTheta > 1, "norm_eps and init_std must be positive and rope_theta > 1")
        try need(routerInitScale > 0, "router_init_scale must be positive (got \(routerInitScale))")
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
