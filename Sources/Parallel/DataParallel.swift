import Comm
import Model
import Tensor

/// Data-parallel gradient reduction (ZeRO-0: all-reduce), ZeRO Stage 1 optimizer-state sharding
/// and Stage 2 gradient sharding (Rajbhandari et al. 2020, "ZeRO", section 5.1: P_os, P_os+g).
///
/// The flat parameter buffer has a dense region (replicated over the data-parallel group)
/// and an expert region (replicated over the expert-data-parallel group), each padded to
/// split evenly. With `--zero 1` each rank reduce-scatters the gradients of a region over
/// its group, keeps fp32 master weights and Adam moments only for its shard, steps only
/// that shard, and all-gathers the updated parameters. With `--zero 0` gradients are
/// all-reduced and every rank steps every parameter.
///
/// With `overlapGradReduce` (`--overlap-grad-reduce`, Megatron-LM's `overlap_grad_reduce`)
/// the gradients travel in buckets, one per `GradientUnit` (the head, each layer, the
/// embedding), each started on the communication stream as soon as the step's last backward
/// of its chunk has completed it, and finished after the backward: the reduction overlaps the
/// rest of the backward. Each bucket's reduce-scatter gives every rank its part of the bucket
/// that falls in its ZeRO-1 shard (MPI_Ireduce_scatter with per-rank counts), so the shards
/// are the same as without overlap. The TP-partial gradients are summed over TP after the
/// data-parallel reduction instead of before (sums commute).
///
/// With `--zero 2` no rank holds the whole gradient. Each unit's gradients are written into a
/// bucket of their own (`gradient(_:)`, the `Parameters`' store) when a backward first
/// touches them, and as soon as that backward has completed the unit (every micro-batch, as
/// DeepSpeed's stage 2 does under gradient accumulation) the bucket is reduce-scattered over
/// the data-parallel group, the rank adds its part to the gradient shard it keeps for the
/// step, and the bucket is freed. The emulated clock places each reduction on the
/// communication stream when the unit is complete and waits for it at the end of that
/// backward (`--overlap-grad-reduce`), or at once (then it is exposed).
///
/// With `--zero 3` (FSDP's full sharding) each rank also holds only its shard of the
/// parameters. Before a unit's forward, and again before its backward, the unit's parameters
/// are all-gathered from the shards into a buffer of their own (`need`), which is freed when
/// the pass moves on to the next unit; with `--overlap-param-gather` the next unit's gather is
/// started on the communication stream as soon as a unit is gathered (FSDP's prefetch), so it
/// overlaps the unit's compute. Gradients are ZeRO-2's; the optimizer steps the shard in place,
/// and nothing is gathered after it.
public final class DataParallel: GradientStore, ParameterStore {
    public let stage: Int
    let layout: ParameterLayout
    let groups: ProcessGroups
    /// The ranges of the flat buffer this rank steps (its shard under ZeRO-1, whole regions under ZeRO-0).
    public let ownedDense: Range<Int>
    public let ownedExpert: Range<Int>
    /// The shard this rank would own under ZeRO-1: used for the gradient norm in either stage,
    /// so that every gradient element is counted once across the data-parallel group.
    let normDense: Range<Int>
    let normExpert: Range<Int>
    /// Offsets of tensors whose gradients are partial per TP rank (summed over TP first).
    let tpPartial: [(offset: Int, count: Int)]
    public let overlapGradReduce: Bool
    /// ZeRO-1's parameter all-gather in the same buckets, started after the optimizer step and
    /// waited for by the next step's forward, unit by unit (Megatron-LM's `overlap_param_gather`).
    public let overlapParamGather: Bool
    /// Parameter gathers on the communication stream, in the order they were started.
    var gathering: [(unit: GradientUnit, op: Communicator.PendingCollective)] = []

    let buckets: [GradientBucket]
    /// A bucket's reduction on the communication stream, and where its result goes.
    struct InFlight { let op: Communicator.PendingCollective; let result: Storage; let destination: Int; let count: Int }
    var inFlight: [InFlight] = []
    var issued: Set<GradientUnit> = []

