import Foundation
import Formats

/// Where the time of a whole job (all attempts) went, from the run directory's step log:
/// in emulated device time, useful compute, pipeline bubble (and other idle), exposed
/// communication, checkpoint saves, lost work (steps computed and then rolled back by a
/// restart), restart cost (`--restart-cost-s` per restart: detection and relaunch) and
/// checkpoint loads (each resumed attempt's slowest rank, from storage or host memory, as its
/// `checkpoint_loaded` event says); and in wall time, the
/// surviving steps, the lost steps, and everything else (start-up, detection, relaunch,
/// loading). Effective utilization = model FLOPs of the surviving steps / (peak x ranks x
/// total emulated time), `ranks` being the allocation: the largest world the job ran on.
/// A step run on r of those A ranks counts r/A of its time in its own rows and (A - r)/A as
/// reduced capacity: the GPUs an elastic restart had to leave out.
public struct Goodput {
    public var usefulCompute = 0.0, bubble = 0.0, exposedComm = 0.0, checkpoint = 0.0, lostWork = 0.0, restart = 0.0, load = 0.0
    public var reducedCapacity = 0.0
    public var wallSteps = 0.0, wallLost = 0.0, wallOther = 0.0, wallTotal = 0.0
    public var modelFLOPs = 0.0, peakFLOPS = 0.0, ranks = 0
    public var survivingLosses: [Double] = []
    public var lostSteps = 0

    public var total: Double { usefulCompute + bubble + exposedComm + checkpoint + lostWork + restart + load + reducedCapacity }
    public var effectiveUtilization: Double { total > 0 && peakFLOPS > 0 ? modelFLOPs / (peakFLOPS * Double(ranks) * total) : 0 }

    /// From the run directory's `steps.jsonl`; a line that lacks a field is an error naming it.
    public static func compute(runDirectory: String, restarts: Int, restartCostS: Double, wallSeconds: Double) throws -> Goodput {
        let records = try RunLog(dir: runDirectory).steps()
        // The surviving record of a step is the one of the last attempt that completed it.
        var survivor: [Int: StepLogLine] = [:]
        for r in records {
            if let old = survivor[r.step], old.attempt > r.attempt { continue }
            survivor[r.step] = r
        }
        var g = Goodput()
        g.ranks = records.map(\.ranks).max() ?? 0
        for r in records {
            let e = r.emulated
            let share = g.ranks > 0 ? Double(r.ranks) / Double(g.ranks) : 1
            g.reducedCapacity += e.step * (1 - share)
            if survivor[r.step]?.attempt == r.attempt {
                g.usefulCompute += e.compute * share
                g.exposedComm += e.communication * share
                g.checkpoint += e.checkpoint * share
                g.bubble += max(e.step - e.compute - e.communication - e.checkpoint, 0) * share   // idle, and waiting for the slowest rank
                g.wallSteps += r.wallSeconds
                g.modelFLOPs += r.skipped ? 0 : r.modelFLOPs
                g.peakFLOPS = r.peakFLOPS
            } else {
                g.lostWork += e.step * share
                g.wallLost += r.wallSeconds
                g.lostSteps += 1
            }
        }
        g.survivingLosses = survivor.keys.sorted().map { survivor[$0]!.loss }
        g.restart = Double(restarts) * restartCostS
        g.load = try RunLog(dir: runDirectory).events().filter { $0.event == .checkpointLoaded }.reduce(0) { $0 + ($1.seconds ?? 0) }
        g.wallTotal = wallSeconds
        g.wallOther = max(wallSeconds - g.wallSteps - g.wallLost, 0)
        return g
    }

    public var record: GoodputRecord {
        GoodputRecord(emulated: .init(usefulCompute: usefulCompute, bubbleAndIdle: bubble, exposedCommunication: exposedComm,
                                      checkpointSave: checkpoint, lostWork: lostWork, restart: restart, checkpointLoad: load,
                                      reducedCapacity: reducedCapacity, total: total),
                      wall: .init(survivingSteps: wallSteps, lostSteps: wallLost, startupDetectionRelaunchLoad: wallOther, total: wallTotal),
                      effectiveUtilization: effectiveUtilization, lostSteps: lostSteps, modelFLOPsSurviving: modelFLOPs)
    }

    public func table() -> [String] {
        func pct(_ x: Double, _ of: Double) -> String { of > 0 ? String(format: "%5.1f%%", 100 * x / of) : "  -  " }
        var lines = ["goodput (emulated device time, all attempts):"]
        for (name, v) in [("useful compute", usefulCompute), ("pipeline bubble and idle", bubble), ("exposed communication", exposedComm),
                          ("checkpoint save", checkpoint), ("lost work (rolled back)", lostWork), ("restart cost", restart),
                          ("checkpoint load", load)]
            + (reducedCapacity > 0 ? [("reduced capacity", reducedCapacity)] : []) {
            lines.append("  " + name.padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%12.6f s  ", v) + pct(v, total))
        }
        lines.append("  " + "total".padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%12.6f s", total))
        lines.append(String(format: "  effective utilization (model FLOPs of surviving steps / peak x ranks x total): %.4f%%", 100 * effectiveUtilization))
        lines.append(String(format: "wall time: %.2f s: surviving steps %.2f s, lost steps %.2f s, start-up/detection/relaunch/load %.2f s",
                            wallTotal, wallSteps, wallLost, wallOther))
        return lines
    }
}
