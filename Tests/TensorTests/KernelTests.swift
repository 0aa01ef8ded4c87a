import XCTest
import Tensor

final class KernelTests: XCTestCase {
    /// The BLAS path against a naive triple loop, for every transpose combination.
    func testGemmMatchesNaive() {
        let m = 5, n = 4, k = 3
        for transA in [false, true] {
            for transB in [false, true] {
                let a = (0..<(m * k)).map { Float($0 % 7) - 3 }
                let b = (0..<(k * n)).map { Float($0 % 5) - 2 }
                var c = [Float](repeating: 1, count: m * n)
                let lda = transA ? m : k, ldb = transB ? k : n
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    Kernels.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 2, a: ap.baseAddress!, lda: lda,
                                 b: bp.baseAddress!, ldb: ldb, beta: 0.5, c: cp.baseAddress!, ldc: n)
                } } }
                for i in 0..<m {
                    for j in 0..<n {
                        var s: Float = 0
                        for p in 0..<k {
                            let av = transA ? a[p * m + i] : a[i * k + p]
                            let bv = transB ? b[j * k + p] : b[p * n + j]
                            s += av * bv
                        }
                        XCTAssertEqual(c[i * n + j], 2 * s + 0.5, accuracy: 1e-4, "transA \(transA) transB \(transB) (\(i),\(j))")
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