    /// With `time_as`: this rank's layout in the timed model. Every message and the norm's and
    /// optimizer's kernels are charged at its sizes (the same bucket, region or shard there).
    let timed: ParameterLayout?
    /// The TP-partial elements of the timed layout (`tpPartial`'s count there).
    let timedPartial: Double?

    public init(stage: Int, layout: ParameterLayout, groups: ProcessGroups, overlapGradReduce: Bool = false,
                overlapParamGather: Bool = false, timed: ParameterLayout? = nil) {
        precondition((0...3).contains(stage))
        self.timed = timed
        timedPartial = timed.map { t in Double(t.specs.filter { $0.placement == .replicatedPartialGrad }.reduce(0) { $0 + $1.count }) }
        self.stage = stage
        self.overlapGradReduce = overlapGradReduce
        self.overlapParamGather = overlapParamGather && stage >= 1
        buckets = layout.gradientBuckets
        self.layout = layout
        self.groups = groups
        normDense = Self.shard(layout.denseRegion, parts: groups.zeroDP.size, index: groups.zeroDP.rank)
        normExpert = Self.shard(layout.expertRegion, parts: groups.zeroEDP.size, index: groups.zeroEDP.rank)
        ownedDense = stage >= 1 ? normDense : layout.denseRegion
        ownedExpert = stage >= 1 ? normExpert : layout.expertRegion
        tpPartial = layout.specs.filter { $0.placement == .replicatedPartialGrad }.map { ($0.offset, $0.count) }
        shardGrads = Storage(count: stage >= 2 ? normDense.count + normExpert.count : 0)
        gradientFloats = stage >= 2 ? shardGrads.count : layout.totalCount
        peakGradientFloats = gradientFloats
    }

    // MARK: - ZeRO-3

    /// ZeRO-3: the parameters (their `values` hold this rank's shards), set by `attach`.
    var parameters: Parameters?
    /// ZeRO-3: the units whose parameters are gathered, and the gathers started ahead.
    var gathered: [GradientUnit: Storage] = [:]
    var prefetched: [GradientUnit: (storage: Storage, ops: [Communicator.PendingCollective])] = [:]
    /// ZeRO-3: the units of the pass running now, in the order it reads them.
    var passOrder: [GradientUnit] = []
    /// Parameter elements held now (the whole buffer, or the shards and the gathered units), and the peak so far.
    public private(set) var parameterFloats = 0
    public private(set) var peakParameterFloats = 0
    func holdParameters(_ delta: Int) { parameterFloats += delta; peakParameterFloats = max(peakParameterFloats, parameterFloats) }

    /// The parameters this data-parallel group steps and, under ZeRO-3, reads through `value`.
    public func attach(_ p: Parameters) {
        precondition(stage < 3 || p.heldValues == [normDense, normExpert], "ZeRO-3 parameters must hold this rank's shards")
        parameters = p
        parameterFloats = p.values.count
        peakParameterFloats = parameterFloats
        if stage == 3 { p.valueStore = self }
    }

    /// ZeRO-3: a forward or backward pass begins; it will read `order`'s units in that order.
    public func beginPass(_ order: [GradientUnit]) {
        guard stage == 3 else { return }
        precondition(gathered.isEmpty && prefetched.isEmpty, "a pass began while another's parameters were gathered")
        passOrder = order
    }

    /// ZeRO-3: the pass is about to read `unit`: the units read before it are freed, its
    /// parameters are gathered (or the gather started ahead is waited for), and with
    /// `overlapParamGather` the next unit's gather starts on the communication stream.
    public func need(_ unit: GradientUnit) {
        guard stage == 3 else { return }
        for u in Array(gathered.keys) where u != unit { holdParameters(-gathered.removeValue(forKey: u)!.count) }
        if gathered[unit] == nil {
            if let p = prefetched.removeValue(forKey: unit) {
                Communicator.finish(p.ops, exposedAs: .allGather, detail: "parameters of \(unit)")
                gathered[unit] = p.storage
            } else {
                let (storage, ops) = startGathering(unit)
                Communicator.finish(ops, exposedAs: .allGather, detail: "parameters of \(unit)")
                gathered[unit] = storage
            }
        }
        if overlapParamGather, let i = passOrder.firstIndex(of: unit), i + 1 < passOrder.count {
            let next = passOrder[i + 1]
            if gathered[next] == nil && prefetched[next] == nil { prefetched[next] = startGathering(next) }
        }
    }

