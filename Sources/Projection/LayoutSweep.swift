import Foundation
import Emulation
import Model
import Schedule
import Plan

/// `moe-train project --sweep`: every layout of the account's model on its cluster (TP a
/// divisor of the GPUs per node, PP a divisor of the layers, as many data-parallel
/// replicas as the GPUs allow, GPipe / 1F1B / interleaved, ZeRO-1, 2 and 3 unless `--zero`
/// names one stage), projected, the ones that do not
/// fit in memory or do not divide rejected with their reason, the best ten by throughput.
public enum LayoutSweep {
    public struct Candidate {
        public let tp, pp, dp, zero: Int
        public let schedule: String
        public let virtualStages: Int
        public let stepTime, bubble, mfu, memory: Double
        public let tokensPerSecond: Double
    }

    public static func run(account a: PublishedRun, base: ProjectionReport.Layout, log: (String) -> Void) throws {
        let start = Date()
        try ProjectionReport.validate(account: a, layout: base, failures: nil)
        let device = try EmulatorSetup.findProfile(base.device ?? a.device)
        let gpusPerNode = base.gpusPerNode ?? 8
        var fits: [Candidate] = []
        var rejected: [String: Int] = [:]
        var tried = 0
        let layers = Int(a.layers)
        for zero in base.zero.map({ [$0] }) ?? [1, 2, 3] {
        for tp in (1...gpusPerNode).filter({ gpusPerNode % $0 == 0 }) {
            for pp in (1...layers).filter({ layers % $0 == 0 }) {
                for (kind, v) in [(ScheduleKind.oneFOneB, 1), (.gpipe, 1), (.interleaved, 2)] {
                    let schedule = kind.rawValue
                    tried += 1
                    if Int(a.heads) % tp != 0 || Int(a.vocab) % tp != 0 || Int(a.experts) % tp != 0 {
                        rejected["tp \(tp) does not divide the heads, vocabulary or experts", default: 0] += 1; continue
                    }
                    if v > 1 && layers % (v * pp) != 0 { rejected["interleaved: layers not divisible by pp x 2 chunks", default: 0] += 1; continue }
                    var layout = base
                    layout.tp = tp; layout.pp = pp; layout.dp = nil; layout.ep = base.ep ?? tp; layout.schedule = kind; layout.virtualStages = v
                    layout.zero = zero
                    let (config, world) = ProjectionReport.config(a, layout)
                    guard world >= tp * pp, (config.globalBatch ?? 0) >= 1 else {
                        rejected["fewer GPUs or sequences than one replica needs", default: 0] += 1; continue
                    }
                    let p: Projection
                    do { p = try Projection(config: config, worldSize: world) } catch {
                        // The plan says why; layouts that fail alike are counted under one sentence
                        // (its numbers replaced by N).
                        let why = String(describing: error).replacingOccurrences(of: "\\b[0-9]+\\b", with: "N", options: .regularExpression)
                        rejected[why, default: 0] += 1; continue
                    }
                    let dp = p.plan.topology.dp
                    let mem = p.memory.roles.map(\.breakdown.total).max() ?? 0
                    if mem > device.memoryBytes { rejected["does not fit in \(device.name) memory", default: 0] += 1; continue }
                    fits.append(Candidate(tp: tp, pp: pp, dp: dp, zero: zero, schedule: schedule, virtualStages: v, stepTime: p.stepTime,
                                          bubble: p.bubble, mfu: p.mfu, memory: mem,
                                          tokensPerSecond: Double(p.tokensPerStep) / p.stepTime))
                }
            }
        }
        }
        fits.sort { $0.tokensPerSecond > $1.tokensPerSecond }
        log(String(format: "layout sweep on %.0f %@ (%ld GPUs per node), %.3g-token batch: %ld layouts tried, %ld fit, %.1f s",
                   a.gpus, device.name, gpusPerNode, a.batchTokens, tried, fits.count, Date().timeIntervalSince(start)))
        log("  rank  " + "layout (Z: ZeRO stage)".padding(toLength: 37, withPad: " ", startingAt: 0) + "   GPUs    step (s)   bubble    MFU   memory (GiB)   tokens/s    days")
        for (i, c) in fits.prefix(10).enumerated() {
            let name = "TP\(c.tp) x PP\(c.pp) x DP\(c.dp) \(c.schedule)\(c.virtualStages > 1 ? " v\(c.virtualStages)" : "") Z\(c.zero)"
            log(String(format: "  %4ld  %@ %6ld %10.2f %7.1f%% %5.1f%% %13.1f %10.3g %7.1f", i + 1,
                       name.padding(toLength: 37, withPad: " ", startingAt: 0), c.tp * c.pp * c.dp, c.stepTime, 100 * c.bubble,
                       100 * c.mfu, c.memory / 1073741824, c.tokensPerSecond, a.tokens / c.tokensPerSecond / 86400))
        }
        log("rejected:")
        for (reason, n) in rejected.sorted(by: { $0.value > $1.value }) { log("  \(n) x \(reason)") }
    }
}
