import Model
import Tensor

/// Records, in order, every kernel a model reports (as its accountant) and every message a
/// `StandInParallelism` is asked to send while the recorder is the accountant in force: the
/// sequence `KernelInventory` lists for a chunk.
public final class WorkRecorder: KernelAccountant {
    public private(set) var work: [KernelInventory.Work] = []
    public init() {}
    /// Each MoE layer's routing as it reported it (`KernelAccountant.routed`), in order.
    public private(set) var routings: [KernelInventory.ExpertRows] = []
    public func kernel(flops: Double, elements: Double) { work.append(.kernel(flops: flops, elements: elements)) }
    public func routed(sent: Int, received: [Int]) {
        routings.append(KernelInventory.ExpertRows(sent: Double(sent), received: received.map(Double.init)))
    }
    func message(_ w: KernelInventory.Work) { work.append(w) }
    public func reset() { work.removeAll(); routings.removeAll() }
    public var context: KernelContext { KernelContext(accountant: self) }
}

/// One rank of a tensor- and expert-parallel group without MPI: a deterministic stand-in for
/// the Parallel module's implementation, for tests that need a sharded model's kernels and
/// messages but not its numbers. Every message is recorded with the size this rank would
/// send (as the real implementation: nothing when its group has one rank), to the
/// `WorkRecorder` installed as the accountant (`Kernels.with`), so messages are scoped
/// exactly as kernels are. The data that comes back assumes the other ranks mirror this one:
/// - a TP all-reduce is the identity (the others' partial sums count as zero); a TP
///   all-gather returns this rank's block in every rank's place, a reduce-scatter this rank's
///   block of its own partial sums;
/// - the EP count exchange reports that every peer sends this rank's experts as many rows
///   as this rank does (a balanced routing makes that true);
/// - an EP row exchange returns, from each peer, the rows this rank sent to that peer when
///   the counts agree (balanced routing), zero rows otherwise.
public final class StandInParallelism: ModelParallelism {
    public let shard: ShardSpec

    public init(shard: ShardSpec) { self.shard = shard }

    var recorder: WorkRecorder? { Kernels.context.accountant as? WorkRecorder }

    public func tpAllReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        if shard.tp > 1 { recorder?.message(.tpAllReduce(floats: Double(count))) }
    }

    public func tpAllReduceMax(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        if shard.tp > 1 { recorder?.message(.tpAllReduceMax(floats: Double(count))) }
    }

    public func tpAllGather(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        if shard.tp > 1 { recorder?.message(.tpAllGather(floats: Double(countPerRank * shard.tp))) }
        for r in 0..<shard.tp { (recv + r * countPerRank).update(from: send, count: countPerRank) }
    }

    public func tpReduceScatter(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        if shard.tp > 1 { recorder?.message(.tpReduceScatter(floats: Double(countPerRank * shard.tp))) }
        recv.update(from: send + shard.tpRank * countPerRank, count: countPerRank)
    }

    public func epExchangeCounts(_ counts: [Int32], perRank: Int) -> [Int32] {
        guard shard.ep > 1 else { return counts }
        recorder?.message(.epCounts(bytes: Double(4 * counts.count)))
        let mine = Array(counts[(shard.epRank * perRank)..<((shard.epRank + 1) * perRank)])
        return (0..<shard.ep).flatMap { _ in mine }
    }

    public func epExchange(_ rows: [Float], sendRows: [Int], recvRows: [Int]?, width: Int) -> (rows: [Float], recvRows: [Int]) {
        guard shard.ep > 1 else { return (rows, sendRows) }
        if recvRows == nil { recorder?.message(.epCounts(bytes: Double(4 * shard.ep))) }
        recorder?.message(.epAllToAll(floats: Double(rows.count)))
        let incoming = recvRows ?? Array(repeating: sendRows[shard.epRank], count: shard.ep)
        var out: [Float] = []
        var sent = 0
        for peer in 0..<shard.ep {
            if sendRows[peer] == incoming[peer] {
                out += rows[(sent * width)..<((sent + sendRows[peer]) * width)]
            } else {
                out += [Float](repeating: 0, count: incoming[peer] * width)
            }
            sent += sendRows[peer]
        }
        return (out, incoming)
    }
}
