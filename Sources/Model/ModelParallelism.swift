import Tensor

/// The collectives the model's layers need when they are sharded, as Megatron's f and g
/// operators (Shoeybi et al. 2019, "Megatron-LM", section 3): `tpAllReduce` is g in a
/// forward (summing the partial outputs of a row-parallel layer) and the backward of f
/// (summing the partial input gradients of a column-parallel layer). The model calls these
/// and knows nothing else about ranks; the Parallel module implements them over MPI, and
/// `SingleRank` is the identity.
public protocol ModelParallelism: AnyObject {
    var shard: ShardSpec { get }
    /// Sum over the tensor-parallel group, in place.
    func tpAllReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Maximum over the tensor-parallel group, in place.
    func tpAllReduceMax(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Sequence parallelism's gather (Korthikanti et al.'s g in a forward; the backward of its g-bar):
    /// every TP rank's `countPerRank` floats, rank by rank, into `recv`.
    func tpAllGather(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int)
    /// Sequence parallelism's reduce-scatter (g-bar in a forward; the backward of g): the sum
    /// over the TP group of `countPerRank * tp` floats, of which this rank keeps block `tpRank` in `recv`.
    func tpReduceScatter(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int)
    /// Expert-parallel exchange (all-to-all-v over the EP group): `rows` holds, for each
    /// destination EP rank in order, `sendRows[dest]` rows of `width` floats. Returns the
    /// rows received, source rank by source rank, with their counts. When `recvRows` is
    /// nil the counts are exchanged first; when known (the return trip, the backward) they are not.
    func epExchange(_ rows: [Float], sendRows: [Int], recvRows: [Int]?, width: Int) -> (rows: [Float], recvRows: [Int])
    /// Exchanges one small integer vector per destination (all-to-all of `perRank` ints).
    func epExchangeCounts(_ counts: [Int32], perRank: Int) -> [Int32]
}

extension ModelParallelism {
    public func tpAllReduce(_ t: Tensor) { if shard.tp > 1 { tpAllReduce(t.ptr, count: t.count) } }
}

/// The model on one rank: every collective is the identity.
public final class SingleRank: ModelParallelism {
    public let shard = ShardSpec.single
    public init() {}
    public func tpAllReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func tpAllReduceMax(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func tpAllGather(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        recv.update(from: send, count: countPerRank)
    }
    public func tpReduceScatter(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, countPerRank: Int) {
        recv.update(from: send, count: countPerRank)
    }
    public func epExchange(_ rows: [Float], sendRows: [Int], recvRows: [Int]?, width: Int) -> (rows: [Float], recvRows: [Int]) {
        (rows, sendRows)
    }
    public func epExchangeCounts(_ counts: [Int32], perRank: Int) -> [Int32] { counts }
}
