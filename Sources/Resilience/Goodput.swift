import Foundation
import Formats

/// Where the time of a whole job (all attempts) went, from the run directory's step log:
/// in emulated device time, useful compute, pipeline bubble (and other idle), exposed
/// communication, checkpoint saves, lost work (steps computed and then rolled back by a
/// restart) and restart cost (`--restart-cost-s` per restart); and in wall time, the
/// surviving steps, the lost steps, and everything else (start-up, detection, relaunch,
/// loading). Effective utilization = model FLOPs of the surviving steps / (peak x ranks x
/// total emulated time).
public struct Goodput {
    public var usefulCompute = 0.0, bubble = 0.0, exposedComm = 0.0, checkpoint = 0.0, lostWork = 0.0, restart = 0.0
    public var wallSteps = 0.0, wallLost = 0.0, wallOther = 0.0, wallTotal = 0.0
    public var modelFLOPs = 0.0, peakFLOPS = 0.0, ranks = 0
    public var survivingLosses: [Double] = []
    public var lostSteps = 0

    public var total: Double { usefulCompute + bubble + exposedComm + checkpoint + lostWork + restart }
    public var effectiveUtilization: Double { total > 0 && peakFLOPS > 0 ? modelFLOPs / (peakFLOPS * Double(ranks) * total) : 0 }

    public static func compute(runDirectory: String, restarts: Int, restartCostS: Double, wallSeconds: Double) -> Goodput {
        let records = RunLog.read(RunLog(dir: runDirectory).stepsPath)
        // The surviving record of a step is the one of the last attempt that completed it.
        var survivor: [Int: [String: Any]] = [:]
        for r in records {
            guard let step = r["step"] as? Int else { continue }
            if let old = survivor[step], (old["attempt"] as? Int ?? 0) > (r["attempt"] as? Int ?? 0) { continue }
            survivor[step] = r
        }
        var g = Goodput()
        for r in records {
            guard let step = r["step"] as? Int, let e = r["emulated"] as? [String: Any] else { continue }
            let stepTime = e["step"] as? Double ?? 0
            if let s = survivor[step], (s["attempt"] as? Int) == (r["attempt"] as? Int) {
                let compute = e["compute"] as? Double ?? 0, comm = e["communication"] as? Double ?? 0
                let ckpt = e["checkpoint"] as? Double ?? 0
                g.usefulCompute += compute
                g.exposedComm += comm
                g.checkpoint += ckpt
                g.bubble += max(stepTime - compute - comm - ckpt, 0)   // idle, and waiting for the slowest rank
                g.wallSteps += r["wall_s"] as? Double ?? 0
                g.modelFLOPs += (r["skipped"] as? Bool ?? false) ? 0 : (r["model_flops"] as? Double ?? 0)
                g.peakFLOPS = r["peak_flops"] as? Double ?? 0
                g.ranks = r["ranks"] as? Int ?? 0
            } else {
                g.lostWork += stepTime
                g.wallLost += r["wall_s"] as? Double ?? 0
                g.lostSteps += 1
            }
        }
        g.survivingLosses = survivor.keys.sorted().map { survivor[$0]!["loss"] as? Double ?? .nan }
        g.restart = Double(restarts) * restartCostS
        g.wallTotal = wallSeconds
        g.wallOther = max(wallSeconds - g.wallSteps - g.wallLost, 0)
        return g
    }

    public var json: [String: Any] {
        ["emulated_s": ["useful_compute": usefulCompute, "bubble_and_idle": bubble, "exposed_communication": exposedComm,
                        "checkpoint_save": checkpoint, "lost_work": lostWork, "restart": restart, "total": total],
         "wall_s": ["surviving_steps": wallSteps, "lost_steps": wallLost, "startup_detection_relaunch_load": wallOther,
                    "total": wallTotal],
         "effective_utilization": effectiveUtilization, "lost_steps": lostSteps, "model_flops_surviving": modelFLOPs]
    }

    public func table() -> [String] {
        func pct(_ x: Double, _ of: Double) -> String { of > 0 ? String(format: "%5.1f%%", 100 * x / of) : "  -  " }
        var lines = ["goodput (emulated device time, all attempts):"]
        for (name, v) in [("useful compute", usefulCompute), ("pipeline bubble and idle", bubble), ("exposed communication", exposedComm),
                          ("checkpoint save", checkpoint), ("lost work (rolled back)", lostWork), ("restart cost", restart)] {
            lines.append("  " + name.padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%12.6f s  ", v) + pct(v, total))
        }
        lines.append("  " + "total".padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%12.6f s", total))
        lines.append(String(format: "  effective utilization (model FLOPs of surviving steps / peak x ranks x total): %.4f%%", 100 * effectiveUtilization))
        lines.append(String(format: "wall time: %.2f s: surviving steps %.2f s, lost steps %.2f s, start-up/detection/relaunch/load %.2f s",
                            wallTotal, wallSteps, wallLost, wallOther))
        return lines
    }
}
