import Emulation
import Model
import Schedule

/// What each rank holds, by purpose, before anything is allocated.
public struct MemoryPlan: Sendable {
    public struct Role: Sendable {
        public let name: String
        public let ranks: [Int]
        public let breakdown: MemoryBreakdown
    }
    public let roles: [Role]

    /// Each rank holds its tensor/expert shard of its pipeline stage's parameters and
    /// gradients (under ZeRO-2 only its shard of the gradients, plus the buckets a backward
    /// holds at once before they are reduced), optimizer state for what it steps (its ZeRO
    /// shard, or everything with --zero 0), the activations of the micro-batches its schedule keeps in flight at once
    /// (from the schedule's simulation), and the buffers of the gradient reduction. Ranks
    /// with equal figures form one role.
    /// Under recomputation (`config.recompute`) a micro-batch keeps what `Transformer.activationFloats`
    /// says for that mode, and full recomputation adds one layer's working set (`transientFloats`).
    public init(config: RunConfig, topology: Topology, plan: BatchPlan, stagePlan: StagePlan, schedule: PipelineSchedule,
                precision: Precision) throws {
        var roles: [Role] = []
        var byCoordinates: [String: MemoryBreakdown] = [:]  // data-parallel replicas hold the same: compute each shard once
        for rank in 0..<topology.world {
            let c = topology.coordinates(of: rank)
            let key = "\(c.tp) \(c.pp) \(c.ep)"
            if let b = byCoordinates[key] {
                if let i = roles.firstIndex(where: { $0.breakdown == b }) {
                    roles[i] = Role(name: roles[i].name, ranks: roles[i].ranks + [rank], breakdown: b)
                }
                continue
            }
            let placement = Placement(rank: rank, topology: topology, stages: stagePlan, model: config.model, zero: config.zero,
                  sequenceParallel: config.sequenceParallel)
            let (shard, layout) = (placement.shard, placement.layout)
            let zero1 = config.zero >= 1
            let denseShard = layout.denseRegion.count / (zero1 ? topology.zeroGroup : 1)
            let expertShard = layout.expertRegion.count / (zero1 ? topology.expertZeroGroup : 1)
            let shards = Placement.zeroShards(layout, topology, c)
            // ZeRO-2: the shards, the buckets open at once, and the largest part of one bucket a
            // reduce-scatter returns to this rank (the result it adds to its shard).
            let zero2 = config.zero >= 2
            let tied = config.model.tieEmbeddings
            let gradients: Int? = zero2 ? denseShard + expertShard + layout.peakUnitGradientFloats(tiedEmbeddings: tied) : nil
            // ZeRO-3: the parameter shards and the units gathered at once: one, or with the
            // prefetch (`--overlap-param-gather`) a unit and the next one a pass reads.
            var parameters: Int? = nil
            if config.zero == 3 {
                let size = Dictionary(uniqueKeysWithValues: layout.gradientBuckets.map { ($0.unit, $0.dense.count + $0.expert.count) })
                var gathered = 0
                for chunk in 0..<stagePlan.virtualStages {
                    let sizes = stagePlan.units(virtualStage: stagePlan.virtualStage(rank: c.pp, chunk: chunk)).map { size[$0] ?? 0 }
                    gathered = max(gathered, sizes.max() ?? 0)
                    if config.overlapParamGather { for (a, b) in zip(sizes, sizes.dropFirst()) { gathered = max(gathered, a + b) } }
                }
                parameters = denseShard + expertShard + gathered
            }
            // Under hybrid sharding the replica all-reduce of that part needs as much again.
            var bucketResult = 0
            if zero2 {
                let replicaBuffer = topology.zeroReplicas > 1 ? 1 : 0
                for b in layout.gradientBuckets {
                    for (range, parts, mine) in [(b.dense, topology.zeroGroup, shards[0]), (b.expert, topology.expertZeroGroup, shards[1])] {
                        let part = max(0, min(range.upperBound, mine.upperBound) - max(range.lowerBound, mine.lowerBound))
                        bucketResult = max(bucketResult, part * ((parts > 1 ? 1 : 0) + replicaBuffer))
                    }
                }
            }
            let partialReduced = zero2 ? layout.partialGradientCount(within: shards) : nil
            let partial = layout.specs.filter { $0.placement == .replicatedPartialGrad }.reduce(0) { $0 + $1.count }
            let inFlight = schedule.uniform.peakInFlight[c.pp]
            // What one micro-batch keeps in one of the rank's chunks, on average over them (each
            // keeps its own input; the first and last also the embedding and head), for every
            // micro-batch in flight; under full recomputation, plus the largest layer's working
            // set while it is recomputed.
            let perChunk = (0..<stagePlan.virtualStages).reduce(0) { total, chunk in
                let vs = stagePlan.virtualStage(rank: c.pp, chunk: chunk)
                let one = shard.holding(layers: Array(stagePlan.layers[vs]), embedding: vs == 0, head: vs == stagePlan.virtualStageCount - 1)
                return total + Transformer.activationFloats(config: config.model, sequences: plan.microBatchSize, shard: one,
                                                            recompute: config.recompute, attention: config.attention)
            } / stagePlan.virtualStages
            let activations = perChunk * max(inFlight, 1)
                + Transformer.transientFloats(config: config.model, sequences: plan.microBatchSize, shard: shard, recompute: config.recompute,
                                              attention: config.attention)
            let b = MemoryBreakdown(precision: precision, parametersHeld: layout.specs.reduce(0) { $0 + $1.count },
                                    parameterElements: parameters, gradientElements: gradients,
                                    optimizerParameters: denseShard + expertShard, activationElements: activations,
                                    // DataParallel's buffers: the ZeRO-1 shard it reduce-scatters into, the packed
                                    // TP-partial gradients, and under ZeRO-0 with overlap the buckets' results;
                                    // under ZeRO-2 one bucket's reduced part and the shards' TP-partial elements.
                                    communicationElements: zero2 ? bucketResult + (partialReduced ?? 0)
                                        : (zero1 ? denseShard + expertShard : 0) + partial
                                        + (!zero1 && config.overlapGradReduce ? layout.denseRegion.count + layout.expertRegion.count : 0))
            byCoordinates[key] = b
            if let i = roles.firstIndex(where: { $0.breakdown == b }) {
                roles[i] = Role(name: roles[i].name, ranks: roles[i].ranks + [rank], breakdown: b)
            } else {
                roles.append(Role(name: "", ranks: [rank], breakdown: b))
            }
        }
        self.roles = roles.map { r in
            let name = r.ranks.count == topology.world ? "every rank" : (r.ranks.count == 1 ? "rank \(r.ranks[0])" : "ranks \(r.ranks.first!)..\(r.ranks.last!) (\(r.ranks.count))")
            return Role(name: name, ranks: r.ranks, breakdown: r.breakdown)
        }
    }

