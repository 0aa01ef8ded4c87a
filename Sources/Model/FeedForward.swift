import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// The two-layer GELU MLP used by dense FFN layers and by every expert:
/// h = x W_up^T (n, F), a = gelu(h), y = a W_down^T (n, C).
public enum FeedForward {
    public struct Cache {
        var x: Tensor  // (n, C) (under sequence parallelism, gathered again for the backward)
        let h: Tensor  // (n, F) pre-activation
        let a: Tensor  // (n, F) gelu(h)
        /// Floats this cache holds beyond its input (which belongs to the caller).
        public var floatCount: Int { h.count + a.count }
    }

    static let c0: Float = 0.7978845608028654  // sqrt(2/pi)
    static let c1: Float = 0.044715

    /// GELU, tanh approximation (Hendrycks & Gimpel 2016), as in GPT-2.
    @inline(__always) static func gelu(_ x: Float) -> Float {
        0.5 * x * (1 + tanhf(c0 * (x + c1 * x * x * x)))
    }

    @inline(__always) static func geluGrad(_ x: Float) -> Float {
        let u = c0 * (x + c1 * x * x * x)
        let t = tanhf(u)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c0 * (1 + 3 * c1 * x * x)
    }

    /// x (n, C), wUp (F, C), wDown (C, F) -> y (n, C).
    public static func forward(_ x: Tensor, wUp: Tensor, wDown: Tensor, y: Tensor) -> Cache {
        let n = x.rows, f = wUp.shape[0]
        let h = Tensor(zeros: [n, f]), a = Tensor(zeros: [n, f])
        Kernels.linearForward(x, wUp, into: h)
        let hp = h.ptr, ap = a.ptr
        Kernels.account(flops: Double(12 * n * f), elements: Double(2 * n * f))
        for i in 0..<(n * f) { ap[i] = gelu(hp[i]) }
        Kernels.linearForward(a, wDown, into: y)
        return Cache(x: x, h: h, a: a)
    }

    /// dy (n, C) -> dx (n, C) written (or added with `accumulate`); weight grads accumulated.
    public static func backward(_ cache: Cache, wUp: Tensor, wDown: Tensor, dy: Tensor,
                                dwUp: Tensor, dwDown: Tensor, dx: Tensor, accumulate: Bool) {
        let n = cache.x.rows, f = wUp.shape[0]
        let da = Tensor(zeros: [n, f])
        Kernels.linearBackward(cache.a, wDown, dy, dx: da, dw: dwDown)
        let dp = da.ptr, hp = cache.h.ptr
        Kernels.account(flops: Double(18 * n * f), elements: Double(3 * n * f))
        for i in 0..<(n * f) { dp[i] *= geluGrad(hp[i]) }
        Kernels.linearBackward(cache.x, wUp, da, dx: dx, dw: dwUp, accumulateDx: accumulate)
    }
}
