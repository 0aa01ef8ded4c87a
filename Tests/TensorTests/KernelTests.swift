import XCTest
import Tensor

final class KernelTests: XCTestCase {
    /// The BLAS path against a naive triple loop, for every transpose combination, from one
    /// row of C up, with row strides wider than the rows, and beta 0 (C holding NaN: it must be
    /// overwritten, as outputs made with `Tensor(uninitialized:)` rely on), 0.5 and 1.
    func testGemmMatchesNaive() {
        let n = 4, k = 3
        for m in [1, 2, 3, 5] {
            for transA in [false, true] {
                for transB in [false, true] {
                    for beta: Float in [0, 0.5, 1] {
                        let lda = (transA ? m : k) + 2, ldb = (transB ? k : n) + 1, ldc = n + 3
                        let a = (0..<((transA ? k : m) * lda)).map { Float($0 % 7) - 3 }
                        let b = (0..<((transB ? n : k) * ldb)).map { Float($0 % 5) - 2 }
                        let c0: Float = beta == 0 ? .nan : 1
                        var c = [Float](repeating: c0, count: m * ldc)
                        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                            Kernels.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 2, a: ap.baseAddress!, lda: lda,
                                         b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
                        } } }
                        for i in 0..<m {
                            for j in 0..<n {
                                var s: Float = 0
                                for p in 0..<k {
                                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                                    s += av * bv
                                }
                                let want = 2 * s + (beta == 0 ? 0 : beta * c0)
                                XCTAssertEqual(c[i * ldc + j], want, accuracy: 1e-4,
                                               "m \(m) transA \(transA) transB \(transB) beta \(beta) (\(i),\(j))")
                            }
                            for j in n..<ldc { XCTAssertEqual(c[i * ldc + j].bitPattern, c0.bitPattern, "past the row: untouched") }
                        }
                    }
                }
            }
        }
    }

    func testNormalDrawsAreStandardAndDeterministic() {
        let key = hashKey(1, stableHash("w"))
        let xs = (0..<20000).map { normalAt(key, UInt64($0)) }
        let mean = xs.reduce(0, +) / Float(xs.count)
        let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(xs.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
        XCTAssertEqual(normalAt(key, 17), xs[17])
        XCTAssertNotEqual(normalAt(hashKey(2, stableHash("w")), 17), xs[17])
    }

    func testSingleBLASThreadCanBeForced() {
        Kernels.setBlasThreads(1)
        XCTAssertEqual(Kernels.blasThreads, 1)
    }
}
