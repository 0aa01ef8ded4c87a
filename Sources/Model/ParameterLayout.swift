import Tensor

/// How a parameter tensor starts.
public enum ParamInit: Equatable, Sendable {
    case normal(std: Double)
    case ones
}

/// How the copies of a parameter on different ranks relate.
public enum ParamPlacement: Equatable, Sendable {
    /// Sliced over the tensor-parallel group (each TP rank holds a different block).
    case tpSharded
    /// The same on every TP rank; the gradient each rank computes is complete.
    case replicated
    /// The same on every TP rank, but each rank computes only part of the gradient (its
    /// heads' share for replicated KV projections, its tokens' share for the router and,
    /// under sequence parallelism, for the norms):
    /// gradients are summed over the TP group.
    case replicatedPartialGrad
    /// Whole experts of this rank's expert-parallel share.
    case expert
}

/// A group of parameters whose gradients the backward completes together: the head (final
/// norm and LM head, first in the backward), one transformer layer, or the token embedding
/// (last). Overlapped gradient reduction sends one bucket per unit as soon as it is complete.
public enum GradientUnit: Hashable, Sendable {
    case head, layer(Int), embedding

    /// The unit a parameter (by its name in `ParameterLayout`) belongs to.
    public static func of(parameter name: String) -> GradientUnit {
        if name.hasPrefix("layers."), let l = Int(name.dropFirst(7).prefix { $0 != "." }) { return .layer(l) }
        return name == "tok_emb" ? .embedding : .head
    }
}

/// One named parameter tensor as one rank holds it.
public struct ParamSpec: Equatable, Sendable {
    public let name: String
    /// Local shape (what this rank holds).
    public let shape: [Int]
    /// Shape in the single-rank model.
    public let globalShape: [Int]
    /// Where the local block sits in the full tensor (nil: the whole tensor).
    public let slice: TensorSlice?
    public let placement: ParamPlacement
    public let initial: ParamInit
    /// Whether AdamW applies weight decay (matrices yes, norm gains no).
    public let decay: Bool
    /// Offset of the first element in the flat buffer.
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var globalCount: Int { globalShape.reduce(1, *) }

    /// Calls `body(localIndex, globalIndex)` for every local element.
    public func forEachElement(_ body: (Int, Int) -> Void) {
        if let slice { slice.forEachElement(globalShape: globalShape, body) } else { for i in 0..<count { body(i, i) } }
    }
}

/// The ordered list of the parameters one rank holds, with their offsets in one flat buffer.
/// The buffer has two regions: dense parameters first, then expert parameters, each padded
/// to a multiple of its alignment (the ZeRO-1 partition count of its data-parallel group),
/// so that each region splits into equal contiguous shards. On one rank the layout is the
/// single-rank layout, whose spec order is the fixed order of the checksum and of dumps.
public struct ParameterLayout: Sendable {
    public let specs: [ParamSpec]
    public let totalCount: Int
    public let shard: ShardSpec
    /// Padded ranges of the dense and expert regions in the flat buffer.
    public let denseRegion: Range<Int>
    public let expertRegion: Range<Int>
    private let index: [String: Int]

