import Foundation
import Formats
import Plan

/// `moe-train goodput-sweep`: the same supervised job with MTBF-drawn crashes for several
/// checkpoint intervals, its measured effective utilization beside the Young/Daly optimum
/// interval sqrt(2 x checkpoint cost x MTBF of the job) (Young 1974; Daly 2006) and the
/// utilization that first-order model predicts for each interval.
public enum GoodputSweep {
    public struct Row {
        public let interval: Int
        public let measured: Double
        public let predicted: Double
        public let restarts: Int
        public let lostWork: Double
        /// Emulated seconds per checkpoint, as measured in this run, and per load, averaged
        /// over the loads of all the sweep's runs.
        public let checkpointCost: Double
        public let loadCost: Double
    }

    /// `persistPerSnapshot`: for asynchronous checkpoints, the persist window over the snapshot
    /// time (host bandwidth over storage bandwidth); 0 for synchronous ones and for host
    /// memory (a copy on the peer host is as durable, against one failure, as storage). A
    /// failure inside the window after a snapshot finds it not yet durable, so each failure
    /// loses the window more, and the interval cannot be shorter than the window. Each
    /// failure also costs a restart and a checkpoint load, measured from the runs (storage or
    /// host-memory bandwidth, as the mode loads).
    public static func run(np: Int, mtbfHours: Double, intervals: [Int], maxRestarts: Int, trainingFlags: [String],
                           baseDirectory: String, binary: String, restartCostS: Double, persistPerSnapshot: Double = 0,
                           mode: String = "sync", log: @escaping (String) -> Void) throws -> [Row] {
        var measured: [(interval: Int, goodput: Goodput, restarts: Int, loads: Int)] = []
        for k in intervals {
            let dir = baseDirectory + "/every-\(k)"
            guard !FileManager.default.fileExists(atPath: dir) else {
                throw UsageError("goodput-sweep: \(dir) already exists; choose another --out")
            }
            let flags = trainingFlags + ["--checkpoint-every", String(k), "--mtbf-hours", String(mtbfHours), "--checkpoint-dir", dir]
            let options = Supervisor.Options(np: np, maxRestarts: maxRestarts, hangTimeout: 120, summaryJSON: dir + "/job.json",
                                             mpirunArgs: [], trainingFlags: flags, binary: binary, runDirectory: dir,
                                             restartCostS: restartCostS, quiet: true)
            log("goodput-sweep: checkpoint every \(k) steps")
            let result = try Supervisor(options: options) { line in
                if line.hasPrefix("supervise: attempt") && line.contains("failed") { log("  " + line) }
            }.run()
            // A job that gave up is still a row (its goodput shows it); bad input or a signal ends the sweep.
            if result.status == .badInput || result.status == .interrupted { throw ExitFailure(result.status, "checkpoint every \(k) steps: " + result.message) }
            let events = try RunLog(dir: dir).events()
            let restarts = events.filter { $0.event == .restart }.count
            let loads = events.filter { $0.event == .checkpointLoaded }.count
            let g = try Goodput.compute(runDirectory: dir, restarts: restarts, restartCostS: restartCostS, wallSeconds: 0)
            measured.append((k, g, restarts, loads))
        }
        // The model's inputs, measured: step time and utilization without failures (the last
        // run's), the cost of one checkpoint (each run's) and of one load (over all runs).
        var stepTime = 0.0, baseline = 0.0
        if let g = measured.last?.goodput {
            stepTime = (g.usefulCompute + g.bubble + g.exposedComm) / Double(max(g.survivingLosses.count, 1))
            baseline = g.modelFLOPs / (g.peakFLOPS * Double(g.ranks) * (g.usefulCompute + g.bubble + g.exposedComm))
        }
        let loads = measured.reduce(0) { $0 + $1.loads }
        let loadCost = loads > 0 ? measured.reduce(0) { $0 + $1.goodput.load } / Double(loads) : 0
        let jobMTBF = mtbfHours * 3600 / Double(np)
        // Utilization = baseline x (1 - loss per failure / MTBF) / (1 + C / tau), as `project`.
        let rows = measured.map { m -> Row in
            let g = m.goodput
            let cost = g.checkpoint / Double(max(g.survivingLosses.count / m.interval, 1))
            let window = durabilityWindow(snapshot: cost, persistPerSnapshot: persistPerSnapshot, stepTime: stepTime)
            let tau = max(Double(m.interval) * stepTime, window)
            let lost = (tau / 2 + window + restartCostS + loadCost) / jobMTBF
            return Row(interval: m.interval, measured: g.effectiveUtilization, predicted: baseline * max(0, 1 - lost) / (1 + cost / tau),
                       restarts: m.restarts, lostWork: g.lostWork, checkpointCost: cost, loadCost: loadCost)
        }
        // The optimum from the mean cost of one checkpoint over the runs.
        let checkpointCost = rows.isEmpty ? 0 : rows.reduce(0) { $0 + $1.checkpointCost } / Double(rows.count)
        let window = durabilityWindow(snapshot: checkpointCost, persistPerSnapshot: persistPerSnapshot, stepTime: stepTime)
        let optimum = max((2 * checkpointCost * jobMTBF).squareRoot(), window)
        log(String(format: "%@ checkpoints: job MTBF %.4g emulated s (%ld GPUs x %.4g h each); checkpoint cost %.4g s%@; load %.4g s per restart (+ %.4g s restart cost); step %.4g s; utilization without failures %.4f%%",
                   mode, jobMTBF, np, mtbfHours, checkpointCost,
                   persistPerSnapshot > 0 ? String(format: " (async: the snapshot; durable at the step boundary %.4g s later)", window) : "",
                   loadCost, restartCostS, stepTime, 100 * baseline))
        log(String(format: "Young/Daly optimum interval sqrt(2 x C x MTBF) = %.4g s = %.1f steps", optimum, optimum / max(stepTime, 1e-30)))
        log("  every   restarts   lost work (s)   effective utilization   predicted")
        for r in rows {
            log(String(format: "  %5ld   %8ld   %13.6f   %20.4f%%   %8.4f%%", r.interval, r.restarts, r.lostWork, 100 * r.measured, 100 * r.predicted))
        }
        return rows
    }

    /// How long after a snapshot its checkpoint becomes durable in these runs: the persist
    /// time, rounded up to whole steps, since ranks agree on durability at step boundaries.
    static func durabilityWindow(snapshot: Double, persistPerSnapshot: Double, stepTime: Double) -> Double {
        let persist = snapshot * persistPerSnapshot
        guard persist > 0, stepTime > 0 else { return 0 }
        return (persist / stepTime).rounded(.up) * stepTime
    }
}
