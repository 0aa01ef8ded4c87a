import Foundation
import Formats
import Comm
import Emulation
import Model
import Parallel
import Schedule
import Plan
import Tensor

extension Trainer {

    func printHeader() {
        for line in job.headerLines(data: Launcher.dataLines(data, seqLen: config.model.seqLen)) { log(line) }
    }

    public func format(_ r: StepRecord) -> String {
        var s = String(format: "step %5ld/%ld | loss %.4f | aux %.3f | gnorm %.3f | lr %.2e", r.step, config.steps,
                       r.loss, r.aux, r.gradNorm, r.lr)
        if let l = r.loadSummary(moeLayers: moeLayers) {
            s += String(format: " | load %ld/%.1f/%ld drop %.1f%%", l.min, l.mean, l.max, 100 * r.droppedFraction)
        }
        let t = r.timing
        s += String(format: " | step %@ MFU %.2f%%", Self.seconds(t.stepTime), 100 * t.mfu)
        if groups.topology.pp > 1 { s += String(format: " bubble %.1f%%", 100 * t.bubble) }
        s += String(format: " | %.0f tok/s (wall)", Double(r.tokens) / max(r.wallSeconds, 1e-9))
        if r.skipped { s += " | SKIPPED" }
        return s
    }

    func printFooter() {
        guard let last = records.last, let first = records.first else { return }
        var s = String(format: "done: %ld steps in %.1f s wall, loss %.4f -> %.4f", records.count, wallSeconds, first.loss, last.loss)
        if let floor = data.entropyFloor(seqLen: config.model.seqLen) {
            s += String(format: " (floor %.4f, gap %.4f)", floor, last.loss - floor)
        }
        log(s)
        let timed = records.map(\.timing)
        let stepTime = timed.reduce(0) { $0 + $1.stepTime } / Double(timed.count)
        let tokensPerStep = Double(first.tokens)
        log(String(format: "emulated (%@, %@ clock): %@ per step, %.0f tokens/s, MFU %.2f%%, HFU %.2f%%, compute %.1f%% / communication %.1f%% / idle %.1f%% of a rank's time",
                   emulator.profile.name, clock.mode.name, Self.seconds(stepTime), tokensPerStep / stepTime,
                   100 * timed.reduce(0) { $0 + $1.mfu } / Double(timed.count), 100 * timed.reduce(0) { $0 + $1.hfu } / Double(timed.count),
                   100 * timed.reduce(0) { $0 + $1.compute } / timed.reduce(0) { $0 + $1.stepTime },
                   100 * timed.reduce(0) { $0 + $1.communication } / timed.reduce(0) { $0 + $1.stepTime },
                   100 * timed.reduce(0) { $0 + $1.idle } / timed.reduce(0) { $0 + $1.stepTime }))
        log(String(format: "wall clock: %.3f s per step, %.0f tokens/s on this machine", wallSeconds / Double(records.count),
                   tokensPerStep * Double(records.count) / wallSeconds))
        log("param checksum: \(checksum)")
    }

    /// The last step's spans of each pipeline stage (its tp 0, dp 0 rank), and the window from
    /// the step's earliest start to its latest end. Collective; rank 0 gets the result.
    public func lastStepStageSpans() -> (stages: [[Span]], start: Double, end: Double)? {
        let world = groups.world
        let mine = clock.spans.filter { $0.end > lastStepStart }
        let bounds = world.untimed { world.allGather([lastStepStart, clock.now]) }
        let parts = world.untimed { world.gatherBytes(TraceWriter.pack(mine), root: 0) }
        guard world.rank == 0 else { return nil }
        let topo = groups.topology
        let stages = (0..<topo.pp).map { TraceWriter.unpack(parts[topo.rank(tp: 0, dp: 0, pp: $0)][...]) }
        let starts = stride(from: 0, to: bounds.count, by: 2).map { bounds[$0] }
        let ends = stride(from: 1, to: bounds.count, by: 2).map { bounds[$0] }
        return (stages, starts.min() ?? 0, ends.max() ?? 0)
    }

    /// Chrome trace JSON of every rank's spans (collective: every rank must call it; rank 0 gets the text).
    public func traceJSON(wall: Bool) -> String {
        let world = groups.world
        let parts = world.untimed { world.gatherBytes(TraceWriter.pack(clock.spans), root: 0) }
        guard world.rank == 0 else { return "" }
        let tracks = parts.enumerated().map { rank, bytes in
            TraceWriter.Track(rank: rank, name: groups.topology.coordinates(of: rank).description,
                              spans: TraceWriter.unpack(bytes[...]))
        }
        return TraceWriter.json(tracks, wall: wall)
    }

