import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Softmax cross-entropy over the vocabulary: loss_n = logsumexp(z_n) - z_n[target_n].
public enum CrossEntropy {
    /// logits (N, V) are overwritten by dLoss/dlogits = (softmax - onehot) * gradScale.
    /// Returns the summed loss over the N tokens (in Double).
    public static func forwardBackward(logits: Tensor, targets: [Int32], gradScale: Float) -> Double {
        let n = logits.rows, v = logits.cols
        Kernels.account(flops: Double(6 * n * v), elements: Double(2 * n * v))
        var total = 0.0
        for t in 0..<n {
            let row = logits.ptr + t * v
            let m = VectorMath.maximum(row, count: v)
            let target = Int(targets[t])
            let zTarget = row[target]
            let s = VectorMath.expShifted(row, count: v, shift: m)
            total += Double(m) + log(s) - Double(zTarget)
            VectorMath.scale(row, count: v, by: Float(Double(gradScale) / s))
            row[target] -= gradScale
        }
        return total
    }

    /// Vocabulary-parallel cross-entropy (Megatron): each tensor-parallel rank holds the
    /// logits of its vocabulary rows `vocab`; the row maxima are combined with a max
    /// all-reduce, the sums of exponentials and the target logits with one sum all-reduce,
    /// so no rank ever holds the full-vocabulary logits. `logits` (N, V/tp) are overwritten
    /// by their gradient (scaled by `gradScale`); returns the summed loss, complete on every rank.
    public static func forwardBackward(logits: Tensor, targets: [Int32], vocab: Range<Int>, gradScale: Float,
                                       parallel: ModelParallelism) -> Double {
        if parallel.shard.tp == 1 { return forwardBackward(logits: logits, targets: targets, gradScale: gradScale) }
        let n = logits.rows, v = logits.cols
        Kernels.account(flops: Double(6 * n * v), elements: Double(2 * n * v))
        var maxima = [Float](repeating: -Float.infinity, count: n)
        for t in 0..<n {
            let row = logits.ptr + t * v
            maxima[t] = VectorMath.maximum(row, count: v)
        }
        maxima.withUnsafeMutableBufferPointer { parallel.tpAllReduceMax($0.baseAddress!, count: n) }
        // sums[t] = sum_j exp(z - max) over this rank's vocabulary; sums[n + t] = target logit if held here.
        var sums = [Float](repeating: 0, count: 2 * n)
        for t in 0..<n {
            let row = logits.ptr + t * v
            let target = Int(targets[t])
            if vocab.contains(target) { sums[n + t] = row[target - vocab.lowerBound] }  // before it is exponentiated
            sums[t] = Float(VectorMath.expShifted(row, count: v, shift: maxima[t]))
        }
        sums.withUnsafeMutableBufferPointer { parallel.tpAllReduce($0.baseAddress!, count: 2 * n) }
        var total = 0.0
        for t in 0..<n {
            total += Double(maxima[t]) + Double(logf(sums[t])) - Double(sums[n + t])
            let row = logits.ptr + t * v
            VectorMath.scale(row, count: v, by: gradScale / sums[t])
            let target = Int(targets[t])
            if vocab.contains(target) { row[target - vocab.lowerBound] -= gradScale }
        }
        return total
    }
}
