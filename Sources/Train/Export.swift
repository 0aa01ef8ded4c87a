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
        // The single-rank layout read as a resharding reader would: each element from a shard that
        // holds it (under ZeRO-3 each shard holds part of its stage's parameters).
        let single = job.singleLayout
        precondition(single.totalCount == single.globalCount, "the single-rank layout has no padding")
        let flat: [Float]
        do {
            flat = try Checkpoint.reshardShard(Checkpoint.Candidate(step: manifest.step, path: path, manifest: manifest, writer: job),
                                               writer: job, layout: single, optimizerRanges: []).params
        } catch {
            throw UsageError("export: \(error)")
        }
        // The flat buffer puts the experts after the dense tensors; the file and the checksum follow the model's order.
        let global = single.specs.flatMap { flat[$0.offset..<($0.offset + $0.count)] }
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