    /// SHA-256 over all parameters in the single-rank layout and order, as little-endian fp32.
    /// Collective: every rank sends its canonical shards; rank 0 returns the hex digest.
    public func parameterChecksum() -> String {
        guard let global = GlobalParameters.gather(params.values, layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf) else {
            return ""
        }
        return global.withUnsafeBufferPointer { SHA256Hex.of(floats: $0) }
    }

    /// Emulated seconds in a readable unit.
    static func seconds(_ s: Double) -> String {
        if s >= 1 { return String(format: "%.3f s", s) }
        if s >= 1e-3 { return String(format: "%.3f ms", s * 1e3) }
        return String(format: "%.1f us", s * 1e6)
    }

    static func human(_ n: Int) -> String { JobPlan.human(n) }

    static let groupNames = ["world"] + Topology.Group.allCases.map(\.rawValue)

    /// Sums every rank's byte and call counts (collective; bookkeeping, untimed).
    func worldCommTotals() -> [CommCounter.Key: (bytes: Double, calls: Double)] {
        let keys = CommKind.allCases.flatMap { k in Self.groupNames.map { CommCounter.Key(kind: k, group: $0) } }
        var v = keys.flatMap { [Double(counter.bytes[$0] ?? 0), Double(counter.calls[$0] ?? 0)] }
        let world = groups.world
        world.untimed { world.allReduce(&v) }
        var out: [CommCounter.Key: (bytes: Double, calls: Double)] = [:]
        for (i, k) in keys.enumerated() where v[2 * i + 1] > 0 { out[k] = (v[2 * i], v[2 * i + 1]) }
        return out
    }

    /// Per collective kind and group ("all-reduce/tp"): rank 0's bytes and calls, and the
    /// bytes and calls of all ranks together. Training traffic only (not bookkeeping).
    func commBytes() -> [String: Any] {
        var out: [String: Any] = [:]
        for (key, total) in commTotals {
            out["\(key.kind.rawValue)/\(key.group)"] = ["bytes": counter.bytes[key] ?? 0, "calls": counter.calls[key] ?? 0,
                                                         "bytes_all_ranks": Int(total.bytes), "calls_all_ranks": Int(total.calls)]
        }
        return out
    }