    /// ZeRO-3: the pass ended; its gathered parameters are freed.
    public func endPass() {
        guard stage == 3 else { return }
        precondition(prefetched.isEmpty, "a pass ended with a parameter gather still in flight")
        for (_, storage) in gathered { holdParameters(-storage.count) }
        gathered.removeAll()
        passOrder = []
    }

    /// ZeRO-3: a buffer for `unit`'s parameters, this rank's shard of them copied in, and the
    /// in-place all-gathers (dense over the data-parallel group, experts over the
    /// expert-data-parallel one) that fill in the rest, started.
    func startGathering(_ unit: GradientUnit) -> (Storage, [Communicator.PendingCollective]) {
        guard let b = buckets.first(where: { $0.unit == unit }), let p = parameters else { preconditionFailure("no parameters of \(unit)") }
        let storage = Storage(uninitializedCount: b.dense.count + b.expert.count)
        holdParameters(storage.count)
        var ops: [Communicator.PendingCollective] = []
        for (range, region, shard, at, group, part) in [(b.dense, layout.denseRegion, normDense, 0, groups.zeroDP, \GradientBucket.dense),
                                                        (b.expert, layout.expertRegion, normExpert, b.dense.count, groups.zeroEDP, \GradientBucket.expert)]
        where !range.isEmpty {
            let lo = max(range.lowerBound, shard.lowerBound), hi = min(range.upperBound, shard.upperBound)
            if lo < hi { (storage.base + at + (lo - range.lowerBound)).update(from: p.valuePointer(lo), count: hi - lo) }
            guard group.size > 1 else { continue }   // the shard is the region: the bucket is all this rank's
            let counts = Self.shardCounts(range, region: region, parts: group.size)
            ops.append(group.emulating(floats: timedCount(unit, part)) {
                group.startAllGather(storage.base + at, counts: counts, detail: "parameters of \(unit)")
            })
        }
        return (storage, ops)
    }

    /// ZeRO-3: the value of `spec` in its unit's gathered buffer.
    public func value(_ spec: ParamSpec) -> Tensor {
        let unit = GradientUnit.of(parameter: spec.name)
        guard let storage = gathered[unit], let b = buckets.first(where: { $0.unit == unit }) else {
            preconditionFailure("\(spec.name) was read before its unit's parameters were gathered")
        }
        let local = spec.placement == .expert ? b.dense.count + spec.offset - b.expert.lowerBound : spec.offset - b.dense.lowerBound
        return Tensor(view: storage, offset: local, shape: spec.shape)
    }

    /// Every parameter of the rank's layout in one flat buffer: `parameters.values`, or under
    /// ZeRO-3 the shards gathered (for checksums, dumps). Bookkeeping: not charged.
    public func wholeValues() -> Storage {
        guard let p = parameters else { preconditionFailure("no parameters attached") }
        guard stage == 3 else { return p.values }
        return groups.world.untimed { assembledShards { UnsafePointer(p.valuePointer($0)) } }
    }

    /// The rank's dense and expert shards (each from `shardStart`, given the shard's first flat
    /// offset) gathered over their ZeRO groups into one whole flat buffer (collective; the
    /// caller decides how it is charged).
    func assembledShards(_ shardStart: (Int) -> UnsafePointer<Float>) -> Storage {
        let whole = Storage(count: layout.totalCount)
        for (region, shard, group) in [(layout.denseRegion, normDense, groups.zeroDP), (layout.expertRegion, normExpert, groups.zeroEDP)]
        where !region.isEmpty {
            let mine = Storage(count: shard.count)
            if !shard.isEmpty { mine.base.update(from: shardStart(shard.lowerBound), count: shard.count) }
            if group.size > 1 {
                group.allGather(UnsafePointer(mine.base), whole.base + region.lowerBound, countPerRank: shard.count)
            } else {
                (whole.base + region.lowerBound).update(from: mine.base, count: shard.count)
            }
        }
        return whole
    }

    // MARK: - ZeRO-2