    public init(config c: ModelConfig, shard: ShardSpec = .single, denseAlignment: Int = 1, expertAlignment: Int = 1) {
        struct Pending { let name: String; let global: [Int]; let slice: TensorSlice?; let placement: ParamPlacement; let initial: ParamInit; let decay: Bool }
        var pending: [Pending] = []
        func add(_ name: String, _ global: [Int], _ initial: ParamInit, decay: Bool = true,
                 slice: TensorSlice? = nil, placement: ParamPlacement = .replicated) {
            let effective = (slice != nil && slice!.length == global[slice!.dim] && slice!.start == 0) ? nil : slice
            pending.append(Pending(name: name, global: global, slice: effective, placement: placement, initial: initial, decay: decay))
        }
        let std = c.initStd
        let residualStd = c.initStd / Double(2 * c.layers).squareRoot()  // GPT-2: output projections scaled by 1/sqrt(2L)
        let D = c.headDim
        let heads = shard.heads(c)
        let vocab = shard.vocabRange(c)
        let experts = shard.expertRange(c)
        let ffnLocal = c.ffnHidden / shard.tp
        let tpSharded: ParamPlacement = shard.tp > 1 ? .tpSharded : .replicated
        let vocabSlice = TensorSlice(dim: 0, start: vocab.lowerBound, length: vocab.count)
        // Under sequence parallelism each TP rank normalises only its block of rows: the norm
        // weights' gradients are partial sums over the group.
        let normPlacement: ParamPlacement = shard.sequenceParallel ? .replicatedPartialGrad : .replicated
        if shard.embedding {
            add("tok_emb", [c.vocab, c.dModel], .normal(std: std), slice: vocabSlice, placement: tpSharded)
        }
        for l in 0..<c.layers where shard.holds(layer: l) {
            let p = "layers.\(l)"
            add("\(p).attn_norm", [c.dModel], .ones, decay: false, placement: normPlacement)
            add("\(p).attn.wq", [c.heads * D, c.dModel], .normal(std: std),
                slice: TensorSlice(dim: 0, start: heads.qHeadBase * D, length: heads.qHeads * D), placement: tpSharded)
            let kvPlacement: ParamPlacement = shard.kvReplicated(c) ? .replicatedPartialGrad : tpSharded
            let kvSlice = TensorSlice(dim: 0, start: heads.kvHeadBase * D, length: heads.kvHeads * D)
            add("\(p).attn.wk", [c.kvHeads * D, c.dModel], .normal(std: std), slice: kvSlice, placement: kvPlacement)
            add("\(p).attn.wv", [c.kvHeads * D, c.dModel], .normal(std: std), slice: kvSlice, placement: kvPlacement)
            add("\(p).attn.wo", [c.dModel, c.heads * D], .normal(std: residualStd),
                slice: TensorSlice(dim: 1, start: heads.qHeadBase * D, length: heads.qHeads * D), placement: tpSharded)
            add("\(p).ffn_norm", [c.dModel], .ones, decay: false, placement: normPlacement)
            if c.isMoE(layer: l) {
                add("\(p).moe.router", [c.experts, c.dModel], .normal(std: std * c.routerInitScale),
                    placement: shard.tp > 1 ? .replicatedPartialGrad : .replicated)
                let expertSlice = TensorSlice(dim: 0, start: experts.lowerBound, length: experts.count)
                add("\(p).moe.w_up", [c.experts, c.ffnHidden, c.dModel], .normal(std: std), slice: expertSlice, placement: .expert)
                if c.ffn == .swiglu {
                    add("\(p).moe.w_gate", [c.experts, c.ffnHidden, c.dModel], .normal(std: std), slice: expertSlice, placement: .expert)
                }
                add("\(p).moe.w_down", [c.experts, c.dModel, c.ffnHidden], .normal(std: residualStd), slice: expertSlice, placement: .expert)
            } else {
                add("\(p).ffn.w_up", [c.ffnHidden, c.dModel], .normal(std: std),
                    slice: TensorSlice(dim: 0, start: shard.tpRank * ffnLocal, length: ffnLocal), placement: tpSharded)
                if c.ffn == .swiglu {
                    add("\(p).ffn.w_gate", [c.ffnHidden, c.dModel], .normal(std: std),
                        slice: TensorSlice(dim: 0, start: shard.tpRank * ffnLocal, length: ffnLocal), placement: tpSharded)
                }
                add("\(p).ffn.w_down", [c.dModel, c.ffnHidden], .normal(std: residualStd),
                    slice: TensorSlice(dim: 1, start: shard.tpRank * ffnLocal, length: ffnLocal), placement: tpSharded)
            }
        }
        if shard.head {
            add("norm_f", [c.dModel], .ones, decay: false, placement: normPlacement)
            if !c.tieEmbeddings { add("lm_head", [c.vocab, c.dModel], .normal(std: std), slice: vocabSlice, placement: tpSharded) }
        }

        // Offsets: the dense region, padded, then the expert region, padded. Within a region,
        // tensors keep the order above.
        func padded(_ n: Int, _ a: Int) -> Int { (n + a - 1) / a * a }
        var specs: [ParamSpec] = []
        var offset = 0
        func place(_ p: Pending) {
            var shape = p.global
            if let s = p.slice { shape[s.dim] = s.length }
            specs.append(ParamSpec(name: p.name, shape: shape, globalShape: p.global, slice: p.slice, placement: p.placement,
                                   initial: p.initial, decay: p.decay, offset: offset))
            offset += shape.reduce(1, *)
        }
        for p in pending where p.placement != .expert { place(p) }
        offset = padded(offset, max(denseAlignment, 1))
        let denseEnd = offset
        for p in pending where p.placement == .expert { place(p) }
        offset = denseEnd + padded(offset - denseEnd, max(expertAlignment, 1))
        // Restore the model order (the checksum and dump order) for iteration.
        let order = Dictionary(uniqueKeysWithValues: pending.enumerated().map { ($1.name, $0) })
        self.specs = specs.sorted { order[$0.name]! < order[$1.name]! }
        self.totalCount = offset
        self.shard = shard
        self.denseRegion = 0..<denseEnd
        self.expertRegion = denseEnd..<offset
        var idx: [String: Int] = [:]
        for (i, s) in self.specs.enumerated() { idx[s.name] = i }
        self.index = idx
    }

