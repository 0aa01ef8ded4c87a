import Foundation
import Emulation
import Model

extension JobPlan {
    /// The plan in words, as a run prints it before its first step (and `--dry-run` instead
    /// of running): the grid, the model, the batch, the pipeline, the device and the memory
    /// per rank. `data` lines (the data source, from the trainer) go after the batch.
    public func headerLines(data: [String] = []) -> [String] {
        let c = config.model, t = topology
        var lines = ["moe-train: \(t.world) rank(s), tp \(t.tp) pp \(t.pp) dp \(t.dp) ep \(t.ep)"
                     + (t.zeroReplicas > 1 ? ", ZeRO-\(config.zero) over groups of \(t.zeroGroup) data-parallel ranks (\(t.zeroReplicas) replicas)" : "")]
        lines.append(modelLine(timed == nil ? "model" : "executed"))
        lines.append("batch: \(batch.globalBatch) sequences x \(c.seqLen) tokens per step = \(batch.microBatches) micro-batches of \(batch.microBatchSize) per data-parallel rank")
        if let timed {
            let p = timed.plan
            lines.append(p.modelLine("timed as") + (timed.target.name.map { " (\($0))" } ?? ""))
            lines.append("  the numbers run at the executed sizes; the clock, MFU, HFU and memory are the timed model's: every kernel and message at its shapes, expert GEMMs from the executed routing scaled to \(p.batch.microBatchSize) x \(p.model.seqLen) tokens per micro-batch (\(p.batch.globalBatch) sequences per step)")
        }
        lines += data
        if let cap = c.expertCapacity { lines.append("expert capacity: \(cap) assignments per expert per sequence (factor \(c.capacityFactor))") }
        if t.pp > 1 {
            lines.append("pipeline: \(schedule.kind.rawValue), layers per stage \(stages)\(stages.virtualStages > 1 ? " (\(stages.virtualStages) chunks per rank)" : ""), \(batch.microBatches) micro-batches")
        }
        let p = emulator.profile
        lines.append(String(format: "device: %@ (%.0f TFLOP/s peak, %.2f TB/s HBM), %@ clock, %@ links, %ld GPUs per node",
                            p.name, p.peakFLOPS / 1e12, p.memoryBandwidth / 1e12, emulator.mode.name, config.link.rawValue, config.gpusPerNode))
        if timed != nil { lines.append("memory of the timed model:") }
        lines += timing.memory.table(device: p, precision: emulator.precision)
        return lines
    }

    /// "model: 8 layers, d_model 128, ... | params 8.80M total, 2.27M active per token".
    func modelLine(_ label: String) -> String {
        let c = config.model
        return String(format: "%@: %ld layers, d_model %ld, %ld heads (%ld KV), %ld experts top-%ld (ffn %ld), seq %ld, %@ | params %@ total, %@ active per token",
                      label, c.layers, c.dModel, c.heads, c.kvHeads, c.experts, c.topK, c.ffnHidden, c.seqLen,
                      c.kvHeads == 1 ? "MQA" : (c.kvHeads == c.heads ? "MHA" : "GQA"),
                      Self.human(singleLayout.globalCount), Self.human(singleLayout.activeCount(config: c)))
    }

    /// 1234 -> "1.2K", 5_600_000 -> "5.60M".
    public static func human(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return "\(n)"
    }
}