    /// ZeRO-2: the reduced gradients of this rank's shards for the step (dense, then expert).
    let shardGrads: Storage
    /// ZeRO-2: the buckets the running backward writes, by unit, until it completes them.
    var open: [GradientUnit: (bucket: GradientBucket, storage: Storage)] = [:]
    /// ZeRO-2: reductions whose transfer is complete, waiting for their place on the emulated stream.
    var reduced: [Communicator.PendingCollective] = []
    /// Gradient elements held now (the whole buffer, or the shards and the open buckets), and the peak so far.
    public private(set) var gradientFloats: Int
    public private(set) var peakGradientFloats: Int
    func hold(_ delta: Int) { gradientFloats += delta; peakGradientFloats = max(peakGradientFloats, gradientFloats) }

    /// The gradient of `spec` in its unit's open bucket (opened, zeroed, on first use).
    public func gradient(_ spec: ParamSpec) -> Tensor {
        precondition(stage >= 2, "only ZeRO-2 and 3 keep gradients per unit")
        let unit = GradientUnit.of(parameter: spec.name)
        let entry: (bucket: GradientBucket, storage: Storage)
        if let e = open[unit] {
            entry = e
        } else {
            guard let b = buckets.first(where: { $0.unit == unit }) else { preconditionFailure("no gradient bucket holds \(spec.name)") }
            entry = (b, Storage(count: b.dense.count + b.expert.count))
            open[unit] = entry
            hold(entry.storage.count)
        }
        let local = spec.placement == .expert ? entry.bucket.dense.count + spec.offset - entry.bucket.expert.lowerBound
                                              : spec.offset - entry.bucket.dense.lowerBound
        return Tensor(view: entry.storage, offset: local, shape: spec.shape)
    }

    /// ZeRO-2: a backward has completed `unit` for its micro-batch. Its bucket is
    /// reduce-scattered (dense over the data-parallel group, experts over the
    /// expert-data-parallel one), this rank's part added to its shard, and the bucket freed.
    public func unitCompleted(_ unit: GradientUnit) {
        guard stage >= 2, let entry = open.removeValue(forKey: unit) else { return }
        let b = entry.bucket
        accumulate(entry.storage.base, b.dense, region: layout.denseRegion, shard: normDense, at: 0, over: groups.zeroDP, replicas: groups.replicaDP,
                   timed: timedCount(unit, \.dense), detail: "gradients of \(unit)")
        accumulate(entry.storage.base + b.dense.count, b.expert, region: layout.expertRegion, shard: normExpert,
                   at: normDense.count, over: groups.zeroEDP, replicas: groups.replicaEDP, timed: timedCount(unit, \.expert), detail: "expert gradients of \(unit)")
        hold(-entry.storage.count)
        if !overlapGradReduce { finishReduced() }
    }

    /// Adds this rank's part of the sum over `group` of `range` (a bucket's part of `region`,
    /// at `send`) to the shard gradients (`shard` of the region starts at `base` there); under
    /// hybrid sharding that part is first all-reduced over the shard's `replicas`.
    func accumulate(_ send: UnsafeMutablePointer<Float>, _ range: Range<Int>, region: Range<Int>, shard: Range<Int>, at base: Int,
                    over group: Communicator, replicas: Communicator?, timed: Double?, detail: String) {
        guard !range.isEmpty else { return }
        let lo = max(range.lowerBound, shard.lowerBound), hi = min(range.upperBound, shard.upperBound)
        let mine = max(0, hi - lo)
        let destination = shardGrads.base + base + (lo - shard.lowerBound)
        var part = UnsafePointer(send + (lo - range.lowerBound))   // with one rank per group the bucket is this rank's part
        var buffers: [Storage] = []   // the memory plan's communication buffers, alive until the part is added
        if group.size > 1 {
            let counts = Self.shardCounts(range, region: region, parts: group.size)
            let result = Storage(count: max(mine, 1))
            buffers.append(result)
            let op = group.emulating(floats: timed) {
                group.startReduceScatter(UnsafePointer(send), result.base, counts: counts, detail: detail)
            }
            Communicator.completeTransfer(op)
            reduced.append(op)
            part = UnsafePointer(result.base)
        }
        // Every replica of this shard holds the same part (`mine` is the same for all of them). Every
        // rank takes part for every bucket, even with nothing of it in its shard, and is charged an
        // even share of the bucket, as FSDP's per-unit shards are even: all ranks keep the same time.
        if let replicas {
            let summed = Storage(count: mine)
            buffers.append(summed)
            // Charged as an even share of the bucket, on every rank alike (`project` costs the same).
            let op = replicas.emulating(floats: (timed ?? Double(range.count)) / Double(group.size)) {
                replicas.startAllReduce(part, summed.base, count: mine, detail: detail + " across replicas")
            }
            Communicator.completeTransfer(op)
            reduced.append(op)
            part = UnsafePointer(summed.base)
        }
        if mine > 0 { Kernels.axpy(mine, 1, part, destination) }
        withExtendedLifetime(buffers) {}
    }

