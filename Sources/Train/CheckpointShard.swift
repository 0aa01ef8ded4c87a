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

    /// Restores this rank's state from its shard of `candidate`.
    public static func load(_ candidate: Candidate, rank: Int, params: Parameters, optimizers: [AdamW]) throws {
        let file = candidate.path + "/" + shardName(rank)
        guard let data = FileManager.default.contents(atPath: file) else { throw CheckpointProblem("cannot read \(file)") }
        let (tensors, meta) = try SafeTensors.decode([UInt8](data))
        guard let p = tensors["params"], p.shape == [params.values.count] else {
            throw CheckpointProblem("\(file): parameter shard does not fit this rank's layout")
        }
        p.floats.withUnsafeBufferPointer { params.values.base.update(from: $0.baseAddress!, count: params.values.count) }
        for (i, o) in optimizers.enumerated() {
            guard let m = tensors["adam.\(i).m"], let v = tensors["adam.\(i).v"], m.shape == [o.range.count],
                  meta["adam.\(i).range"] == "\(o.range.lowerBound)..<\(o.range.upperBound)", let steps = meta["adam.\(i).steps"].flatMap(Int.init) else {
                throw CheckpointProblem("\(file): optimizer shard \(i) does not fit this rank's ZeRO partition")
            }
            m.floats.withUnsafeBufferPointer { o.m.base.update(from: $0.baseAddress!, count: o.range.count) }
            v.floats.withUnsafeBufferPointer { o.v.base.update(from: $0.baseAddress!, count: o.range.count) }
            o.restore(stepCount: steps)
        }
    }
}
