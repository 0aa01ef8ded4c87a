import Comm
import Model

/// The model's collectives over real MPI: tensor-parallel all-reduces (and sequence
/// parallelism's all-gathers and reduce-scatters) on the TP group,
/// the expert-parallel exchange (all-to-all-v) on the EP group.
public final class MPIModelParallelism: ModelParallelism {
    public let shard: ShardSpec
    let tp: Communicator
    let ep: Communicator

    public init(groups: ProcessGroups, shard: ShardSpec) {
        let c = groups.coordinates
        self.shard = shard
        tp = groups.tp
        ep = groups.ep
        precondition(tp.rank == c.tp && ep.rank == c.ep, "communicator ranks disagree with the topology")
    }

    public func tpAllReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        if tp.size > 1 { tp.allReduce(buffer, count: count, op: .sum) }
    }

    public func tpAllReduceMax(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        if tp.size > 1 { tp.allReduce(buffer, count: count, op: .max) }
    }

    public func tpAllGather(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        if tp.size > 1 { tp.allGather(send, recv, countPerRank: countPerRank) } else { recv.update(from: send, count: countPerRank) }
    }

    public func tpReduceScatter(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        if tp.size > 1 { tp.reduceScatter(send, recv, countPerRank: countPerRank) } else { recv.update(from: send, count: countPerRank) }
    }

    public func epExchangeCounts(_ counts: [Int32], perRank: Int) -> [Int32] {
        ep.size > 1 ? ep.allToAll(counts, countPerRank: perRank) : counts
    }

    public func epExchange(_ rows: [Float], sendRows: [Int], recvRows: [Int]?, width: Int) -> (rows: [Float], recvRows: [Int]) {
        guard ep.size > 1 else { return (rows, sendRows) }
        let incoming = recvRows ?? ep.allToAll(sendRows.map { Int32($0) }, countPerRank: 1).map(Int.init)
        let sendCounts = sendRows.map { $0 * width }, recvCounts = incoming.map { $0 * width }
        var out = [Float](repeating: 0, count: recvCounts.reduce(0, +))
        rows.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { r in
                ep.allToAllV(s.baseAddress ?? UnsafePointer(bitPattern: 8)!, sendCounts: sendCounts, sendDispls: prefixSums(sendCounts),
                             r.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!, recvCounts: recvCounts, recvDispls: prefixSums(recvCounts))
            }
        }
        return (out, incoming)
    }

    func prefixSums(_ a: [Int]) -> [Int] {
        var out = [Int](), acc = 0
        for x in a { out.append(acc); acc += x }
        return out
    }
}