    /// ZeRO-2: the reductions started so far take their place on the emulated stream, and
    /// the compute stream waits for them (the end of a backward, or at once without overlap).
    func finishReduced() {
        guard !reduced.isEmpty else { return }
        Communicator.finish(reduced, exposedAs: .reduceScatter, detail: "gradient buckets")
        reduced.removeAll()
    }

    /// ZeRO-2: a backward action ended; every unit it opened was completed by it.
    public func backwardCompleted() {
        guard stage >= 2 else { return }
        precondition(open.isEmpty, "a backward left the gradients of \(open.keys.map { "\($0)" }.sorted()) unreduced")
        finishReduced()
    }

    /// Where the gradient of flat offset `offset` is once the step's gradients are reduced
    /// (an owned offset under ZeRO-1 and 2).
    public func gradientPointer(_ offset: Int, in grads: Storage) -> UnsafeMutablePointer<Float> {
        guard stage >= 2 else { return grads.base + offset }
        if normDense.contains(offset) { return shardGrads.base + (offset - normDense.lowerBound) }
        precondition(normExpert.contains(offset) || offset == normExpert.upperBound, "offset \(offset) is outside this rank's gradient shards")
        return shardGrads.base + normDense.count + (offset - normExpert.lowerBound)
    }

    /// The storage a fault injection poisons: the whole gradient, or under ZeRO-2 the shard.
    public func poisonTarget(_ grads: Storage) -> Storage { stage >= 2 ? shardGrads : grads }

    /// A new step: the shard gradients start from zero (ZeRO-2).
    public func beginStep() {
        guard stage >= 2 else { return }
        precondition(open.isEmpty && reduced.isEmpty)
        shardGrads.base.update(repeating: 0, count: shardGrads.count)
    }

    /// The gradient unit whose bucket holds `offset` of the flat buffer.
    public func unit(holding offset: Int) -> GradientUnit? {
        buckets.first { $0.dense.contains(offset) || $0.expert.contains(offset) }?.unit
    }

    /// Overlapped reduction: `unit`'s gradients are complete; its bucket starts on the
    /// communication stream (once per step).
    public func gradientsReady(_ unit: GradientUnit, _ grads: Storage) {
        precondition(stage == 0 || groups.replicaDP == nil && groups.replicaEDP == nil,
                     "overlapped ZeRO-1 buckets have no replica all-reduce (refused when planning)")
        guard overlapGradReduce, !issued.contains(unit), let b = buckets.first(where: { $0.unit == unit }) else { return }
        issued.insert(unit)
        start(grads, b, \.dense, region: layout.denseRegion, over: groups.zeroDP)
        start(grads, b, \.expert, region: layout.expertRegion, over: groups.zeroEDP)
    }

    /// The elements of `part` of `unit`'s bucket in the timed model (nil without one).
    func timedCount(_ unit: GradientUnit, _ part: KeyPath<GradientBucket, Range<Int>>) -> Double? {
        timed.map { t in Double(t.gradientBuckets.first { $0.unit == unit }.map { $0[keyPath: part].count } ?? 0) }
    }

    /// The elements of a region (`\.denseRegion` or `\.expertRegion`) in the timed model.
    func timedCount(_ region: KeyPath<ParameterLayout, Range<Int>>) -> Double? {
        timed.map { Double($0[keyPath: region].count) }
    }

