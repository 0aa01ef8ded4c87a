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
            var m = -Float.infinity
            for j in 0..<v { m = max(m, row[j]) }
            let target = Int(targets[t])
            let zTarget = row[target]
            var s: Float = 0
            for j in 0..<v { let e = expf(row[j] - m); row[j] = e; s += e }
            total += Double(m) + Double(logf(s)) - Double(zTarget)
            let inv = gradScale / s
            for j in 0..<v { row[j] *= inv }
            row[target] -= gradScale
        }
        return total
    }
}
