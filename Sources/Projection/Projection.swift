import Foundation
import Emulation
import Model
import Schedule
import Plan

/// One training step of a configuration projected without allocating the model or running
/// MPI: every rank's kernels and messages listed from the shapes (`KernelInventory`, the
/// same ones the layers report to the emulated clock), costed by the cost model, and the
/// pipeline run through the very schedule generators and event simulator the executor is
/// validated with. The data-parallel reduction, gradient norm and optimizer follow as in
/// the trainer (ZeRO-1 reduce-scatter, all-reduce of the norm, AdamW, all-gather).
public struct Projection {
    /// The plan projected.
    public let plan: JobPlan
    public let stepTime: Double
    public let pipelinePhase: Double
    public let bubblePerStage: [Double]
    public let mfu: Double
    public let memory: MemoryPlan
    public let tokensPerStep: Int
    /// Per stage (its tp 0, dp 0 rank): seconds of TP and EP collectives in its pipeline
    /// actions, and of data-parallel reduction and gather after them: the exposed part (all of
    /// it unless the reduction or the gather is overlapped).
    public let modelParallelCommPerStage: [Double]
    public let dataParallelCommPerStage: [Double]
    /// The first stage's communication as a share of the step.
    public var exposedCommFraction: Double {
        stepTime > 0 ? ((modelParallelCommPerStage.first ?? 0) + (dataParallelCommPerStage.first ?? 0)) / stepTime : 0
    }

    public var bubble: Double { bubblePerStage.reduce(0, +) / Double(max(bubblePerStage.count, 1)) }

    /// Hardware FLOPs of the step over all ranks (recomputation included).
    public let executedFLOPsPerStep: Double

    /// Activation recomputation is the configuration's (`config.recompute`): the backward
    /// work lists the recomputed kernels and messages (`KernelInventory.backward`).
    public init(config: RunConfig, worldSize: Int) throws {
        // With `time_as`, the timed model: what a run of this configuration charges.
        try self.init(plan: try JobPlan(config: config, world: worldSize, purpose: .projection).timing)
    }