    func start(_ grads: Storage, _ b: GradientBucket, _ part: KeyPath<GradientBucket, Range<Int>>, region: Range<Int>, over group: Communicator) {
        let range = b[keyPath: part], unit = b.unit
        guard group.size > 1, !range.isEmpty else { return }
        let send = UnsafePointer(grads.base + range.lowerBound)
        group.emulating(floats: timedCount(unit, part)) {
            if stage == 1 {
                let counts = Self.shardCounts(range, region: region, parts: group.size)
                let mine = Self.shard(region, parts: group.size, index: group.rank)
                let result = Storage(count: max(counts[group.rank], 1))
                let op = group.startReduceScatter(send, result.base, counts: counts, detail: "gradients of \(unit)")
                inFlight.append(InFlight(op: op, result: result, destination: max(range.lowerBound, mine.lowerBound), count: counts[group.rank]))
            } else {
                let result = Storage(count: range.count)
                let op = group.startAllReduce(send, result.base, count: range.count, detail: "gradients of \(unit)")
                inFlight.append(InFlight(op: op, result: result, destination: range.lowerBound, count: range.count))
            }
        }
    }

    /// How many elements of `range` (a bucket of `region`) fall in each rank's ZeRO-1 shard of the region.
    static func shardCounts(_ range: Range<Int>, region: Range<Int>, parts: Int) -> [Int] {
        (0..<parts).map { r in
            let sh = shard(region, parts: parts, index: r)
            return max(0, min(range.upperBound, sh.upperBound) - max(range.lowerBound, sh.lowerBound))
        }
    }

    static func shard(_ region: Range<Int>, parts: Int, index: Int) -> Range<Int> {
        ParameterLayout.zeroShard(region, parts: parts, index: index)
    }

    /// Sums gradients over the groups that share each parameter. Afterwards the owned
    /// ranges hold the gradient of the global batch.
    public func reduceGradients(_ grads: Storage) {
        if stage >= 2 {   // each bucket was reduced as the backward completed it: only the TP-partial sums are left
            precondition(open.isEmpty && reduced.isEmpty)
            sumTensorParallelPartialsOfShards()
            return
        }
        if overlapGradReduce {
            for b in buckets where !issued.contains(b.unit) { gradientsReady(b.unit, grads) }
            Communicator.finish(inFlight.map(\.op), exposedAs: stage == 1 ? .reduceScatter : .allReduce, detail: "gradient buckets")
            for f in inFlight { (grads.base + f.destination).update(from: f.result.base, count: f.count) }
            inFlight.removeAll()
            issued.removeAll()
            sumTensorParallelPartials(grads)
            return
        }
        sumTensorParallelPartials(grads)
        reduce(grads, \.denseRegion, shard: normDense, over: groups.zeroDP)
        reduce(grads, \.expertRegion, shard: normExpert, over: groups.zeroEDP)
    }

    /// Router and replicated-KV gradients are partial on each TP rank: one packed all-reduce.
    public func sumTensorParallelPartials(_ grads: Storage) {
        guard groups.tp.size > 1, !tpPartial.isEmpty else { return }
        var packed = [Float]()
        for p in tpPartial { packed += UnsafeBufferPointer(start: grads.base + p.offset, count: p.count) }
        groups.tp.emulating(floats: timedPartial) { groups.tp.allReduce(&packed) }
        var cursor = 0
        for p in tpPartial {
            packed.withUnsafeBufferPointer { (grads.base + p.offset).update(from: $0.baseAddress! + cursor, count: p.count) }
            cursor += p.count
        }
    }

