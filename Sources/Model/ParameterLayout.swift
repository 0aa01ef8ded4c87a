import Tensor

/// How a parameter tensor starts.
public enum ParamInit: Equatable, Sendable {
    case normal(std: Double)
    case ones
}

/// One named parameter tensor in the single-rank layout.
public struct ParamSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let initial: ParamInit
    /// Whether AdamW applies weight decay (matrices yes, norm gains no).
    public let decay: Bool
    /// Offset of the first element in the flat buffer.
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// The ordered list of all parameters of the model, with their offsets in one flat buffer.
/// The order here is the fixed order of the parameter checksum and of dumps.
public struct ParameterLayout: Sendable {
    public let specs: [ParamSpec]
    public let totalCount: Int
    private let index: [String: Int]

    public init(config c: ModelConfig) {
        var specs: [ParamSpec] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int], _ initial: ParamInit, decay: Bool = true) {
            let s = ParamSpec(name: name, shape: shape, initial: initial, decay: decay, offset: offset)
            specs.append(s)
            offset += s.count
        }
        let std = c.initStd
        let residualStd = c.initStd / Double(2 * c.layers).squareRoot()  // GPT-2: output projections scaled by 1/sqrt(2L)
        let D = c.headDim
        add("tok_emb", [c.vocab, c.dModel], .normal(std: std))
        for l in 0..<c.layers {
            let p = "layers.\(l)"
            add("\(p).attn_norm", [c.dModel], .ones, decay: false)
            add("\(p).attn.wq", [c.heads * D, c.dModel], .normal(std: std))
            add("\(p).attn.wk", [c.kvHeads * D, c.dModel], .normal(std: std))
            add("\(p).attn.wv", [c.kvHeads * D, c.dModel], .normal(std: std))
            add("\(p).attn.wo", [c.dModel, c.heads * D], .normal(std: residualStd))
            add("\(p).ffn_norm", [c.dModel], .ones, decay: false)
            if c.isMoE(layer: l) {
                add("\(p).moe.router", [c.experts, c.dModel], .normal(std: std * c.routerInitScale))
                add("\(p).moe.w_up", [c.experts, c.ffnHidden, c.dModel], .normal(std: std))
                add("\(p).moe.w_down", [c.experts, c.dModel, c.ffnHidden], .normal(std: residualStd))
            } else {
                add("\(p).ffn.w_up", [c.ffnHidden, c.dModel], .normal(std: std))
                add("\(p).ffn.w_down", [c.dModel, c.ffnHidden], .normal(std: residualStd))
            }
        }
        add("norm_f", [c.dModel], .ones, decay: false)
        if !c.tieEmbeddings { add("lm_head", [c.vocab, c.dModel], .normal(std: std)) }
        self.specs = specs
        self.totalCount = offset
        var idx: [String: Int] = [:]
        for (i, s) in specs.enumerated() { idx[s.name] = i }
        self.index = idx
    }

    public subscript(name: String) -> ParamSpec? { index[name].map { specs[$0] } }

    /// Parameters touched by one token: everything except the experts it is not routed to.
    public func activeCount(config c: ModelConfig) -> Int {
        var n = 0
        for s in specs {
            if s.name.hasSuffix(".moe.w_up") || s.name.hasSuffix(".moe.w_down") {
                n += s.count / c.experts * c.topK
            } else {
                n += s.count
            }
        }
        return n
    }

    /// Fills `storage` with the initial values. Element `i` of a tensor depends only on
    /// (seed, parameter name, i), so a shard can draw its slice without the rest.
    public func initialize(_ storage: Storage, seed: UInt64) {
        precondition(storage.count >= totalCount)
        for s in specs {
            let p = storage.base + s.offset
            switch s.initial {
            case .ones:
                p.update(repeating: 1, count: s.count)
            case .normal(let std):
                let key = hashKey(seed, stableHash(s.name))
                let fstd = Float(std)
                for i in 0..<s.count { p[i] = fstd * normalAt(key, UInt64(i)) }
            }
        }
    }
}

/// The model's parameters and their gradients, each one flat buffer in the layout's order.
public final class Parameters: @unchecked Sendable {
    public let layout: ParameterLayout
    public let values: Storage
    public let grads: Storage

    public init(layout: ParameterLayout) {
        self.layout = layout
        values = Storage(count: layout.totalCount)
        grads = Storage(count: layout.totalCount)
    }

    public func value(_ name: String) -> Tensor {
        guard let s = layout[name] else { preconditionFailure("no parameter named \(name)") }
        return Tensor(view: values, offset: s.offset, shape: s.shape)
    }

    public func grad(_ name: String) -> Tensor {
        guard let s = layout[name] else { preconditionFailure("no parameter named \(name)") }
        return Tensor(view: grads, offset: s.offset, shape: s.shape)
    }

    public func zeroGrads() { grads.base.update(repeating: 0, count: grads.count) }
}
