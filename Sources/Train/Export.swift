import Foundation
import Resilience
import Formats
import Model
import Parallel
import Schedule
import Plan
import Tensor

/// `moe-train export`: consolidates a sharded checkpoint into one safetensors file in the
/// single-rank layout (every parameter under its path, such as `layers.0.attn.wq`, with its
/// full shape), as a single-rank run would hold it. The checkpoint's manifest carries its
/// configuration and layout, so nothing else is needed.
public enum Export {
    public static func run(checkpoint: String, out: String, log: (String) -> Void) throws {
        // Every shard is read, so every shard is hashed (once).
        let path: String, manifest: Checkpoint.Manifest
        if FileManager.default.fileExists(atPath: checkpoint + "/manifest.json") {
            switch Checkpoint.verify(checkpoint) {
            case .success(let m): (path, manifest) = (checkpoint, m)
            case .failure(let p): throw UsageError("export: \(p.description)")
            }
        } else {
            let (candidate, skipped) = Checkpoint.newestValid(in: checkpoint)
            for s in skipped { log("export: skipped \(s)") }
            guard let c = candidate else { throw UsageError("no valid checkpoint in \(checkpoint) (a step directory or a run directory)") }
            (path, manifest) = (c.path, c.manifest)
        }
        guard !FileManager.default.fileExists(atPath: out) else { throw UsageError("export: \(out) already exists; choose another --out") }
        let l = manifest.layout
        let job: JobPlan
        do { job = try Checkpoint.writerPlan(of: path, manifest: manifest) } catch { throw UsageError("export: \(error)") }
        var storages: [(ParameterLayout, Storage)] = []
        for rank in 0..<l.world {
            let layout = job.placement(of: rank).layout
            guard let shard = FileManager.default.contents(atPath: manifest.shards[rank].path) else {
                throw UsageError("export: cannot read \(Checkpoint.shardName(rank))")
            }
            let (tensors, _) = try SafeTensors.decode([UInt8](shard))
            guard let p = tensors["params"], p.dtype == "F32", p.shape == [layout.totalCount] else {
                throw UsageError("export: \(Checkpoint.shardName(rank)) does not match its layout")
            }
            let st = Storage(count: layout.totalCount)
            p.floats.withUnsafeBufferPointer { st.base.update(from: $0.baseAddress!, count: layout.totalCount) }
            storages.append((layout, st))
        }
        let single = job.singleLayout
        let global = GlobalParameters.assemble(storages.map { ($0.0, UnsafePointer($0.1.base)) }, single: single)
        var entries: [SafeTensors.Entry] = []
        var offset = 0
        global.withUnsafeBufferPointer { g in
            for s in single.specs {
                entries.append(.init(name: s.name, shape: s.globalShape, floats: g.baseAddress! + offset, count: s.globalCount))
                offset += s.globalCount
            }
        }
        let checksum = global.withUnsafeBufferPointer { SHA256Hex.of(floats: $0) }
        try AtomicFile.write(SafeTensors.encode(entries, metadata: ["step": String(manifest.step), "param_checksum": checksum,
                                                                   "source": path]), to: out)
        log("exported \(path) (step \(manifest.step), \(l)) to \(out): \(single.specs.count) tensors, param checksum \(checksum)")
    }
}