    /// Projects a planned job.
    public init(plan job: JobPlan) throws {
        plan = job
        let (config, topo, batch, plan, schedule, emulator) = (job.config, job.topology, job.batch, job.stages, job.schedule, job.emulator)
        let recompute = config.recompute
        let cost = emulator.cost
        let bytes = emulator.precision.elementBytes
        let c = config.model
        func group(_ g: Topology.Group, of rank: Int) -> (size: Int, link: LinkClass) {
            let members = topo.members(g, of: rank)
            return (members.count, cost.links.link(for: members))
        }
        /// Emulated seconds of a list of work on rank `rank` (`commOnly`: its messages only).
        func seconds(_ work: [KernelInventory.Work], rank: Int, commOnly: Bool = false) -> Double {
            let tp = group(.tp, of: rank), ep = group(.ep, of: rank)
            return work.reduce(0) { total, w in
                switch w {
                case .kernel(let f, let e): return total + (commOnly ? 0 : cost.kernel(flops: f, elements: e))
                case .tpAllReduce(let n), .tpAllReduceMax(let n):
                    return total + cost.collective(.allReduce, bytes: n * bytes, ranks: tp.size, link: tp.link)
                case .tpAllGather(let n): return total + cost.collective(.allGather, bytes: n * bytes, ranks: tp.size, link: tp.link)
                case .tpReduceScatter(let n): return total + cost.collective(.reduceScatter, bytes: n * bytes, ranks: tp.size, link: tp.link)
                case .epAllToAll(let n): return total + cost.collective(.allToAll, bytes: n * bytes, ranks: ep.size, link: ep.link)
                case .epCounts(let b): return total + cost.collective(.allToAll, bytes: b, ranks: ep.size, link: ep.link)
                }
            }
        }
        /// The collectives of one gradient bucket on the communication stream of `rank`: its dense
        /// part over the data-parallel group, its expert part over the expert-data-parallel one.
        func bucketDurations(_ b: GradientBucket, _ kind: CostModel.Collective, rank: Int) -> [Double] {
            // ZeRO's shard groups (the data-parallel groups unless hybrid), and under hybrid sharding the
            // all-reduce of each rank's even share of the reduced bucket over its replicas.
            var out: [Double] = []
            for (range, shardGroup, replicaGroup) in [(b.dense, Topology.Group.dpShard, Topology.Group.dpReplica),
                                                      (b.expert, .edpShard, .edpReplica)] where !range.isEmpty {
                let g = group(shardGroup, of: rank), replicas = group(replicaGroup, of: rank)
                if g.size > 1 { out.append(cost.collective(kind, bytes: Double(range.count) * bytes, ranks: g.size, link: g.link)) }
                if kind == .reduceScatter && replicas.size > 1 {
                    out.append(cost.collective(.allReduce, bytes: Double(range.count) / Double(g.size) * bytes, ranks: replicas.size, link: replicas.link))
                }
            }
            return out
        }
        // Per pipeline stage (its tp 0, dp 0 rank): forward and backward of each chunk.
        var forward: [[Double]] = [], backward: [[Double]] = []
        var modelComm: [Double] = []
        for s in 0..<topo.pp {
            let rank = topo.rank(tp: 0, dp: 0, pp: s)
            let shard = job.placement(of: rank).shard
            var f: [Double] = [], b: [Double] = []
            var comm = 0.0
            for chunk in 0..<plan.virtualStages {
                let vs = plan.virtualStage(rank: s, chunk: chunk)
                let layers = plan.layers[vs]
                let first = vs == 0, last = vs == plan.virtualStageCount - 1
                let fwWork = KernelInventory.forward(config: c, shard: shard, sequences: batch.microBatchSize, layers: layers,
                                                     embedding: first, head: last, attention: config.attention)
                let bwWork = KernelInventory.backward(config: c, shard: shard, sequences: batch.microBatchSize, layers: layers,
                                                      embedding: first, head: last, recompute: recompute, attention: config.attention)
                f.append(seconds(fwWork, rank: rank))
                b.append(seconds(bwWork, rank: rank))
                comm += (seconds(fwWork, rank: rank, commOnly: true) + seconds(bwWork, rank: rank, commOnly: true)) * Double(batch.microBatches)
            }
            forward.append(f); backward.append(b); modelComm.append(comm)
        }
        // ZeRO-2 and 3: every backward reduce-scatters each unit's bucket as it completes it,
        // on the communication stream waited for at the backward's end (overlapped) or at once;
        // ZeRO-3 gathers each unit's parameters before it in every forward and backward, at
        // once or started one unit ahead (`overlapParamGather`). `passSeconds` replays what the
        // trainer's clock does, in the order it does it.
        var shardedComm = [Double](repeating: 0, count: topo.pp)
        func passSeconds(compute: [Double], gathers: [[Double]], reductions: [[Double]]) -> Double {
            var t = 0.0, stream = CommunicationStream()
            var ahead: (issued: Double, durations: [Double])? = nil
            var deferred: [(issued: Double, duration: Double)] = []
            func finish(_ ops: [(issued: Double, duration: Double)]) {
                guard !ops.isEmpty else { return }
                for op in ops { _ = stream.run(issued: op.issued, duration: op.duration) }
                t = max(t, stream.free)
            }
            for i in compute.indices {
                if let a = ahead { finish(a.durations.map { (a.issued, $0) }); ahead = nil } else { finish(gathers[i].map { (t, $0) }) }
                if config.overlapParamGather && i + 1 < compute.count { ahead = (t, gathers[i + 1]) }
                t += compute[i]
                if config.overlapGradReduce { deferred += reductions[i].map { (t, $0) } } else { finish(reductions[i].map { (t, $0) }) }
            }
            finish(deferred)
            return t
        }
        if config.zero >= 2 {
            for s in 0..<topo.pp {
                let rank = topo.rank(tp: 0, dp: 0, pp: s)
                let placement = job.placement(of: rank)
                let buckets = placement.layout.gradientBuckets
                func durations(_ unit: GradientUnit, _ kind: CostModel.Collective) -> [Double] {
                    buckets.first { $0.unit == unit }.map { bucketDurations($0, kind, rank: rank) } ?? []
                }
                for chunk in 0..<plan.virtualStages {
                    let vs = plan.virtualStage(rank: s, chunk: chunk)
                    let (first, last) = (vs == 0, vs == plan.virtualStageCount - 1)
                    let fw = KernelInventory.forwardUnits(config: c, shard: placement.shard, sequences: batch.microBatchSize, layers: plan.layers[vs],
                                                          embedding: first, head: last, attention: config.attention)
                    let bw = KernelInventory.backwardUnits(config: c, shard: placement.shard, sequences: batch.microBatchSize,
                                                           layers: plan.layers[vs], embedding: first, head: last,
                                                           recompute: recompute, attention: config.attention)
                    let gather = config.zero == 3
                    let fwCompute = fw.map { seconds($0.work, rank: rank) }, bwCompute = bw.map { seconds($0.work, rank: rank) }
                    let f = gather ? passSeconds(compute: fwCompute, gathers: fw.map { durations($0.unit, .allGather) },
                                                 reductions: fw.map { _ in [] }) : fwCompute.reduce(0, +)
                    let b = passSeconds(compute: bwCompute, gathers: bw.map { gather ? durations($0.unit, .allGather) : [] },
                                        reductions: bw.map { durations($0.unit, .reduceScatter) })
                    let exposed = (f - fwCompute.reduce(0, +)) + (b - bwCompute.reduce(0, +))
                    forward[s][chunk] += f - fwCompute.reduce(0, +)
                    backward[s][chunk] += b - bwCompute.reduce(0, +)
                    shardedComm[s] += exposed * Double(batch.microBatches)
                }
            }
        }
        // After the pipeline, per stage: the gradient reduction, the norm, the optimizer, the gather.
        var reduce: [Double] = [], update: [Double] = [], dataComm: [Double] = []
        for s in 0..<topo.pp {
            let rank = topo.rank(tp: 0, dp: 0, pp: s)
            let layout = job.placement(of: rank).layout
            // ZeRO shards over these (the data-parallel groups unless hybrid sharding), and the replicas of a shard.
            let dp = group(.dpShard, of: rank), edp = group(.edpShard, of: rank), tp = group(.tp, of: rank)
            let dpReplicas = group(.dpReplica, of: rank), edpReplicas = group(.edpReplica, of: rank)
            let zero1 = config.zero >= 1, zero2 = config.zero >= 2
            var r = 0.0
            var dpc = 0.0
            // The TP-partial gradients: all of them, or under ZeRO-2 those in the rank's shards.
            let at = topo.coordinates(of: rank)
            let partial = Double(zero2 ? layout.partialGradientCount(within: Placement.zeroShards(layout, topo, at))
                                       : layout.specs.filter { $0.placement == .replicatedPartialGrad }.reduce(0) { $0 + $1.count })
            if tp.size > 1 && partial > 0 { r += cost.collective(.allReduce, bytes: partial * bytes, ranks: tp.size, link: tp.link) }
            let dense = Double(layout.denseRegion.count), expert = Double(layout.expertRegion.count)
            // Overlapped, the data-parallel reduction is placed on the communication stream
            // once the pipeline's timeline is known (below); here only its exposed part is added.
            if !config.overlapGradReduce && !zero2 {
                if dp.size > 1 && dense > 0 { r += cost.collective(zero1 ? .reduceScatter : .allReduce, bytes: dense * bytes, ranks: dp.size, link: dp.link) }
                if edp.size > 1 && expert > 0 { r += cost.collective(zero1 ? .reduceScatter : .allReduce, bytes: expert * bytes, ranks: edp.size, link: edp.link) }
                // Hybrid sharding: each shard summed over its replicas.
                if dpReplicas.size > 1 && dense > 0 {
                    r += cost.collective(.allReduce, bytes: dense / Double(dp.size) * bytes, ranks: dpReplicas.size, link: dpReplicas.link)
                }
                if edpReplicas.size > 1 && expert > 0 {
                    r += cost.collective(.allReduce, bytes: expert / Double(edp.size) * bytes, ranks: edpReplicas.size, link: edpReplicas.link)
                }
            }
            let ownedDense = zero1 ? dense / Double(dp.size) : dense, ownedExpert = zero1 ? expert / Double(edp.size) : expert
            dpc = r + shardedComm[s]
            r += cost.kernel(flops: 2 * (ownedDense + ownedExpert), elements: ownedDense + ownedExpert)  // the norm's sum of squares
            reduce.append(r)
            var u = 0.0
            for n in [ownedDense, ownedExpert] where n > 0 {
                u += cost.kernel(flops: 16 * n, elements: n * emulator.precision.optimizerStepBytesPerParameter / bytes)
            }
            var gathers = 0.0   // overlapped, the gathers wait on the communication stream for the next forward (below)
            if zero1 && config.zero < 3 && !config.overlapParamGather {   // ZeRO-3 keeps its parameters sharded
                if dp.size > 1 && dense > 0 { gathers += cost.collective(.allGather, bytes: dense * bytes, ranks: dp.size, link: dp.link) }
                if edp.size > 1 && expert > 0 { gathers += cost.collective(.allGather, bytes: expert * bytes, ranks: edp.size, link: edp.link) }
            }
            update.append(u + gathers)
            dataComm.append(dpc + gathers)
        }
        let world = cost.links.link(for: Array(0..<topo.world))
        let normAllReduce = topo.world > 1 ? cost.collective(.allReduce, bytes: 8, ranks: topo.world, link: world) : 0
        // Steady state: every stage starts its step `update` after the previous step's
        // all-reduce of the norm, which waits for the slowest stage.
        // A stage sends its rows of the residual stream (a block of them under sequence parallelism).
        let activationBytes = Double(job.placement(of: 0).shard.residualRows(tokens: batch.microBatchSize * c.seqLen) * c.dModel) * bytes
        // Overlapped parameter gathers: per stage, the time each unit's parameters are complete
        // (its buckets run on the communication stream from the end of the optimizer, in the
        // forward's order), and the waits this puts into the first forward of each chunk.
        var ready: [[GradientUnit: Double]] = Array(repeating: [:], count: topo.pp)
        if config.overlapParamGather && (config.zero == 1 || config.zero == 2) {
            for s in 0..<topo.pp {
                let rank = topo.rank(tp: 0, dp: 0, pp: s)
                var stream = CommunicationStream()
                for b in job.placement(of: rank).layout.gradientBuckets {
                    for duration in bucketDurations(b, .allGather, rank: rank) {
                        ready[s][b.unit] = stream.run(issued: update[s], duration: duration).end
                    }
                }
            }
        }
        var waits: [[Action: Double]] = Array(repeating: [:], count: topo.pp)
        let costs = Simulator.Costs(compute: { r, a in
            switch a.kind {
            case .forward: return forward[r][a.chunk] + (waits[r][a] ?? 0)
            case .backward: return backward[r][a.chunk]
            default: return 0
            }
        }, transfer: { r, a in
            let peer = Lowering.peer(of: a, rank: r, stages: topo.pp).rank
            return cost.pointToPoint(bytes: activationBytes,
                                     link: cost.links.link(for: [topo.rank(tp: 0, dp: 0, pp: r), topo.rank(tp: 0, dp: 0, pp: peer)]))
        })
        let splitSchedule = schedule.kind == .zbH1
        guard !splitSchedule else {
            throw UsageError("projection of zb-h1 needs the split of backward costs into input and weight gradients; project gpipe, 1f1b or interleaved")
        }
        var sim = try Simulator.run(schedule.lowered, virtualStages: plan.virtualStages, microbatches: batch.microBatches,
                                    costs: costs, start: update)
        if ready.contains(where: { !$0.isEmpty }) {
            // A forward waits for each unit's parameters when it reaches the unit; waits move the
            // timeline, so place them again until they settle.
            for _ in 0..<8 {
                var next: [[Action: Double]] = Array(repeating: [:], count: topo.pp)
                for s in 0..<topo.pp {
                    let rank = topo.rank(tp: 0, dp: 0, pp: s)
                    let shard = job.placement(of: rank).shard
                    for chunk in 0..<plan.virtualStages {
                        guard let first = sim.timelines[s].first(where: { $0.action.kind == .forward && $0.action.chunk == chunk }) else { continue }
                        let vs = plan.virtualStage(rank: s, chunk: chunk)
                        var t = first.start, work = 0.0
                        for u in KernelInventory.forwardUnits(config: c, shard: shard, sequences: batch.microBatchSize, layers: plan.layers[vs],
                                                              embedding: vs == 0, head: vs == plan.virtualStageCount - 1, attention: config.attention) {
                            if let r = ready[s][u.unit] { t = max(t, r) }
                            let w = seconds(u.work, rank: rank)
                            t += w; work += w
                        }
                        if t - first.start - work > 0 { next[s][first.action] = t - first.start - work }
                    }
                }
                if next == waits { break }
                waits = next
                sim = try Simulator.run(schedule.lowered, virtualStages: plan.virtualStages, microbatches: batch.microBatches,
                                        costs: costs, start: update)
            }
            for s in 0..<topo.pp { dataComm[s] += waits[s].values.reduce(0, +) }
        }
        let ends = (0..<topo.pp).map { s in sim.timelines[s].last.map(\.end) ?? 0 }
        if config.overlapGradReduce && config.zero < 2 {
            // Each bucket leaves when the last backward of its chunk completes its unit (the
            // trainer's `gradientsReady`), runs on the communication stream, and what is still
            // running when the stage's pipeline work ends is exposed.
            for s in 0..<topo.pp {
                let rank = topo.rank(tp: 0, dp: 0, pp: s)
                let placement = job.placement(of: rank)
                let buckets = placement.layout.gradientBuckets
                var issued: [(time: Double, duration: Double)] = []
                let kind: CostModel.Collective = config.zero == 1 ? .reduceScatter : .allReduce
                for chunk in 0..<plan.virtualStages {
                    guard let last = sim.timelines[s].last(where: { $0.action.kind == .backward && $0.action.chunk == chunk }) else { continue }
                    let vs = plan.virtualStage(rank: s, chunk: chunk)
                    var t = last.start
                    for u in KernelInventory.backwardUnits(config: c, shard: placement.shard, sequences: batch.microBatchSize,
                                                           layers: plan.layers[vs], embedding: vs == 0, head: vs == plan.virtualStageCount - 1,
                                                           recompute: recompute, attention: config.attention) {
                        t += seconds(u.work, rank: rank)
                        guard let b = buckets.first(where: { $0.unit == u.unit }) else { continue }
                        issued += bucketDurations(b, kind, rank: rank).map { (t, $0) }
                    }
                }
                // The stream runs them in the order they were issued (chunks' last backwards interleave).
                var stream = CommunicationStream()
                for op in issued.enumerated().sorted(by: { ($0.element.time, $0.offset) < ($1.element.time, $1.offset) }) {
                    _ = stream.run(issued: op.element.time, duration: op.element.duration)
                }
                let exposed = max(0, stream.free - ends[s])
                reduce[s] += exposed
                dataComm[s] += exposed
            }
        }
        let sync = (0..<topo.pp).map { ends[$0] + reduce[$0] }.max()! + normAllReduce
        // The trainer's step: from the earliest stage's start to the latest stage's end.
        stepTime = sync + update.max()! - update.min()!
        pipelinePhase = sim.phase
        modelParallelCommPerStage = modelComm
        dataParallelCommPerStage = dataComm
        bubblePerStage = sim.bubblePerStage
        tokensPerStep = batch.globalBatch * c.seqLen
        mfu = Double(tokensPerStep) * job.modelFLOPsPerToken / (stepTime * emulator.profile.peakFLOPS * Double(topo.world))
        memory = job.memory
        // Hardware FLOPs of the step over all ranks (what a GPU executes, recomputation included).
        var executed = 0.0
        for s in 0..<topo.pp {
            let rank = topo.rank(tp: 0, dp: 0, pp: s)
            let shard = job.placement(of: rank).shard
            for chunk in 0..<plan.virtualStages {
                let vs = plan.virtualStage(rank: s, chunk: chunk)
                let args = (layers: plan.layers[vs], first: vs == 0, last: vs == plan.virtualStageCount - 1)
                let fw = KernelInventory.forward(config: c, shard: shard, sequences: batch.microBatchSize, layers: args.layers,
                                                 embedding: args.first, head: args.last, attention: config.attention)
                let bw = KernelInventory.backward(config: c, shard: shard, sequences: batch.microBatchSize, layers: args.layers,
                                                  embedding: args.first, head: args.last, recompute: recompute, attention: config.attention)
                let flops = (fw + bw).reduce(0.0) { t, w in if case .kernel(let f, _) = w { return t + f }; return t }
                executed += flops * Double(batch.microBatches) * Double(topo.tp * topo.dp)
            }
        }
        executedFLOPsPerStep = executed
    }
}
