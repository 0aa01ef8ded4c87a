import Foundation
import Formats
import Model
import Parallel
import Plan
import Resilience

/// Resharding on load: a checkpoint written under one layout (tp, pp, dp, ep, ZeRO stage,
/// virtual stages, stage split) read by a job of another layout of the same model.
///
/// Every element of the model has a name and an index in the single-rank layout
/// (`GlobalParameters.offsets`). This rank lists the elements its own layout holds and, for
/// those its optimizer ranges own, their Adam moments; it then finds, from the writer's
/// plan and each shard's header, a shard that holds each element (for a moment: the shard
/// whose ZeRO range owns it) and reads just those byte ranges. Parameters replicated over
/// data-parallel or tensor-parallel ranks are equal in every copy, and so are their moments,
/// so any holder will do.
extension Checkpoint {
    /// `heldValues`: the ranges of `layout`'s flat buffer the reader holds (all of it, unless
    /// it runs ZeRO-3); a ZeRO-3 writer's shards hold theirs (`Placement.heldValues`).
    public static func reshardShard(_ candidate: Candidate, writer: JobPlan, layout: ParameterLayout,
                                    optimizerRanges: [Range<Int>], heldValues: [Range<Int>]? = nil) throws -> LoadedShard {
        let held = heldValues ?? [0..<layout.totalCount]
        let checkpoint = candidate.name
        func problem(_ why: String) -> CheckpointProblem { CheckpointProblem("\(checkpoint): \(why)") }
        let offsets = GlobalParameters.offsets(writer.singleLayout)
        let globalCount = writer.singleLayout.globalCount

        // What this rank holds: local flat index -> single-rank index (-1: alignment padding).
        var global = [Int](repeating: -1, count: layout.totalCount)
        for s in layout.specs {
            guard let o = offsets[s.name] else { throw problem("the checkpoint's model has no \(s.name)") }
            s.forEachElement { l, gi in global[s.offset + l] = o + gi }
        }
        var needParam = [Bool](repeating: false, count: globalCount)
        var needMoment = [Bool](repeating: false, count: globalCount)
        for r in held { for j in r where global[j] >= 0 { needParam[global[j]] = true } }
        for r in optimizerRanges { for j in r where global[j] >= 0 { needMoment[global[j]] = true } }

        // Where each needed element is: (shard, its local index); for a moment, (shard,
        // optimizer, index in that optimizer's range).
        var paramAt: [[(local: Int, global: Int)]] = Array(repeating: [], count: writer.topology.world)
        var momentAt: [[Int: [(index: Int, global: Int)]]] = Array(repeating: [:], count: writer.topology.world)
        var haveParam = [Bool](repeating: false, count: globalCount)
        var haveMoment = [Bool](repeating: false, count: globalCount)
        var headers: [SafeTensors.Header] = []
        var stepCount: Int?
        for a in 0..<writer.topology.world {
            let file = candidate.manifest.shards[a].path
            let header: SafeTensors.Header
            do { header = try SafeTensors.Header(fileAtPath: file) } catch { throw problem("\(shardName(a)) is not a readable safetensors file (\(error))") }
            guard header.metadata["step"] == String(candidate.step) else {
                throw problem("\(shardName(a)): its header says step \(header.metadata["step"] ?? "none"), the checkpoint is step \(candidate.step)")
            }
            guard header.metadata["rank"] == String(a) else {
                throw problem("\(shardName(a)): its header says rank \(header.metadata["rank"] ?? "none")")
            }
            let placement = writer.placement(of: a), theirs = placement.layout
            // Where each flat offset of the writer's layout is in its "params" tensor (-1: not held).
            var entryIndex = [Int](repeating: -1, count: theirs.totalCount)
            var cursor = 0
            for r in placement.heldValues { for j in r { entryIndex[j] = cursor; cursor += 1 } }
            guard let p = header.entries["params"], p.dtype == "F32", p.shape == [cursor] else {
                throw problem("\(shardName(a)): its parameter shard does not fit the writer's layout")
            }
            headers.append(header)
            // The writer's optimizer ranges, from the shard's own header.
            var ranges: [(index: Int, range: Range<Int>)] = []
            for i in 0... {
                guard let text = header.metadata["adam.\(i).range"] else { break }
                let bounds = text.components(separatedBy: "..<").compactMap { Int($0) }
                guard bounds.count == 2, 0 <= bounds[0], bounds[0] <= bounds[1], bounds[1] <= theirs.totalCount,
                      let steps = header.metadata["adam.\(i).steps"].flatMap(Int.init), steps >= 0,
                      header.entries["adam.\(i).m"]?.shape == [bounds[1] - bounds[0]], header.entries["adam.\(i).m"]?.dtype == "F32",
                      header.entries["adam.\(i).v"]?.shape == [bounds[1] - bounds[0]], header.entries["adam.\(i).v"]?.dtype == "F32" else {
                    throw problem("\(shardName(a)): optimizer shard \(i) (\(text)) does not fit the writer's layout")
                }
                if let known = stepCount, known != steps {
                    throw problem("\(shardName(a)): optimizer \(i) has taken \(steps) steps, another shard's \(known)")
                }
                stepCount = steps
                ranges.append((i, bounds[0]..<bounds[1]))
            }
            for s in theirs.specs {
                guard let o = offsets[s.name] else { continue }
                s.forEachElement { l, gi in
                    let g = o + gi, local = s.offset + l
                    if needParam[g] && !haveParam[g] && entryIndex[local] >= 0 { haveParam[g] = true; paramAt[a].append((entryIndex[local], g)) }
                    if needMoment[g] && !haveMoment[g], let owner = ranges.first(where: { $0.range.contains(local) }) {
                        haveMoment[g] = true
                        momentAt[a][owner.index, default: []].append((local - owner.range.lowerBound, g))
                    }
                }
            }
        }
        if let missing = needParam.indices.first(where: { needParam[$0] && !haveParam[$0] }) {
            throw problem("no shard holds element \(missing) of the single-rank parameter vector")
        }
        if let missing = needMoment.indices.first(where: { needMoment[$0] && !haveMoment[$0] }) {
            throw problem("no shard holds the Adam moments of element \(missing) of the single-rank parameter vector")
        }

        // Read only those ranges, one pread per contiguous run.
        var values = [Float](repeating: 0, count: globalCount)
        var m = [Float](repeating: 0, count: globalCount), v = [Float](repeating: 0, count: globalCount)
        func read(_ tensor: String, shard a: Int, _ wanted: [(Int, Int)], into out: inout [Float]) throws {
            let sorted = wanted.sorted { $0.0 < $1.0 }
            var i = 0
            while i < sorted.count {
                var j = i + 1
                while j < sorted.count && sorted[j].0 == sorted[j - 1].0 + 1 { j += 1 }
                let run = sorted[i].0..<(sorted[j - 1].0 + 1)
                let floats: [Float]
                do { floats = try headers[a].floats(tensor, run, path: candidate.manifest.shards[a].path) } catch {
                    throw problem("\(shardName(a)): \(error)")
                }
                if let bad = floats.firstIndex(where: { !$0.isFinite }) {
                    throw problem("\(shardName(a)): \(tensor) holds a non-finite value (\(floats[bad]) at element \(run.lowerBound + bad))")
                }
                for k in i..<j { out[sorted[k].1] = floats[sorted[k].0 - run.lowerBound] }
                i = j
            }
        }
        for a in 0..<writer.topology.world {
            if !paramAt[a].isEmpty { try read("params", shard: a, paramAt[a].map { ($0.local, $0.global) }, into: &values) }
            for (i, wanted) in momentAt[a] {
                try read("adam.\(i).m", shard: a, wanted.map { ($0.index, $0.global) }, into: &m)
                try read("adam.\(i).v", shard: a, wanted.map { ($0.index, $0.global) }, into: &v)
            }
        }
        if let g = v.indices.first(where: { needMoment[$0] && v[$0] < 0 }) { throw problem("Adam's second moment of element \(g) is negative") }

        let params = held.flatMap { r in r.map { global[$0] >= 0 ? values[global[$0]] : 0 } }
        let moments = optimizerRanges.map { r in
            (m: r.map { global[$0] >= 0 ? m[global[$0]] : 0 }, v: r.map { global[$0] >= 0 ? v[global[$0]] : 0 }, steps: stepCount ?? 0)
        }
        return LoadedShard(params: params, optimizers: moments)
    }
}
