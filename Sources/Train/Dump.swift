import Foundation
import Model
import Tensor

/// The debug dump of one step: every parameter and its gradient (after backward, before
/// the optimizer; the gradient before clipping), in the single-rank layout, plus the step's
/// input tokens and targets, as one safetensors file, and the step's losses in `loss.json`.
public enum Dump {
    public static func fileName(step: Int) -> String { String(format: "step-%06d.safetensors", step) }

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

/// Deterministic JSON text (sorted keys, pretty printed) from plain dictionaries and arrays.
public enum JSONText {
    public static func encode(_ object: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: sanitize(object), options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// JSON has no NaN or infinity: such values become null.
    static func sanitize(_ v: Any) -> Any {
        switch v {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let f as Float: return f.isFinite ? Double(f) : NSNull()
        case let a as [Any]: return a.map(sanitize)
        case let m as [String: Any]: return m.mapValues(sanitize)
        default: return v
        }
    }
}
