import Comm
import Emulation
import Model
import Plan
import Tensor

/// A run timed as another model (`time_as`): the layers run at the executed dimensions and
/// report their kernels and messages as always; this accountant charges the emulated clock
/// for the same kernel or message of the timed model instead.
///
/// The pairing is exact, not estimated. `KernelInventoryTests` prove that a chunk's forward
/// and backward run exactly the inventory's list of kernels and messages, in order, for any
/// routing; so during each pipeline action this accountant walks two lists built from the
/// same routing, the executed model's (which every reported kernel and message must match:
/// a mismatch stops the run) and the timed model's, entry by entry, and charges the second.
/// The routing is the real one: each MoE layer reports what it routed (`routed`) before its
/// first kernel that depends on it, and the timed model's expert rows are those counts times
/// the ratio of tokens per micro-batch, so real imbalance and drops carry over.
///
/// Outside the actions (gradient reduction, norm, optimizer) the callers charge the timed
/// sizes themselves (`DataParallel`'s timed layout); pipeline messages scale with the
/// activation they carry.
public final class TimedAs: KernelAccountant {
    typealias Work = KernelInventory.Work
    let clock: DeviceClock
    struct Model { let config: ModelConfig; let shard: ShardSpec; let sequences: Int }
    let executed: Model
    let timed: Model
    let attention: AttentionKernel
    let recompute: Recompute
    let floatBytes: Double
    /// Tokens per micro-batch of the timed model over the executed one's: expert rows scale by it.
    public let rowScale: Double
    /// Elements of the activation a pipeline stage sends, timed over executed.
    let activationScale: Double

    /// The action under way: both lists and how far the layers have got.
    struct Action {
        let slot: Slot
        let name: String
        let forward: Bool
        let layers: Range<Int>
        let embedding: Bool
        let head: Bool
        var routing: [Int: KernelInventory.ExpertRows]
        /// MoE layers of a forward whose routing is still to come, in order.
        var pending: [Int]
        var executedList: [Work] = []
        var timedList: [Work] = []
        var cursor = 0
    }
    struct Slot: Hashable { let chunk: Int; let microbatch: Int }
    var action: Action?
    /// Each forward's routing, kept for its backward.
    var routings: [Slot: [Int: KernelInventory.ExpertRows]] = [:]

    public init(job: JobPlan, rank: Int, clock: DeviceClock) {
        let t = job.timing
        precondition(job.timed != nil, "TimedAs needs a plan with time_as")
        self.clock = clock
        let es = job.placement(of: rank).shard, ts = t.placement(of: rank).shard
        executed = Model(config: job.model, shard: es, sequences: job.batch.microBatchSize)
        timed = Model(config: t.model, shard: ts, sequences: t.batch.microBatchSize)
        attention = job.config.attention
        recompute = job.config.recompute
        floatBytes = job.emulator.precision.elementBytes
        rowScale = Double(t.batch.microBatchSize * t.model.seqLen) / Double(job.batch.microBatchSize * job.model.seqLen)
        activationScale = Double(ts.residualRows(tokens: t.batch.microBatchSize * t.model.seqLen) * t.model.dModel)
            / Double(es.residualRows(tokens: job.batch.microBatchSize * job.model.seqLen) * job.model.dModel)
    }

    // MARK: - Actions

    /// A forward of `layers` (a chunk) on micro-batch `microbatch` begins.
    public func beginForward(chunk: Int, microbatch: Int, layers: Range<Int>, embedding: Bool, head: Bool, name: String) {
        var a = Action(slot: Slot(chunk: chunk, microbatch: microbatch), name: name, forward: true, layers: layers,
                       embedding: embedding, head: head, routing: [:], pending: layers.filter { executed.config.isMoE(layer: $0) })
        build(&a)
        action = a
    }

    /// The backward of the same chunk and micro-batch begins: the forward's routing is known.
    public func beginBackward(chunk: Int, microbatch: Int, layers: Range<Int>, embedding: Bool, head: Bool, name: String) {
        let slot = Slot(chunk: chunk, microbatch: microbatch)
        var a = Action(slot: slot, name: name, forward: false, layers: layers, embedding: embedding, head: head,
                       routing: routings.removeValue(forKey: slot) ?? [:], pending: [])
        build(&a)
        action = a
    }

