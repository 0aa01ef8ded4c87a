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
        if config.recompute != .none || config.attention != .fused {
            var line = "attention: \(config.attention.rawValue) kernel; recomputation: \(config.recompute.rawValue)"
            if config.recompute == .selective && config.attention == .fused {
                line += " (the fused kernel never keeps the probabilities selective recomputation drops: the same as none)"
            }
            log(line)
        }
        let overlaps = [(config.sequenceParallel, "sequence parallelism over the \(config.tp) TP ranks"),
                        (config.overlapGradReduce, "gradient reduction overlapped with the backward"),
                        (config.overlapParamGather && (config.zero == 1 || config.zero == 2), "parameter all-gather overlapped with the next forward"),
                        (config.overlapParamGather && config.zero == 3, "each layer's parameter gather started while the layer before it computes")].filter(\.0).map(\.1)
        if !overlaps.isEmpty { log("communication: " + overlaps.joined(separator: "; ")) }
        if config.checkpointEvery > 0 {
            var line = "checkpoints: every \(config.checkpointEvery) steps to \(config.runDirectory), \(config.checkpointMode.rawValue)"
            if config.checkpointMode == .memory {
                let m = hostMemory
                line += "; host memory in \(m.root), \(m.hosts) host(s) of \(m.gpusPerNode) rank(s), each shard copied to rank +\(m.peer(of: 0)) "
                    + (m.copiesCrossHosts ? "on the next host"
                       : "(some copies share their shard's host, \(m.world) ranks spanning fewer than two full hosts: losing such a host falls back to storage)")
            }
            log(line)
        }
    }

    public func format(_ r: StepRecord) -> String {
        var s = String(format: "step %5ld/%ld | loss %.4f | aux %.3f | gnorm %.3f | lr %.2e", r.step, config.steps,
                       r.loss, r.aux, r.gradNorm, r.lr)
        if let l = r.loadSummary(moeLayers: moeLayers) {
            s += String(format: " | load %ld/%.1f/%ld drop %.1f%%", l.min, l.mean, l.max, 100 * r.droppedFraction)
            if let i = r.imbalance(moeLayers: moeLayers) { s += String(format: " max/mean %.2f", i.overall) }
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
        if let t = job.timed {
            log("timed as: \(t.target.summary) (\(Self.human(t.plan.singleLayout.globalCount)) params, \(t.plan.tokensPerStep) tokens per step); executed: \(Self.human(singleLayout.globalCount)) params, \(first.tokens) tokens per step")
        }
        let i = records.compactMap { $0.imbalance(moeLayers: moeLayers)?.overall }
        if !i.isEmpty {
            let mean = i.reduce(0, +) / Double(i.count)
            log(String(format: "expert load: the busiest expert's assignments over the mean (the most imbalanced layer's), per step: mean %.2f, min %.2f, max %.2f",
                       mean, i.min()!, i.max()!))
        }
        log(String(format: "emulated (%@, %@ clock): %@ per step, %.0f tokens/s, MFU %.2f%%, HFU %.2f%%, compute %.1f%% / communication %.1f%% / idle %.1f%% of a rank's time",
                   emulator.profile.name, clock.mode.name, Self.seconds(stepTime), Double(job.timing.tokensPerStep) / stepTime,
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
        guard let global = GlobalParameters.gather(zero.wholeValues(), layout: params.layout, single: singleLayout, groups: groups, layoutOf: layoutOf) else {
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
    func commBytes() -> [String: RunSummary.CommBytes] {
        var out: [String: RunSummary.CommBytes] = [:]
        for (key, total) in commTotals {
            out["\(key.kind.rawValue)/\(key.group)"] = .init(bytes: counter.bytes[key] ?? 0, calls: counter.calls[key] ?? 0,
                                                               bytesAllRanks: Int(total.bytes), callsAllRanks: Int(total.calls))
        }
        return out
    }

    /// The machine-readable result of the run.
    public func summary() -> RunSummary {
        let topo = groups.topology, c = config.model
        let losses = records.map(\.loss)
        var totalLoad = Array(repeating: Array(repeating: 0, count: c.experts), count: c.layers)
        var dropped = 0, assignments = 0
        for r in records {
            for l in r.load.indices { for e in r.load[l].indices { totalLoad[l][e] += r.load[l][e] } }
            dropped += r.dropped; assignments += r.assignments
        }
        let moe = moeLayers
        let imbalance = records.compactMap { $0.imbalance(moeLayers: moe) }
        let expertLoad = RunSummary.ExpertLoad(
            moeLayers: moe, perLayerTotal: moe.map { totalLoad[$0] }, perLayerLastStep: moe.map { records.last?.load[$0] ?? [] },
            droppedFraction: assignments == 0 ? 0.0 : Double(dropped) / Double(assignments), capacityPerSequence: c.expertCapacity,
            imbalancePerStep: imbalance.map(\.overall), imbalancePerLayerPerStep: imbalance.map(\.perLayer))
        let timed = records.map(\.timing)
        let n = Double(max(timed.count, 1))
        let totalTime = timed.reduce(0) { $0 + $1.stepTime }
        let tokens = Double(records.reduce(0) { $0 + $1.tokens })
        let timedTokens = Double(records.count * job.timing.tokensPerStep)
        let stages = groups.topology.pp
        let perStage = (0..<stages).map { i in timed.reduce(0) { $0 + $1.bubblePerStage[i] } / n }
        let simulated = (0..<stages).map { i in timed.reduce(0) { $0 + ($1.simulatedBubblePerStage.count > i ? $1.simulatedBubblePerStage[i] : 0) } / n }
        // The closed form; for ZB-H1 with the forward, input- and weight-gradient times this
        // rank measured in the last step (the paper's formula assumes them known).
        func mean(_ k: Action.Kind) -> Double {
            let d = lastDurations.filter { $0.key.kind == k }.map(\.value)
            return d.isEmpty ? 1 : d.reduce(0, +) / Double(d.count)
        }
        let closedForm = ClosedForm.bubble(schedule.kind, stages: stages, microbatches: plan.microBatches,
                                           virtualStages: stagePlan.virtualStages, forward: mean(.forward),
                                           backwardInput: mean(.backwardInput), backwardWeight: mean(.backwardWeight))
        // Measured activations are the executed buffers; timed as another model, each stage's are
        // counted in micro-batches of the executed model and given the timed model's micro-batch
        // size for that stage (the last also holds the logits, which grow with the vocabulary).
        let t = job.timing
        func microbatchFloats(_ p: JobPlan, stage: Int) -> Double {
            let shard = p.placement(of: groups.topology.rank(tp: 0, dp: 0, pp: stage)).shard
            return Double(Transformer.activationFloats(config: p.model, sequences: p.batch.microBatchSize, shard: shard,
                                                       recompute: config.recompute, attention: config.attention) / stagePlan.virtualStages)
        }
        func activationScale(stage: Int) -> Double {
            job.timed == nil ? 1 : microbatchFloats(t, stage: stage) / microbatchFloats(job, stage: stage)
        }
        // Each role's measured peak is its pipeline stage's (the largest over the stage's ranks).
        func measuredActivations(_ ranks: [Int]) -> Double {
            let stage = ranks.first.map { groups.topology.coordinates(of: $0).pp } ?? 0
            let peak = stage < peakActivationPerStage.count ? peakActivationPerStage[stage] : Double(records.map(\.peakActivationFloats).max() ?? 0)
            return peak * activationScale(stage: stage)
        }
        let memoryRoles = memory.roles.map { role in
            let b = role.breakdown
            return RunSummary.MemoryRole(role: role.name, ranks: role.ranks, parameters: b.parameters, gradients: b.gradients,
                                         optimizerState: b.optimizerState, activations: b.activations, communication: b.communication,
                                         total: b.total, activationsMeasured: measuredActivations(role.ranks) * emulator.precision.elementBytes,
                                         capacity: emulator.profile.memoryBytes)
        }
        return RunSummary(
            worldSize: topo.world, tp: topo.tp, pp: topo.pp, dp: topo.dp, ep: topo.ep, zero: config.zero,
            schedule: schedule.kind.rawValue, virtualStages: stagePlan.virtualStages, ppLayers: stagePlan.layers.map(\.count),
            steps: records.count, losses: losses, auxLosses: records.map(\.aux), gradNorms: records.map(\.gradNorm),
            learningRates: records.map(\.lr), skippedSteps: records.filter(\.skipped).map(\.step),
            finalLoss: losses.last ?? Double.nan, entropyFloor: data.entropyFloor(seqLen: c.seqLen), paramChecksum: checksum,
            totalParams: singleLayout.globalCount, activeParams: singleLayout.activeCount(config: c),
            localParams: params.layout.specs.reduce(0) { $0 + $1.count },
            optimizerStateBytes: optimizers.reduce(0) { $0 + Double($1.range.count) } * emulator.precision.optimizerBytesPerParameter,
            globalBatch: plan.globalBatch, microBatchSize: plan.microBatchSize, microBatches: plan.microBatches, seqLen: c.seqLen,
            seed: config.seed, data: data.description, expertLoad: expertLoad, commBytes: commBytes(),
            device: emulator.profile.name, clock: clock.mode.name, precision: emulator.precision.rawValue, link: config.link.rawValue,
            gpusPerNode: config.gpusPerNode,
            emulatedStepTimesS: timed.map(\.stepTime), emulatedStepTimeS: totalTime / n,
            tokensPerSEmulated: totalTime > 0 ? timedTokens / totalTime : 0,
            mfu: timed.reduce(0) { $0 + $1.mfu } / n, hfu: timed.reduce(0) { $0 + $1.hfu } / n,
            bubbleFractionPerStage: perStage, bubbleFraction: perStage.reduce(0, +) / Double(stages),
            bubbleFractionSimulatedPerStage: simulated, bubbleFractionSimulated: simulated.reduce(0, +) / Double(stages),
            bubbleFractionClosedForm: closedForm,
            pipelinePhaseS: timed.reduce(0) { $0 + $1.pipelinePhase } / n,
            peakActivationBytesPerStage: peakActivationPerStage.enumerated().map { $1 * activationScale(stage: $0) * emulator.precision.elementBytes },
            microbatchActivationBytes: microbatchFloats(t, stage: 0) * emulator.precision.elementBytes,
            exposedCommFraction: totalTime > 0 ? timed.reduce(0) { $0 + $1.communication } / totalTime : 0,
            timeBreakdownS: .init(compute: timed.reduce(0) { $0 + $1.compute }, communication: timed.reduce(0) { $0 + $1.communication },
                                  idle: timed.reduce(0) { $0 + $1.idle }, total: totalTime),
            modelFLOPsPerToken: flopsPerToken, memoryBytes: memoryRoles,
            wallTimeS: wallSeconds, tokensPerSWall: tokens / max(wallSeconds, 1e-9),
            resources: .init(computeCPUSecondsPerRank: resources.computeCPU, cpuSecondsPerRank: resources.cpu,
                             communicationWallSecondsPerRank: resources.communicationWall, wallSecondsPerRank: resources.loopWall,
                             rssBytesPerRank: resources.rss, parameterFloatsPerRank: resources.parameters,
                             gradientFloatsPeakPerRank: resources.gradientsPeak, optimizerFloatsPerRank: resources.optimizer),
            timedAs: job.timed.map { _ in
                RunSummary.TimedModel(dModel: t.model.dModel, ffnHidden: t.model.ffnHidden, heads: t.model.heads, kvHeads: t.model.kvHeads,
                                      seqLen: t.model.seqLen, vocab: t.model.vocab, microBatchSize: t.batch.microBatchSize,
                                      globalBatch: t.batch.globalBatch, totalParams: t.singleLayout.globalCount,
                                      activeParams: t.singleLayout.activeCount(config: t.model), tokensPerStep: t.tokensPerStep)
            })
    }
}
