import Foundation
import Train
import Formats
import Comm
import Emulation
import Model
import Parallel
import Schedule
import Plan
import Tensor

/// `moe-train compare-schedules`: trains the same configuration with GPipe, 1F1B,
/// interleaved 1F1B and ZB-H1, one after the other in the same MPI job, and reports each
/// schedule's emulated step time, measured and closed-form bubble, peak activation memory,
/// throughput and MFU, as a table, JSON, a Chrome trace and an SVG timeline per schedule.
public enum ScheduleComparison {
    /// `dryRun`: check every schedule's plan and the output directory, then stop.
    public static func run(_ base: RunConfig, outDir: String, dryRun: Bool = false, log: @escaping (String) -> Void) throws {
        let env = LaunchEnvironment.current
        // The user's flags are checked as given; --virtual-stages applies to the interleaved run.
        var given = base
        if given.virtualStages > 1 { given.schedule = .interleaved }
        try given.validate()
        var configs: [(String, RunConfig)] = []
        for kind in ScheduleKind.allCases {
            // The split backward of ZB-H1 has no timed inventory yet: a row on the executed
            // model's clock beside rows on the timed model's would not compare.
            if kind == .zbH1 && base.timeAs != nil {
                if LaunchEnvironment.current.rank == 0 {
                    log("zb-h1: left out: time_as cannot time its split backward (input and weight gradients); --time-as none compares all four on the executed model")
                }
                continue
            }
            var c = base
            c.schedule = kind
            c.virtualStages = 1
            c.trace = nil
            c.summaryJSON = nil
            c.dumpStep = nil
            if kind == .interleaved {
                // Two chunks per rank where the layers allow it; the micro-batches must divide by P.
                c.virtualStages = base.virtualStages > 1 ? base.virtualStages : (c.model.layers >= 2 * c.pp ? 2 : 1)
            }
            configs.append((kind.rawValue, c))
        }
        // Check every configuration before starting any, so bad input fails fast on every rank.
        var checked: [(String, Launcher.Prepared)] = []
        for (name, c) in configs {
            do {
                checked.append((name, try Launcher.prepare(c, env: env)))
            } catch let e as UsageError {
                throw UsageError("\(name): \(e.description)")
            }
        }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: outDir, isDirectory: &isDir), !isDir.boolValue {
            throw UsageError("--out \(outDir) exists and is not a directory")
        }
        if dryRun {
            if env.rank == 0 {
                for (name, p) in checked { log("\(name): \(p.plan.batch.microBatches) micro-batches, layers per stage \(p.plan.stages)") }
                log("dry run: every schedule's plan is valid; nothing was run or written")
            }
            return
        }
        if env.rank == 0 {
            do { try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true) } catch {
                throw UsageError("--out \(outDir): cannot create the directory (\(error.localizedDescription))")
            }
        }
        Launcher.prepareBLAS(rank: env.rank, log: log)
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        var rows: [ComparisonRow] = []
        for (name, prepared) in checked {
            let (c, topo) = (prepared.plan.config, prepared.plan.topology)
            let groups = ProcessGroups(world: world, topology: topo)
            let trainer = try Trainer(plan: prepared.plan, groups: groups, data: prepared.data, log: { _ in })
            if world.rank == 0 { log("running \(name)\(c.virtualStages > 1 ? " (\(c.virtualStages) chunks per rank)" : "") for \(c.steps) steps...") }
            try trainer.run()
            let trace = trainer.traceJSON(wall: false)
            let picture = trainer.lastStepStageSpans()
            if world.rank == 0 {
                let summary = trainer.summary()
                try AtomicFile.write(trace, to: "\(outDir)/trace-\(name).json")
                if let picture {
                    let title = "\(name)\(c.virtualStages > 1 ? " (v=\(c.virtualStages))" : ""): pp \(topo.pp), \(trainer.plan.microBatches) micro-batches, last step"
                    try AtomicFile.write(TimelineSVG.render(title: title, stages: picture.stages, from: picture.start, to: picture.end),
                                         to: "\(outDir)/timeline-\(name).svg")
                }
                rows.append(ComparisonRow(schedule: name, summary: summary))
            }
        }
        guard world.rank == 0 else { return }
        for line in table(rows) { log(line) }
        try AtomicFile.write(try JSONText.encode(ComparisonReport(schedules: rows)), to: outDir + "/compare.json")
        log("wrote \(outDir)/compare.json, trace-*.json (Perfetto) and timeline-*.svg")
    }

    static func table(_ rows: [ComparisonRow]) -> [String] {
        func row(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 ? c.padding(toLength: 16, withPad: " ", startingAt: 0) : String(repeating: " ", count: max(0, 13 - c.count)) + c
            }.joined()
        }
        var lines = [row(["schedule", "step (emul.)", "bubble", "formula", "simulated", "peak act. s0", "(micro-b.)",
                          "tok/s emul.", "tok/s wall", "MFU"])]
        for r in rows {
            let s = r.summary, v = s.virtualStages
            let peak = s.peakActivationBytesPerStage.first ?? .nan
            let microbatch = s.microbatchActivationBytes * Double(v)
            lines.append(row([r.schedule + (v > 1 ? " v=\(v)" : ""),
                              String(format: "%.3f ms", s.emulatedStepTimeS * 1e3),
                              String(format: "%.1f%%", 100 * s.bubbleFraction),
                              String(format: "%.1f%%", 100 * s.bubbleFractionClosedForm),
                              String(format: "%.1f%%", 100 * s.bubbleFractionSimulated),
                              MemoryBreakdown.human(peak), String(format: "%.1f", peak / microbatch),
                              String(format: "%.0f", s.tokensPerSEmulated), String(format: "%.0f", s.tokensPerSWall),
                              String(format: "%.2f%%", 100 * s.mfu)]))
        }
        return lines
    }
}