    /// ZeRO-2: the TP-partial elements of this rank's shards, summed over the TP group (every TP
    /// rank's layout has the same offsets, so the same elements). Charged at the same
    /// elements of the timed layout's shards.
    func sumTensorParallelPartialsOfShards() {
        guard groups.tp.size > 1 else { return }
        var packed = [Float]()
        var places: [(UnsafeMutablePointer<Float>, Int)] = []
        for p in tpPartial {
            for shard in [normDense, normExpert] {
                let lo = max(p.offset, shard.lowerBound), hi = min(p.offset + p.count, shard.upperBound)
                guard lo < hi else { continue }
                let at = gradientPointer(lo, in: shardGrads)
                packed += UnsafeBufferPointer(start: at, count: hi - lo)
                places.append((at, hi - lo))
            }
        }
        guard !packed.isEmpty else { return }
        let timedCount = timed.map { t in
            Double(t.partialGradientCount(within: [Self.shard(t.denseRegion, parts: groups.zeroDP.size, index: groups.zeroDP.rank),
                                                   Self.shard(t.expertRegion, parts: groups.zeroEDP.size, index: groups.zeroEDP.rank)]))
        }
        groups.tp.emulating(floats: timedCount) { groups.tp.allReduce(&packed) }
        var cursor = 0
        for (at, n) in places {
            packed.withUnsafeBufferPointer { at.update(from: $0.baseAddress! + cursor, count: n) }
            cursor += n
        }
    }

    func reduce(_ grads: Storage, _ which: KeyPath<ParameterLayout, Range<Int>>, shard: Range<Int>, over group: Communicator) {
        let region = layout[keyPath: which]
        // Hybrid sharding: the shard is summed over its replicas too (the whole region when each group is one rank).
        let replicas = which == \ParameterLayout.denseRegion ? groups.replicaDP : groups.replicaEDP
        guard group.size > 1 || replicas != nil, !region.isEmpty else { return }
        if stage == 1 {
            let tmp = Storage(count: shard.count)
            if group.size > 1 {
                group.emulating(floats: timedCount(which)) {
                    group.reduceScatter(UnsafePointer(grads.base + region.lowerBound), tmp.base, countPerRank: shard.count)
                }
            } else {
                tmp.base.update(from: grads.base + shard.lowerBound, count: shard.count)
            }
            if let replicas, shard.count > 0 {
                replicas.emulating(floats: timedCount(which).map { $0 / Double(group.size) }) {
                    replicas.allReduce(tmp.base, count: shard.count)
                }
            }
            (grads.base + shard.lowerBound).update(from: tmp.base, count: shard.count)
        } else {
            group.emulating(floats: timedCount(which)) { group.allReduce(grads.base + region.lowerBound, count: region.count) }
        }
    }

    /// Elements of `owned` (`ownedDense` or `ownedExpert`) the optimizer is charged for: the same
    /// shard in the timed model, or these.
    public func chargedCount(owned: Range<Int>) -> Double {
        guard let timed else { return Double(owned.count) }
        let (region, group) = owned == ownedDense ? (timed.denseRegion, groups.zeroDP) : (timed.expertRegion, groups.zeroEDP)
        return Double(stage >= 1 ? Self.shard(region, parts: group.size, index: group.rank).count : region.count)
    }

    /// Elements of the norm's shards (dense and expert) charged: the timed model's, or these.
    var chargedNormCount: Double {
        guard let timed else { return Double(normDense.count + normExpert.count) }
        return Double(Self.shard(timed.denseRegion, parts: groups.zeroDP.size, index: groups.zeroDP.rank).count
                      + Self.shard(timed.expertRegion, parts: groups.zeroEDP.size, index: groups.zeroEDP.rank).count)
    }

    /// Sum of squared gradients of the global model (every element counted once: replicated
    /// tensors only on TP rank 0), all-reduced over the world.
    public func globalSumOfSquares(_ grads: Storage) -> Double {
        var local = 0.0
        let tpRank = groups.coordinates.tp
        // Under hybrid sharding every replica of a shard holds the same gradients: the first counts
        // them, and the others add only what is not finite (a NaN injected on one replica must still
        // make the norm non-finite and skip the step everywhere).
        let countDense = (groups.replicaDP?.rank ?? 0) == 0, countExpert = (groups.replicaEDP?.rank ?? 0) == 0
        for s in layout.specs {
            if tpRank != 0 && (s.placement == .replicated || s.placement == .replicatedPartialGrad) { continue }
            let counted = s.placement == .expert ? countExpert : countDense
            let range = s.placement == .expert ? normExpert : normDense
            let lo = max(s.offset, range.lowerBound), hi = min(s.offset + s.count, range.upperBound)
            guard lo < hi else { continue }
            let sum = Kernels.sumOfSquares(hi - lo, gradientPointer(lo, in: grads))
            if counted || !sum.isFinite { local += sum }
        }
        Kernels.account(flops: 2 * chargedNormCount, elements: chargedNormCount)
        return groups.world.size > 1 ? groups.world.allReduce(local) : local
    }

