import Tensor

/// Token embedding: x_n = W[token_n]  (W: (V, C)).
public enum Embedding {
    public static func forward(tokens: [Int32], table w: Tensor, y: Tensor) {
        let c = w.cols
        Kernels.account(flops: 0, elements: Double(2 * tokens.count * c))
        for (n, tok) in tokens.enumerated() { (y.ptr + n * c).update(from: w.ptr + Int(tok) * c, count: c) }
    }

    /// dW[token_n] += dy_n.
    public static func backward(tokens: [Int32], dy: Tensor, dTable: Tensor) {
        let c = dTable.cols
        Kernels.account(flops: Double(tokens.count * c), elements: Double(3 * tokens.count * c))
        for (n, tok) in tokens.enumerated() { Kernels.axpy(c, 1, dy.ptr + n * c, dTable.ptr + Int(tok) * c) }
    }
}