    /// Elements of the full model (what the single-rank layout holds, without padding).
    public var globalCount: Int { specs.reduce(0) { $0 + $1.globalCount } }

    public subscript(name: String) -> ParamSpec? { index[name].map { specs[$0] } }

    /// Parameters touched by one token: everything except the experts it is not routed to.
    public func activeCount(config c: ModelConfig) -> Int {
        var n = 0
        for s in specs {
            if s.placement == .expert {
                n += s.globalCount / c.experts * c.topK
            } else {
                n += s.globalCount
            }
        }
        return n
    }

    /// Fills `storage` with the initial values. Element `i` of a full tensor depends only on
    /// (seed, parameter name, i), so a shard draws exactly its block of the single-rank values.
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
                s.forEachElement { local, global in p[local] = fstd * normalAt(key, UInt64(global)) }
            }
        }
    }
}

/// Where a backward writes the gradients of the parameters whose flat buffer is not held
/// whole (ZeRO-2: each `GradientUnit`'s gradients live only while its backward runs).
public protocol GradientStore: AnyObject {
    /// The gradient of `spec`, for the backward running now.
    func gradient(_ spec: ParamSpec) -> Tensor
}

/// Where the layers read parameters that the rank does not hold whole (ZeRO-3: each
/// `GradientUnit`'s parameters are gathered before its forward and its backward, and freed).
public protocol ParameterStore: AnyObject {
    /// The value of `spec`, gathered for the pass running now.
    func value(_ spec: ParamSpec) -> Tensor
}

/// The model's parameters and their gradients, each one flat buffer in the layout's order;
/// or, with a `gradientStore`, the gradients are the store's and `grads` is empty; with a
/// `valueStore`, `values` holds only the ranges `heldValues` of the flat buffer (one after
/// the other) and the layers read the store's.
public final class Parameters: @unchecked Sendable {
    public let layout: ParameterLayout
    public let values: Storage
    public let grads: Storage
    /// The ranges of the flat buffer `values` holds, in order (the whole buffer, or ZeRO-3's shards).
    public let heldValues: [Range<Int>]
    /// Set when the gradients are not one flat buffer (`wholeGradients: false`).
    public var gradientStore: GradientStore?
    /// Set when the values are not held whole (`heldValues` is not the whole buffer).
    public var valueStore: ParameterStore?

    public init(layout: ParameterLayout, wholeGradients: Bool = true, heldValues: [Range<Int>]? = nil) {
        self.layout = layout
        self.heldValues = heldValues ?? [0..<layout.totalCount]
        values = Storage(count: self.heldValues.reduce(0) { $0 + $1.count })
        grads = Storage(count: wholeGradients ? layout.totalCount : 0)
    }

    /// Whether `values` is the whole flat buffer.
    public var holdsAllValues: Bool { heldValues == [0..<layout.totalCount] }

    /// The held value of flat offset `offset` (an offset inside `heldValues`, or the end of one).
    public func valuePointer(_ offset: Int) -> UnsafeMutablePointer<Float> {
        var base = 0
        for r in heldValues {
            if r.contains(offset) || offset == r.upperBound { return values.base + base + (offset - r.lowerBound) }
            base += r.count
        }
        preconditionFailure("offset \(offset) is not held by this rank")
    }