    /// The machine-readable result of the run.
    public func summary() -> [String: Any] {
        let topo = groups.topology, c = config.model
        let losses = records.map(\.loss)
        var totalLoad = Array(repeating: Array(repeating: 0, count: c.experts), count: c.layers)
        var dropped = 0, assignments = 0
        for r in records {
            for l in r.load.indices { for e in r.load[l].indices { totalLoad[l][e] += r.load[l][e] } }
            dropped += r.dropped; assignments += r.assignments
        }
        let moe = moeLayers
        var out: [String: Any] = [
            "world_size": topo.world, "tp": topo.tp, "pp": topo.pp, "dp": topo.dp, "ep": topo.ep,
            "steps": records.count,
            "losses": losses,
            "aux_losses": records.map(\.aux),
            "grad_norms": records.map(\.gradNorm),
            "learning_rates": records.map(\.lr),
            "skipped_steps": records.filter(\.skipped).map(\.step),
            "final_loss": losses.last ?? Double.nan,
            "param_checksum": checksum,
            "zero": config.zero,
            "wall_time_s": wallSeconds,
            "tokens_per_s_wall": Double(records.reduce(0) { $0 + $1.tokens }) / max(wallSeconds, 1e-9),
            "total_params": singleLayout.globalCount,
            "active_params": singleLayout.activeCount(config: c),
            "local_params": params.layout.specs.reduce(0) { $0 + $1.count },
            "optimizer_state_bytes": optimizers.reduce(0) { $0 + Double($1.range.count) } * emulator.precision.optimizerBytesPerParameter,
            "comm_bytes": commBytes(),
            "global_batch": plan.globalBatch, "micro_batch_size": plan.microBatchSize, "micro_batches": plan.microBatches,
            "seq_len": c.seqLen, "seed": NSNumber(value: config.seed),
            "data": data.description,
            "expert_load": [
                "moe_layers": moe,
                "per_layer_total": moe.map { totalLoad[$0] },
                "per_layer_last_step": moe.map { records.last?.load[$0] ?? [] },
                "dropped_fraction": assignments == 0 ? 0.0 : Double(dropped) / Double(assignments),
                "capacity_per_sequence": c.expertCapacity.map { $0 as Any } ?? NSNull(),
            ] as [String: Any],
        ]
        out["entropy_floor"] = data.entropyFloor(seqLen: c.seqLen).map { $0 as Any } ?? NSNull()
        let timed = records.map(\.timing)
        let n = Double(max(timed.count, 1))
        let totalTime = timed.reduce(0) { $0 + $1.stepTime }
        out["device"] = emulator.profile.name
        out["clock"] = clock.mode.name
        out["precision"] = emulator.precision.rawValue
        out["link"] = config.link.rawValue
        out["gpus_per_node"] = config.gpusPerNode
        out["emulated_step_times_s"] = timed.map(\.stepTime)
        out["emulated_step_time_s"] = totalTime / n
        out["tokens_per_s_emulated"] = totalTime > 0 ? Double(records.reduce(0) { $0 + $1.tokens }) / totalTime : 0
        out["mfu"] = timed.reduce(0) { $0 + $1.mfu } / n
        out["hfu"] = timed.reduce(0) { $0 + $1.hfu } / n
        let stages = groups.topology.pp
        let perStage = (0..<stages).map { i in timed.reduce(0) { $0 + $1.bubblePerStage[i] } / n }
        out["bubble_fraction_per_stage"] = perStage
        out["bubble_fraction"] = perStage.reduce(0, +) / Double(stages)
        let simulated = (0..<stages).map { i in timed.reduce(0) { $0 + ($1.simulatedBubblePerStage.count > i ? $1.simulatedBubblePerStage[i] : 0) } / n }
        out["bubble_fraction_simulated_per_stage"] = simulated
        out["bubble_fraction_simulated"] = simulated.reduce(0, +) / Double(stages)
        // The closed form; for ZB-H1 with the forward, input- and weight-gradient times this
        // rank measured in the last step (the paper's formula assumes them known).
        func mean(_ k: Action.Kind) -> Double {
            let d = lastDurations.filter { $0.key.kind == k }.map(\.value)
            return d.isEmpty ? 1 : d.reduce(0, +) / Double(d.count)
        }
        out["bubble_fraction_closed_form"] = ClosedForm.bubble(schedule.kind, stages: stages, microbatches: plan.microBatches,
                                                              virtualStages: stagePlan.virtualStages, forward: mean(.forward),
                                                              backwardInput: mean(.backwardInput), backwardWeight: mean(.backwardWeight))
        out["pipeline_phase_s"] = timed.reduce(0) { $0 + $1.pipelinePhase } / n
        out["schedule"] = schedule.kind.rawValue
        out["virtual_stages"] = stagePlan.virtualStages
        out["pp_layers"] = stagePlan.layers.map(\.count)
        out["peak_activation_bytes_per_stage"] = peakActivationPerStage.map { $0 * emulator.precision.elementBytes }
        out["microbatch_activation_bytes"] = Double(Transformer.activationFloats(config: c, sequences: plan.microBatchSize,
            shard: job.placement(of: 0).shard) / stagePlan.virtualStages) * emulator.precision.elementBytes
        out["exposed_comm_fraction"] = totalTime > 0 ? timed.reduce(0) { $0 + $1.communication } / totalTime : 0
        out["time_breakdown_s"] = ["compute": timed.reduce(0) { $0 + $1.compute }, "communication": timed.reduce(0) { $0 + $1.communication },
                                   "idle": timed.reduce(0) { $0 + $1.idle }, "total": totalTime]
        out["model_flops_per_token"] = flopsPerToken
        out["resources"] = ["compute_cpu_s_per_rank": resources.computeCPU, "rss_bytes_per_rank": resources.rss]
        let measuredActivations = records.map(\.peakActivationFloats).max() ?? 0
        out["memory_bytes"] = memory.roles.map { role -> [String: Any] in
            var b = role.breakdown.json
            b["role"] = role.name
            b["ranks"] = role.ranks
            b["activations_measured"] = Double(measuredActivations) * emulator.precision.elementBytes
            b["capacity"] = emulator.profile.memoryBytes
            return b
        }
        return out
    }
}
