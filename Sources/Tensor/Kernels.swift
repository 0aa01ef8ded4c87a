import CBLAS
import Foundation

/// Receives the size of every kernel the model runs: the hook the emulated device clock
/// uses to cost compute from the shapes actually executed.
public protocol KernelAccountant: AnyObject {
    /// One kernel: `flops` floating-point operations, `elements` values read or written in HBM.
    func kernel(flops: Double, elements: Double)
    /// An MoE layer has routed its tokens: this rank sends `sent` assignments (the kept ones)
    /// and its local experts receive `received` rows each. Reported before the layer's first
    /// kernel that depends on the routing, in the forward and in the backward.
    func routed(sent: Int, received: [Int])
    /// The kernels from here on are a layer's expert GEMMs, `rows` per local expert (nil: no
    /// longer): a trace marks them, so that an imbalanced step shows who waited for whom.
    func expertSection(rows: [Int]?)
}

extension KernelAccountant {
    public func routed(sent: Int, received: [Int]) {}
    public func expertSection(rows: [Int]?) {}
}

/// Elementwise and BLAS kernels. Every matmul of the model goes through `gemm`, which reports
/// its FLOPs and traffic to the accountant of the installed `KernelContext`; elementwise
/// layers report theirs with `account`. The hooks live in the context (`Kernels.with`),
/// never in a static: kernels hold no process-wide mutable state.
public enum Kernels {
    /// Reports one non-GEMM (or batched) kernel to the accountant.
    @inline(__always)
    public static func account(flops: Double, elements: Double, file: StaticString = #fileID) {
        let slot = KernelContextSlot.current
        slot.context.accountant?.kernel(flops: flops, elements: elements)
        slot.context.profiler?.boundary(file: file)
    }

    /// Reports an MoE layer's routing to the accountant (`KernelAccountant.routed`).
    public static func routed(sent: Int, received: [Int]) {
        KernelContextSlot.current.context.accountant?.routed(sent: sent, received: received)
    }

    /// Marks the start (rows per local expert) or the end (nil) of a layer's expert GEMMs.
    public static func expertSection(rows: [Int]?) {
        KernelContextSlot.current.context.accountant?.expertSection(rows: rows)
    }

    /// C = alpha * op(A) * op(B) + beta * C, row-major, `op` = transpose when the flag is set.
    /// op(A) is m x k, op(B) is k x n, C is m x n; lda/ldb/ldc are row strides.
    @inline(__always)
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, file: StaticString = #fileID) {
        if m == 0 || n == 0 { return }
        let slot = KernelContextSlot.current
        if let p = slot.context.profiler {
            p.boundary(file: "GEMM")
            slot.context.gemmShapes?(GemmShape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, beta: beta))
            defer { p.boundary(file: file) }  // what the caller does next belongs to the caller
            gemmCore(slot.context.accountant, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                     b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        gemmCore(slot.context.accountant, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    @inline(__always)
    static func gemmCore(_ accountant: KernelAccountant?, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                         a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float,
                         c: UnsafeMutablePointer<Float>, ldc: Int) {
        accountant?.kernel(flops: 2 * Double(m) * Double(n) * Double(k),
                           elements: Double(m * k + k * n + (beta == 0 ? 1 : 2) * m * n))
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            else if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y[n, out] (+)= x[n, in] * W[out, in]^T: the forward of a linear layer, PyTorch weight layout.
    public static func linearForward(_ x: Tensor, _ w: Tensor, into y: Tensor, accumulate: Bool = false, file: StaticString = #fileID) {
        let n = x.rows, inDim = x.cols, outDim = w.shape[0]
        precondition(w.cols == inDim && y.rows == n && y.cols == outDim, "linear shape mismatch")
        gemm(transA: false, transB: true, m: n, n: outDim, k: inDim, a: x.ptr, lda: inDim,
             b: w.ptr, ldb: inDim, beta: accumulate ? 1 : 0, c: y.ptr, ldc: outDim, file: file)
    }

    /// dx[n, in] (+)= dy[n, out] * W[out, in]; dW[out, in] += dy^T * x. The weight gradient
    /// is queued instead when the context defers weight gradients (zero-bubble I/W split);
    /// it is then costed by the context in force when the queue runs.
    public static func linearBackward(_ x: Tensor, _ w: Tensor, _ dy: Tensor,
                                      dx: Tensor?, dw: Tensor, accumulateDx: Bool = false, file: StaticString = #fileID) {
        let n = x.rows, inDim = x.cols, outDim = w.shape[0]
        precondition(dy.rows == n && dy.cols == outDim && dw.count == w.count, "linear backward shape mismatch")
        if let dx {
            gemm(transA: false, transB: false, m: n, n: inDim, k: outDim, a: dy.ptr, lda: outDim,
                 b: w.ptr, ldb: inDim, beta: accumulateDx ? 1 : 0, c: dx.ptr, ldc: inDim, file: file)
        }
        let weightGrad = {
            gemm(transA: true, transB: false, m: outDim, n: inDim, k: n, a: dy.ptr, lda: outDim,
                 b: x.ptr, ldb: inDim, beta: 1, c: dw.ptr, ldc: inDim, file: file)
        }
        if let queue = KernelContextSlot.current.context.deferredWeightGrads { queue.append(weightGrad, floats: x.count + dy.count) } else { weightGrad() }
    }

    /// y += a * x
    @inline(__always)
    public static func axpy(_ n: Int, _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        for i in 0..<n { y[i] += a * x[i] }
    }

    @inline(__always)
    public static func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
        var s: Float = 0
        for i in 0..<n { s += x[i] * y[i] }
        return s
    }

    /// Sum of squares accumulated in Double (used for gradient norms): eight lanes, each
    /// summing every eighth element, then the lanes and the tail.
    public static func sumOfSquares(_ n: Int, _ x: UnsafePointer<Float>) -> Double {
        var lo = SIMD4<Double>(), hi = SIMD4<Double>(), i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let a = SIMD4<Double>(v.lowHalf), b = SIMD4<Double>(v.highHalf)
            lo += a * a
            hi += b * b
            i += 8
        }
        var s = (lo + hi).sum()
        while i < n { let v = Double(x[i]); s += v * v; i += 1 }
        return s
    }

    /// A bare `cblas_sgemm` call of `shape`, bypassing every hook: the benchmarks' reference.
    public static func bareSgemm(_ s: GemmShape, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, s.transA ? CblasTrans : CblasNoTrans, s.transB ? CblasTrans : CblasNoTrans,
                    Int32(s.m), Int32(s.n), Int32(s.k), 1, a, Int32(s.lda), b, Int32(s.ldb), s.beta, c, Int32(s.ldc))
    }

