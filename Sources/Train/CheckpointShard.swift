import Foundation
import Formats
import Model
import Resilience

/// What one rank's checkpoint shard holds: its flat parameters, and per optimizer range the
/// Adam moments and step count (the data cursor is a pure function of the step).
extension Checkpoint {
    /// One rank's shard: parameters, and per optimizer range its moments and step count.
    public static func encodeShard(params: Parameters, optimizers: [AdamW], step: Int, rank: Int, attempt: Int) -> [UInt8] {
        var entries: [SafeTensors.Entry] = [.init(name: "params", shape: [params.values.count], floats: params.values.base,
                                                   count: params.values.count)]
        var meta: [String: String] = ["format": "moe-train checkpoint shard v1", "step": String(step), "rank": String(rank),
                                      "attempt": String(attempt), "data_cursor_step": String(step)]
        for (i, o) in optimizers.enumerated() {
            entries.append(.init(name: "adam.\(i).m", shape: [o.range.count], floats: o.m.base, count: o.range.count))
            entries.append(.init(name: "adam.\(i).v", shape: [o.range.count], floats: o.v.base, count: o.range.count))
            meta["adam.\(i).range"] = "\(o.range.lowerBound)..<\(o.range.upperBound)"
            meta["adam.\(i).steps"] = String(o.stepCount)
        }
        return SafeTensors.encode(entries, metadata: meta)
    }

    /// One rank's shard, read and checked, not yet applied: nothing of the rank's state
    /// changes until every rank has read its own (a job falls back as a whole).
    public struct LoadedShard {
        let params: [Float]
        let optimizers: [(m: [Float], v: [Float], steps: Int)]
    }

    /// Reads this rank's shard of `candidate` and checks that it fits this rank's layout,
    /// belongs to the candidate's step and holds finite numbers only (a shard whose manifest
    /// was re-hashed after it was damaged passes the checksum, not this). Throws a
    /// `CheckpointProblem` naming the checkpoint, the shard and the reason.
    public static func readShard(_ candidate: Candidate, rank: Int, params: Parameters, optimizers: [AdamW]) throws -> LoadedShard {
        let name = URL(fileURLWithPath: candidate.path).lastPathComponent + "/" + shardName(rank) + (candidate.source == .hostMemory ? " in host memory" : "")
        func problem(_ why: String) -> CheckpointProblem { CheckpointProblem("\(name): \(why)") }
        guard let data = FileManager.default.contents(atPath: candidate.manifest.shards[rank].path) else { throw problem("cannot be read") }
        let tensors: [String: SafeTensors.Loaded], meta: [String: String]
        do { (tensors, meta) = try SafeTensors.decode([UInt8](data)) } catch { throw problem("is not a readable safetensors file (\(error))") }
        guard meta["rank"] == String(rank) else { throw problem("its header says rank \(meta["rank"] ?? "none")") }
        guard meta["step"] == String(candidate.step) else {
            throw problem("its header says step \(meta["step"] ?? "none"), the checkpoint is step \(candidate.step)")
        }
        if let (tname, t) = tensors.first(where: { $0.value.dtype != "F32" }) { throw problem("tensor \(tname) is \(t.dtype), not F32") }
        func finite(_ values: [Float], _ what: String) throws {
            if let i = values.firstIndex(where: { !$0.isFinite }) { throw problem("\(what) holds a non-finite value (\(values[i]) at element \(i))") }
        }
        guard let p = tensors["params"], p.shape == [params.values.count] else {
            throw problem("its parameter shard does not fit this rank's layout")
        }
        try finite(p.floats, "the parameter shard")
        var moments: [(m: [Float], v: [Float], steps: Int)] = []
        for (i, o) in optimizers.enumerated() {
            guard let m = tensors["adam.\(i).m"], let v = tensors["adam.\(i).v"], m.shape == [o.range.count], v.shape == [o.range.count],
                  meta["adam.\(i).range"] == "\(o.range.lowerBound)..<\(o.range.upperBound)",
                  let steps = meta["adam.\(i).steps"].flatMap(Int.init), steps >= 0 else {
                throw problem("optimizer shard \(i) does not fit this rank's ZeRO partition")
            }
            try finite(m.floats, "Adam's first moment \(i)")
            try finite(v.floats, "Adam's second moment \(i)")
            if let j = v.floats.firstIndex(where: { $0 < 0 }) { throw problem("Adam's second moment \(i) is negative at element \(j)") }
            moments.append((m.floats, v.floats, steps))
        }
        return LoadedShard(params: p.floats, optimizers: moments)
    }

    /// Makes a shard read by `readShard` this rank's state.
    public static func apply(_ shard: LoadedShard, params: Parameters, optimizers: [AdamW]) {
        shard.params.withUnsafeBufferPointer { params.values.base.update(from: $0.baseAddress!, count: params.values.count) }
        for (o, s) in zip(optimizers, shard.optimizers) {
            s.m.withUnsafeBufferPointer { o.m.base.update(from: $0.baseAddress!, count: o.range.count) }
            s.v.withUnsafeBufferPointer { o.v.base.update(from: $0.baseAddress!, count: o.range.count) }
            o.restore(stepCount: s.steps)
        }
    }
}
