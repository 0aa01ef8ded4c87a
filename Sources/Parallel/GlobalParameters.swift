import Comm
import Plan
import Model
import Tensor

/// The single-rank view of a sharded model: every parameter (or gradient) assembled at
/// rank 0 in the single-rank layout and order, for the checksum and for dumps.
///
/// Each element of the full model has one canonical holder: the data-parallel rank 0
/// (expert-data-parallel rank 0 for experts) and, for tensors replicated over the
/// tensor-parallel group, TP rank 0. Every rank sends its canonical blocks to rank 0,
/// which places them with the sender's own layout.
public enum GlobalParameters {
    /// Offsets of each parameter in the single-rank vector (spec order, no padding).
    public static func offsets(_ layout: ParameterLayout) -> [String: Int] {
        var out: [String: Int] = [:], o = 0
        for s in layout.specs { out[s.name] = o; o += s.globalCount }
        return out
    }

    static func isCanonical(_ s: ParamSpec, _ c: Topology.Coordinates) -> Bool {
        switch s.placement {
        case .expert: return c.edp == 0
        case .tpSharded: return c.dp == 0
        case .replicated, .replicatedPartialGrad: return c.dp == 0 && c.tp == 0
        }
    }

    /// Collective over the world: rank 0 receives the full vector, other ranks nil.
    /// `layoutOf(rank)` gives any rank's layout (its shard and pipeline layers); `single` is
    /// the single-rank layout, whose order the result follows.
    public static func gather(_ local: Storage, layout: ParameterLayout, single: ParameterLayout, groups: ProcessGroups,
                              layoutOf: (Int) -> ParameterLayout) -> [Float]? {
        let world = groups.world
        let topo = groups.topology
        if world.size == 1 { return assemble([(layout, UnsafePointer(local.base))], single: single) }
        let me = groups.coordinates
        var payload = [Float]()
        for s in layout.specs where isCanonical(s, me) {
            payload += UnsafeBufferPointer(start: local.base + s.offset, count: s.count)
        }
        let bytes = payload.withUnsafeBytes { Array($0) }
        let parts = world.untimed { world.gatherBytes(bytes, root: 0) }
        guard world.rank == 0 else { return nil }
        var global = [Float](repeating: 0, count: single.globalCount)
        let offsets = offsets(single)
        for (rank, part) in parts.enumerated() {
            let c = topo.coordinates(of: rank)
            let theirs = layoutOf(rank)
            part.withUnsafeBytes { raw in
                let floats = raw.bindMemory(to: Float.self)
                var cursor = 0
                for s in theirs.specs where isCanonical(s, c) {
                    let base = offsets[s.name]!
                    global.withUnsafeMutableBufferPointer { g in
                        s.forEachElement { l, gi in g[base + gi] = floats[cursor + l] }
                    }
                    cursor += s.count
                }
            }
        }
        return global
    }

    /// Places every spec of every part at its single-rank position (copies of replicated
    /// tensors are equal, so which one lands last does not matter).
    public static func assemble(_ parts: [(ParameterLayout, UnsafePointer<Float>)], single: ParameterLayout) -> [Float] {
        var global = [Float](repeating: 0, count: single.globalCount)
        let offsets = offsets(single)
        global.withUnsafeMutableBufferPointer { g in
            for (layout, base) in parts {
                for s in layout.specs {
                    let o = offsets[s.name]!
                    s.forEachElement { l, gi in g[o + gi] = base[s.offset + l] }
                }
            }
        }
        return global
    }
}
