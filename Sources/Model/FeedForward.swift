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

    /// GELU, tanh approximation (Hendrycks & Gimpel 2016), as in GPT-2:
    /// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
    /// Evaluated as x * sigmoid(2u) = x / (1 + e^(-2u)), the same function without the
    /// cancellation of 1 + tanh(u) for negative x, in double precision four lanes at a time
    /// (`VectorMath.exp`), then rounded once to float: within 1e-6 relative of the exact
    /// function wherever the result is a normal float (`GELUAccuracyTests`).
    public static func gelu(_ h: UnsafePointer<Float>, into a: UnsafeMutablePointer<Float>, count n: Int) {
        elementwise4(n, h, a, reads: false) { x, _ in x / (1 + VectorMath.exp(-2 * c0 * (x + c1 * x * x * x))) }
    }

    /// a[i] = gelu'(h[i]) * a[i] (the backward's da scaled in place). With s = sigmoid(2u):
    /// 1 + tanh(u) = 2s and 1 - tanh(u)^2 = 4 s (1 - s), so
    /// gelu'(x) = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2), 1 - s = e^(-2u) s.
    public static func geluBackward(_ h: UnsafePointer<Float>, scaling da: UnsafeMutablePointer<Float>, count n: Int) {
        elementwise4(n, h, da, reads: true) { x, d in
            let e = VectorMath.exp(-2 * c0 * (x + c1 * x * x * x))
            let s = 1 / (1 + e)
            return d * (s + 2 * x * s * (e * s) * c0 * (1 + 3 * c1 * x * x))
        }
    }

    static let c0: Double = 0.7978845608028654  // sqrt(2/pi)
    static let c1: Double = 0.044715

    /// out[i] = f(x[i], out[i]) in double, four lanes at a time (`reads` false: out is only
    /// written, f gets zeros); the last partial vector is padded with zeros (its extra lanes
    /// are computed and dropped).
    @inline(__always)
    static func elementwise4(_ n: Int, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, reads: Bool,
                             _ f: (SIMD4<Double>, SIMD4<Double>) -> SIMD4<Double>) {
        var i = 0
        while i + 4 <= n {
            let xv = SIMD4<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Float>.self))
            let ov = reads ? SIMD4<Double>(UnsafeRawPointer(out + i).loadUnaligned(as: SIMD4<Float>.self)) : SIMD4<Double>()
            UnsafeMutableRawPointer(out + i).storeBytes(of: SIMD4<Float>(f(xv, ov)), as: SIMD4<Float>.self)
            i += 4
        }
        if i < n {
            var xv = SIMD4<Double>(), ov = SIMD4<Double>()
            for j in 0..<(n - i) { xv[j] = Double(x[i + j]); if reads { ov[j] = Double(out[i + j]) } }
            let r = f(xv, ov)
            for j in 0..<(n - i) { out[i + j] = Float(r[j]) }
        }
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
        // Written whole before they are read (the projections with beta 0, the activation).
        let h = Tensor(uninitialized: [n, f]), a = Tensor(uninitialized: [n, f])
        Kernels.linearForward(x, wUp, into: h)
        let hp = h.ptr, ap = a.ptr
        var g: Tensor? = nil
        if let wGate {
            let gate = Tensor(uninitialized: [n, f])
            Kernels.linearForward(x, wGate, into: gate)
            let w = activationWork(.swiglu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            let gp = gate.ptr
            for i in 0..<(n * f) { ap[i] = gp[i] * sigmoid(gp[i]) * hp[i] }
            g = gate
        } else {
            let w = activationWork(.gelu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            gelu(hp, into: ap, count: n * f)
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
        let da = Tensor(uninitialized: [n, f])  // written whole (beta 0)
        Kernels.linearBackward(cache.a, wDown, dy, dx: da, dw: dwDown)
        let dp = da.ptr, hp = cache.h.ptr
        if let g = cache.g, let wGate, let dwGate {
            let w = activationBackwardWork(.swiglu, rows: Double(n), hidden: Double(f))
            Kernels.account(flops: w.flops, elements: w.elements)
            let dh = Tensor(uninitialized: [n, f])
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
            geluBackward(hp, scaling: dp, count: n * f)
            Kernels.linearBackward(cache.x, wUp, da, dx: dx, dw: dwUp, accumulateDx: accumulate)
        }
    }
}