    /// The number of threads OpenBLAS will use in this process.
    public static var blasThreads: Int { Int(openblas_get_num_threads()) }
    public static func setBlasThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

    /// Writes OpenBLAS's work buffer once with a 512^3 product (about 7 ms, under 1 MiB of the
    /// buffer), unless `MOE_TRAIN_BLAS_WARMUP=0`. Until a product that large has run, the
    /// library's sgemm kernel on this Zen CPU ran the model's shapes 2.5-4x slower (128 x 256 x
    /// 128: 14.5 against 41.2 GFLOP/s): `perf annotate` puts three quarters of its time on the
    /// instruction after its `prefetcht1` of the memory ahead of the packed panels, memory of
    /// the buffer that no smaller product had written. Returns whether it ran.
    @discardableResult
    public static func touchBlasWorkBuffer() -> Bool {
        if ProcessInfo.processInfo.environment["MOE_TRAIN_BLAS_WARMUP"] == "0" { return false }
        let n = 512
        let a = [Float](repeating: 0, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        a.withUnsafeBufferPointer { p in
            c.withUnsafeMutableBufferPointer { q in
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1,
                            p.baseAddress, Int32(n), p.baseAddress, Int32(n), 0, q.baseAddress, Int32(n))
            }
        }
        return true
    }
}

/// Weight-gradient GEMMs set aside by a zero-bubble backward (I), run later (W). Each
/// holds its input and output-gradient tensors alive until it runs.
public final class WeightGradQueue {
    var work: [() -> Void] = []
    /// Floats the queued GEMMs keep alive (for the activation-memory count).
    public private(set) var floats = 0
    public init() {}
    public var isEmpty: Bool { work.isEmpty }
    func append(_ f: @escaping () -> Void, floats n: Int) { work.append(f); floats += n }
    /// Runs every queued GEMM in order and empties the queue.
    public func run() {
        for f in work { f() }
        work.removeAll()
        floats = 0
    }
}

/// A GEMM as the model ran it (row-major, `op(A)` m x k, `op(B)` k x n).
public struct GemmShape: Hashable, Sendable, CustomStringConvertible {
    public let transA: Bool, transB: Bool
    public let m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
    public let beta: Float
    public init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int, beta: Float) {
        self.transA = transA; self.transB = transB; self.m = m; self.n = n; self.k = k
        self.lda = lda; self.ldb = ldb; self.ldc = ldc; self.beta = beta
    }
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    public var description: String { "\(m)x\(n)x\(k)\(transA ? " A^T" : "")\(transB ? " B^T" : "")\(beta != 0 ? " +C" : "")" }
}

/// Hears every kernel boundary (the start of a kernel, and the return from a GEMM to the
/// code that called it) with the source file of the code that runs next: benchmarks
/// attribute CPU time to categories with it.
public protocol KernelProfiler: AnyObject {
    func boundary(file: StaticString)
}