    /// The action is over: every listed kernel and message must have run.
    public func end() {
        guard let a = action else { return }
        precondition(a.cursor == a.executedList.count,
                     "time_as: \(a.name) ran \(a.cursor) of the \(a.executedList.count) kernels and messages its inventory lists")
        if a.forward { routings[a.slot] = a.routing }
        action = nil
    }

    func build(_ a: inout Action) {
        let scaled = a.routing.mapValues { $0.scaled(by: rowScale) }
        func list(_ m: Model, _ routing: [Int: KernelInventory.ExpertRows]) -> [Work] {
            a.forward
                ? KernelInventory.forward(config: m.config, shard: m.shard, sequences: m.sequences, layers: a.layers,
                                          embedding: a.embedding, head: a.head, attention: attention, routing: routing)
                : KernelInventory.backward(config: m.config, shard: m.shard, sequences: m.sequences, layers: a.layers,
                                           embedding: a.embedding, head: a.head, recompute: recompute, attention: attention,
                                           routing: routing)
        }
        a.executedList = list(executed, a.routing)
        a.timedList = list(timed, scaled)
        precondition(a.executedList.count == a.timedList.count, "time_as: the timed model's inventory differs in structure")
    }

    /// The next pair of entries; the executed one must be `matches`.
    func next(_ what: String, _ matches: (Work) -> Bool) -> Work {
        guard var a = action else { preconditionFailure("time_as: \(what) outside an action") }
        precondition(a.cursor < a.executedList.count, "time_as: \(a.name) ran more than the \(a.executedList.count) kernels and messages its inventory lists (\(what))")
        let e = a.executedList[a.cursor]
        precondition(matches(e), "time_as: \(a.name), entry \(a.cursor): the layers ran \(what), the inventory lists \(e)")
        let t = a.timedList[a.cursor]
        a.cursor += 1
        action = a
        return t
    }

    static func close(_ x: Double, _ y: Double) -> Bool { abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1) }

    // MARK: - KernelAccountant

    public func kernel(flops: Double, elements: Double) {
        guard action != nil else { clock.kernel(flops: flops, elements: elements); return }
        let t = next("a kernel of \(flops) FLOPs, \(elements) elements") {
            if case .kernel(let f, let e) = $0 { return Self.close(f, flops) && Self.close(e, elements) }
            return false
        }
        guard case .kernel(let f, let e) = t else { preconditionFailure("time_as: the timed model's inventory differs in structure") }
        clock.kernel(flops: f, elements: e)
    }

    public func routed(sent: Int, received: [Int]) {
        guard var a = action, a.forward, !a.pending.isEmpty else { return }   // a backward (or its recomputation) knows it
        a.routing[a.pending.removeFirst()] = KernelInventory.ExpertRows(sent: Double(sent), received: received.map(Double.init))
        build(&a)   // the entries so far do not depend on this layer's routing: the cursor stays valid
        action = a
    }

    public func expertSection(rows: [Int]?) {
        clock.expertSection(rows: rows.map { $0.map { Double($0) * rowScale } })
    }

    // MARK: - Messages

    /// The emulated bytes of a message in the timed model (`Communicator.setSizer`).
    public func size(_ kind: CommKind, group: String, bytes: Double) -> Double {
        switch group {
        case "tp", "ep":
            let t = next("a \(kind.rawValue) of \(Int(bytes)) B on \(group)") { e in
                switch (e, kind, group) {
                case (.tpAllReduce(let n), .allReduce, "tp"), (.tpAllReduceMax(let n), .allReduce, "tp"),
                     (.tpAllGather(let n), .allGather, "tp"), (.tpReduceScatter(let n), .reduceScatter, "tp"),
                     (.epAllToAll(let n), .allToAll, "ep"):
                    return Self.close(n * floatBytes, bytes)
                case (.epCounts(let b), .allToAll, "ep"): return Self.close(b, bytes)
                default: return false
                }
            }
            switch t {
            case .tpAllReduce(let n), .tpAllReduceMax(let n), .tpAllGather(let n), .tpReduceScatter(let n), .epAllToAll(let n):
                return n * floatBytes
            case .epCounts(let b): return b
            case .kernel: preconditionFailure("time_as: the timed model's inventory differs in structure")
            }
        case "pp":
            return bytes * activationScale
        default:
            // The data-parallel messages are sized by `DataParallel` (`Communicator.emulating`);
            // what is left is scalars (the gradient norm), the same in any model.
            precondition(bytes <= 64, "time_as: a \(kind.rawValue) of \(Int(bytes)) B on \(group) has no size in the timed model")
            return bytes
        }
    }
}