    public func value(_ name: String) -> Tensor {
        guard let s = layout[name] else { preconditionFailure("no parameter named \(name)") }
        if let valueStore { return valueStore.value(s) }
        precondition(holdsAllValues, "the parameters of \(name) are held by no store")
        return Tensor(view: values, offset: s.offset, shape: s.shape)
    }

    public func grad(_ name: String) -> Tensor {
        guard let s = layout[name] else { preconditionFailure("no parameter named \(name)") }
        if let gradientStore { return gradientStore.gradient(s) }
        precondition(grads.count == layout.totalCount, "the gradients of \(name) are held by no store")
        return Tensor(view: grads, offset: s.offset, shape: s.shape)
    }

    public func zeroGrads() { grads.base.update(repeating: 0, count: grads.count) }
}

/// The parameters of one `GradientUnit` in a rank's flat buffer: a range of the dense region
/// and one of the expert region (either may be empty). A layout's buckets tile both regions.
public struct GradientBucket: Sendable, Equatable {
    public let unit: GradientUnit
    public let dense: Range<Int>
    public let expert: Range<Int>
}

extension ParameterLayout {
    /// One bucket per gradient unit, in the layout's order; the padding at the start and end
    /// of each region goes to the bucket next to it. Overlapped gradient reduction sends
    /// these (`DataParallel`), and the projection costs the same ones.
    public var gradientBuckets: [GradientBucket] {
        var order: [GradientUnit] = []
        var ranges: [Bool: [GradientUnit: Range<Int>]] = [false: [:], true: [:]]   // keyed by "expert region"
        for s in specs {
            let unit = GradientUnit.of(parameter: s.name), expert = s.placement == .expert
            let r = s.offset..<(s.offset + s.count)
            ranges[expert]![unit] = ranges[expert]![unit].map { min($0.lowerBound, r.lowerBound)..<max($0.upperBound, r.upperBound) } ?? r
            if !order.contains(unit) { order.append(unit) }
        }
        for (expert, region) in [(false, denseRegion), (true, expertRegion)] {
            var rs = ranges[expert]!
            let sorted = rs.sorted { $0.value.lowerBound < $1.value.lowerBound }
            guard let first = sorted.first, let last = sorted.last else { continue }
            rs[first.key] = region.lowerBound..<rs[first.key]!.upperBound
            rs[last.key] = rs[last.key]!.lowerBound..<region.upperBound
            let tiled = rs.values.sorted { $0.lowerBound < $1.lowerBound }
            precondition(zip(tiled, tiled.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                         "a gradient unit's parameters are not contiguous in the flat buffer")
            ranges[expert] = rs
        }
        return order.map { GradientBucket(unit: $0, dense: ranges[false]![$0] ?? 0..<0, expert: ranges[true]![$0] ?? 0..<0) }
    }

    /// The `index`-th of `parts` equal ZeRO partitions of a padded region.
    public static func zeroShard(_ region: Range<Int>, parts: Int, index: Int) -> Range<Int> {
        let size = region.count / parts
        return (region.lowerBound + index * size)..<(region.lowerBound + (index + 1) * size)
    }

    /// Elements of the tensors whose gradients are partial per TP rank that lie in `ranges`.
    public func partialGradientCount(within ranges: [Range<Int>]) -> Int {
        specs.filter { $0.placement == .replicatedPartialGrad }.reduce(0) { total, s in
            total + ranges.reduce(0) { $0 + max(0, min($1.upperBound, s.offset + s.count) - max($1.lowerBound, s.offset)) }
        }
    }

    /// The most gradient elements ZeRO-2 keeps for whole units at once in a backward: one
    /// unit's bucket at a time, except that with tied embeddings the head's backward opens
    /// the embedding's bucket, which stays until the backward ends with the embedding.
    public func peakUnitGradientFloats(tiedEmbeddings: Bool) -> Int {
        let sizes = Dictionary(uniqueKeysWithValues: gradientBuckets.map { ($0.unit, $0.dense.count + $0.expert.count) })
        let largest = sizes.values.max() ?? 0
        guard tiedEmbeddings, let embedding = sizes[.embedding], sizes[.head] != nil else { return largest }
        return embedding + (sizes.filter { $0.key != .embedding }.values.max() ?? 0)
    }
}
