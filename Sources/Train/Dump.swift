import Foundation
import Plan
import Formats
import Model
import Tensor

/// The debug dump of one step: every parameter and its gradient (after backward, before
/// the optimizer; the gradient before clipping), in the single-rank layout, plus the step's
/// input tokens and targets, as one safetensors file, and the step's losses in `loss.json`.
public enum Dump {
    public static func fileName(step: Int) -> String { RunConfig.dumpFileName(step: step) }

    /// `values` and `grads` are full single-rank vectors in `layout`'s spec order (no padding).
    public static func write(dir: String, step: Int, layout: ParameterLayout, values: [Float], grads: [Float],
                             tokens: [Int32], targets: [Int32], sequences: Int, seqLen: Int, record: [String: Any]) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var entries: [SafeTensors.Entry] = []
        var offset = 0
        values.withUnsafeBufferPointer { v in
            grads.withUnsafeBufferPointer { g in
                for s in layout.specs {
                    entries.append(.init(name: s.name, shape: s.globalShape, floats: v.baseAddress! + offset, count: s.globalCount))
                    entries.append(.init(name: s.name + ".grad", shape: s.globalShape, floats: g.baseAddress! + offset, count: s.globalCount))
                    offset += s.globalCount
                }
            }
        }
        entries.append(.init(name: "tokens", shape: [sequences, seqLen], int32: tokens))
        entries.append(.init(name: "targets", shape: [sequences, seqLen], int32: targets))
        let blob = SafeTensors.encode(entries, metadata: ["step": String(step), "format": "moe-train dump v1"])
        try AtomicFile.write(blob, to: dir + "/" + fileName(step: step))
        try AtomicFile.write(JSONText.encode(record), to: dir + "/loss.json")
    }
}
