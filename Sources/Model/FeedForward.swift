import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// The MLP used by dense FFN layers and by every expert (`FFNKind`):
/// GELU: h = x W_up^T (n, F), a = gelu(h), y = a W_down^T (n, C);
/// SwiGLU: h = x W_up^T, g = x W_gate^T, a = silu(g) * h, y = a W_down^T.
public enum FeedForward {
    public struct Cache {
        var x: Tensor  // (n, C) (under sequence parallelism, gathered again for the backward)
        let h: Tensor  // (n, F) pre-activation (SwiGLU: the up projection)
        let g: Tensor? // (n, F) SwiGLU's gate pre-activation
        let a: Tensor  // (n, F) activation output
        /// Floats this cache holds beyond its input (which belongs to the caller).
        public var floatCount: Int { h.count + a.count + (g?.count ?? 0) }
        /// Element `i` of the activation output a (for tests).
        public func activation(_ i: Int) -> Float { a[i] }
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

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// The elementwise kernel between the projections, for `rows` x `hidden` elements: what
    /// the layers report and `KernelInventory` lists. GELU: one tanh polynomial per element,
    /// h read and a written. SwiGLU: a sigmoid and two products, g and h read, a written.
    public static func activationWork(_ kind: FFNKind, rows: Double, hidden f: Double) -> (flops: Double, elements: Double) {
        kind == .swiglu ? (8 * rows * f, 3 * rows * f) : (12 * rows * f, 2 * rows * f)
    }

    /// Its backward. GELU: da read and scaled in place by gelu'(h), h read. SwiGLU: da, g, h
    /// read; dg and dh written.
    public static func activationBackwardWork(_ kind: FFNKind, rows: Double, hidden f: Double) -> (flops: Double, elements: Double) {
        kind == .swiglu ? (14 * rows * f, 5 * rows * f) : (18 * rows * f, 3 * rows * f)
    }

    /// x (n, C), wUp (F, C), wDown (C, F), and for SwiGLU wGate (F, C) -> y (n, C).
    public static func forward(_ x: Tensor, wUp: Tensor, wDown: Tensor, wGate: Tensor? = nil, y: Tensor) -> Cache {
        let n = x.rows, f = wUp.shape[0]
        let h = Tensor(zeros: [n, f]), a = Tensor(zeros: [n, f])
        Kernels.linearForward(x, wUp, into: h)
        let hp = h.ptr, ap = a.ptr
        var g: Tensor? = nil
        if let wGate {
            let gate = Tensor(zeros: [n, f])
            Kernels.linearForward(x, wGate, into: gate)
            let w = activationWork(.swiglu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            let gp = gate.ptr
            for i in 0..<(n * f) { ap[i] = gp[i] * sigmoid(gp[i]) * hp[i] }
            g = gate
        } else {
            let w = activationWork(.gelu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            for i in 0..<(n * f) { ap[i] = gelu(hp[i]) }
        }
        Kernels.linearForward(a, wDown, into: y)
        return Cache(x: x, h: h, g: g, a: a)
    }

    /// dy (n, C) -> dx (n, C) written (or added with `accumulate`); weight grads accumulated.
    /// SwiGLU: with s = sigmoid(g), da = dy W_down, dg = da * h * s (1 + g (1 - s)),
    /// dh = da * g s, dx = dg W_gate + dh W_up.
    public static func backward(_ cache: Cache, wUp: Tensor, wDown: Tensor, wGate: Tensor? = nil, dy: Tensor,
                                dwUp: Tensor, dwDown: Tensor, dwGate: Tensor? = nil, dx: Tensor, accumulate: Bool) {
        let n = cache.x.rows, f = wUp.shape[0]
        let da = Tensor(zeros: [n, f])
        Kernels.linearBackward(cache.a, wDown, dy, dx: da, dw: dwDown)
        let dp = da.ptr, hp = cache.h.ptr
        if let g = cache.g, let wGate, let dwGate {
            let w = activationBackwardWork(.swiglu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            let dh = Tensor(zeros: [n, f])
            let gp = g.ptr, dhp = dh.ptr
            for i in 0..<(n * f) {
                let s = sigmoid(gp[i]), silu = gp[i] * s
                dhp[i] = dp[i] * silu
                dp[i] *= hp[i] * s * (1 + gp[i] * (1 - s))   // da becomes dg
            }
            Kernels.linearBackward(cache.x, wGate, da, dx: dx, dw: dwGate, accumulateDx: accumulate)
            Kernels.linearBackward(cache.x, wUp, dh, dx: dx, dw: dwUp, accumulateDx: true)
        } else {
            precondition(cache.g == nil, "a SwiGLU cache needs the gate weights and their gradient")
            let w = activationBackwardWork(.gelu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            for i in 0..<(n * f) { dp[i] *= geluGrad(hp[i]) }
            Kernels.linearBackward(cache.x, wUp, da, dx: dx, dw: dwUp, accumulateDx: accumulate)
        }
    }
}
