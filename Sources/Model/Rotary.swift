import Foundation
import Tensor

/// Rotary position embedding (RoPE, Su et al. 2021) on interleaved pairs: within each head,
/// dims (2i, 2i+1) at position t rotate by angle t * theta^(-2i/D).
public struct Rotary: Sendable {
    public let headDim: Int
    public let seqLen: Int
    private let cosTable: [Float]  // (T, D/2)
    private let sinTable: [Float]

    public init(headDim: Int, seqLen: Int, theta: Double) {
        self.headDim = headDim
        self.seqLen = seqLen
        let half = headDim / 2
        var c = [Float](repeating: 0, count: seqLen * half), s = c
        for t in 0..<seqLen {
            for i in 0..<half {
                let freq = pow(theta, -Double(2 * i) / Double(headDim))
                let a = Double(t) * freq
                c[t * half + i] = Float(cos(a)); s[t * half + i] = Float(sin(a))
            }
        }
        cosTable = c; sinTable = s
    }

    /// Rotates every head of x (N, heads*D) in place; token n sits at position n % T.
    /// `inverse` applies the transpose rotation, which is the backward of the forward.
    public func apply(_ x: Tensor, heads: Int, inverse: Bool = false) {
        let n = x.rows, half = headDim / 2, width = heads * headDim
        precondition(x.cols == width)
        Kernels.account(flops: Double(3 * n * width), elements: Double(2 * n * width + n * headDim))
        let p = x.ptr
        let sign: Float = inverse ? -1 : 1
        cosTable.withUnsafeBufferPointer { cp in
            sinTable.withUnsafeBufferPointer { sp in
                for r in 0..<n {
                    let t = r % seqLen
                    let cr = cp.baseAddress! + t * half, sr = sp.baseAddress! + t * half
                    for h in 0..<heads {
                        let v = p + r * width + h * headDim
                        for i in 0..<half {
                            let a = v[2 * i], b = v[2 * i + 1]
                            let c = cr[i], s = sign * sr[i]
                            v[2 * i] = a * c - b * s
                            v[2 * i + 1] = a * s + b * c
                        }
                    }
                }
            }
        }
    }
}
