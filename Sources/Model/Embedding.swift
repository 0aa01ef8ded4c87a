import Tensor

/// Token embedding: x_n = W[token_n]  (W: (V, C)).
public enum Embedding {
    public static func forward(tokens: [Int32], table w: Tensor, y: Tensor) {
        forward(tokens: tokens, table: w, vocab: 0..<w.rows, y: y)
    }

    /// dW[token_n] += dy_n.
    public static func backward(tokens: [Int32], dy: Tensor, dTable: Tensor) {
        backward(tokens: tokens, dy: dy, dTable: dTable, vocab: 0..<dTable.rows)
    }

    /// Vocabulary-parallel lookup: rows of tokens outside this rank's `vocab` are zero;
    /// the caller sums over the tensor-parallel group.
    public static func forward(tokens: [Int32], table w: Tensor, vocab: Range<Int>, y: Tensor) {
        let c = w.cols
        Kernels.account(flops: 0, elements: Double(2 * tokens.count * c))
        y.zero()
        for (n, tok) in tokens.enumerated() where vocab.contains(Int(tok)) {
            (y.ptr + n * c).update(from: w.ptr + (Int(tok) - vocab.lowerBound) * c, count: c)
        }
    }

    /// dW[token_n - start] += dy_n for tokens in this rank's `vocab`.
    public static func backward(tokens: [Int32], dy: Tensor, dTable: Tensor, vocab: Range<Int>) {
        let c = dTable.cols
        Kernels.account(flops: Double(tokens.count * c), elements: Double(3 * tokens.count * c))
        for (n, tok) in tokens.enumerated() where vocab.contains(Int(tok)) {
            Kernels.axpy(c, 1, dy.ptr + n * c, dTable.ptr + (Int(tok) - vocab.lowerBound) * c)
        }
    }
}