    public func table(device: DeviceProfile, precision: Precision) -> [String] {
        let h = MemoryBreakdown.human
        var lines = ["memory per rank (\(precision == .bf16 ? "bf16 params/grads/activations, fp32 master weights + Adam moments" : "fp32 everything"); \(device.name) holds \(h(device.memoryBytes))):"]
        func row(_ cells: [String]) -> String {
            "  " + cells[0].padding(toLength: 16, withPad: " ", startingAt: 0)
                + cells.dropFirst().map { String(repeating: " ", count: max(0, 12 - $0.count)) + $0 }.joined()
        }
        lines.append(row(["role", "params", "grads", "optimizer", "activations", "comm", "total"]))
        for r in roles {
            let b = r.breakdown
            lines.append(row([r.name, h(b.parameters), h(b.gradients), h(b.optimizerState), h(b.activations),
                              h(b.communication), h(b.total)]))
        }
        return lines
    }

    /// The first role that does not fit, as an error message, or nil.
    public func outOfMemory(device: DeviceProfile) -> String? {
        for r in roles where r.breakdown.total > device.memoryBytes {
            let b = r.breakdown, h = MemoryBreakdown.human
            return "out of memory: rank \(r.ranks.first ?? 0) (\(r.name)) needs \(h(b.total)) (parameters \(h(b.parameters)) + gradients \(h(b.gradients)) + optimizer state \(h(b.optimizerState)) + activations \(h(b.activations)) + communication \(h(b.communication))) but the \(device.name) holds \(h(device.memoryBytes)); shrink the model or spread it over more ranks, or pass --ignore-oom"
        }
        return nil
    }
}