    /// After the owned shards are stepped: every rank gets the updated parameters (ZeRO-1);
    /// overlapped, the gathers only start here, bucket by bucket in the order the forward
    /// needs them (`parametersNeeded`).
    public func gatherParameters(_ params: Storage) {
        guard stage == 1 || stage == 2 else { return }   // ZeRO-3 keeps its parameters sharded
        if overlapParamGather {
            for b in buckets {
                startGather(params, b, \.dense, region: layout.denseRegion, over: groups.zeroDP)
                startGather(params, b, \.expert, region: layout.expertRegion, over: groups.zeroEDP)
            }
            return
        }
        gather(params, \.denseRegion, shard: normDense, over: groups.zeroDP)
        gather(params, \.expertRegion, shard: normExpert, over: groups.zeroEDP)
    }

    func startGather(_ params: Storage, _ b: GradientBucket, _ part: KeyPath<GradientBucket, Range<Int>>, region: Range<Int>, over group: Communicator) {
        let range = b[keyPath: part]
        guard group.size > 1, !range.isEmpty else { return }
        let counts = Self.shardCounts(range, region: region, parts: group.size)
        let op = group.emulating(floats: timedCount(b.unit, part)) {
            group.startAllGather(params.base + range.lowerBound, counts: counts, detail: "parameters of \(b.unit)")
        }
        gathering.append((b.unit, op))
    }

    /// The forward is about to use `unit`'s parameters: its gathers (and every gather started
    /// before them) are finished; what compute did not hide is exposed.
    public func parametersNeeded(_ unit: GradientUnit) {
        guard let last = gathering.lastIndex(where: { $0.unit == unit }) else { return }
        let done = gathering[...last].map(\.op)
        gathering.removeFirst(last + 1)
        Communicator.finish(done, exposedAs: .allGather, detail: "parameter buckets")
    }

    /// Every parameter gather finished (before anything reads the parameters outside a forward).
    public func finishParameterGather() {
        guard !gathering.isEmpty else { return }
        let done = gathering.map(\.op)
        gathering.removeAll()
        Communicator.finish(done, exposedAs: .allGather, detail: "parameter buckets")
    }

    func gather(_ params: Storage, _ which: KeyPath<ParameterLayout, Range<Int>>, shard: Range<Int>, over group: Communicator) {
        let region = layout[keyPath: which]
        guard group.size > 1, !region.isEmpty else { return }
        let tmp = Storage(count: shard.count)
        tmp.base.update(from: params.base + shard.lowerBound, count: shard.count)
        group.emulating(floats: timedCount(which)) {
            group.allGather(UnsafePointer(tmp.base), params.base + region.lowerBound, countPerRank: shard.count)
        }
    }

    /// A fully reduced copy of the gradients (every region all-reduced, nothing sharded),
    /// for dumps. Bookkeeping: not charged to the emulated clock.
    public func fullyReducedCopy(_ grads: Storage) -> Storage {
        if stage >= 2 { return gatheredShardCopy() }
        let copy = Storage(count: grads.count)
        copy.base.update(from: grads.base, count: grads.count)
        groups.world.untimed {
            sumTensorParallelPartials(copy)
            if groups.dp.size > 1, !layout.denseRegion.isEmpty {
                groups.dp.allReduce(copy.base + layout.denseRegion.lowerBound, count: layout.denseRegion.count)
            }
            if groups.edp.size > 1, !layout.expertRegion.isEmpty {
                groups.edp.allReduce(copy.base + layout.expertRegion.lowerBound, count: layout.expertRegion.count)
            }
        }
        return copy
    }

    /// ZeRO-2's view for dumps: the data-parallel-reduced shards gathered into a whole buffer,
    /// then the TP-partial sums. Bookkeeping: not charged to the emulated clock.
    func gatheredShardCopy() -> Storage {
        groups.world.untimed {
            let copy = assembledShards { UnsafePointer(gradientPointer($0, in: shardGrads)) }
            sumTensorParallelPartials(copy)
            return copy
        }
    }
}
