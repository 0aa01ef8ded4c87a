import Foundation
import XCTest
import Tensor

/// The vectorised elementary functions against libm in extended precision (Float80), over
/// their whole input range: the accuracy `VectorMath` documents.
final class VectorMathTests: XCTestCase {
    /// Evenly spaced points of [lo, hi] (inclusive), with `count` points.
    static func grid(_ lo: Double, _ hi: Double, count: Int) -> [Double] {
        (0..<count).map { lo + (hi - lo) * Double($0) / Double(count - 1) }
    }

    func testDoubleExpWithin2e15RelativeOverItsRange() {
        var worst = 0.0, at = 0.0
        let xs = Self.grid(-700, 700, count: 400_001) + Self.grid(-1, 1, count: 100_001) + [0, -0.0, 1e-300, -1e-300, 700, -700]
        XCTAssertEqual(xs.count % 4, 0)
        var i = 0
        while i + 4 <= xs.count {
            let v = VectorMath.exp(SIMD4<Double>(xs[i], xs[i + 1], xs[i + 2], xs[i + 3]))
            for j in 0..<4 {
                let ref = Foundation.exp(Float80(xs[i + j]))
                let err = Double(abs((Float80(v[j]) - ref) / ref))
                if !(err <= worst) { worst = err; at = xs[i + j] }  // a NaN becomes the worst
            }
            i += 4
        }
        XCTAssertLessThan(worst, 2e-15, "worst relative error \(worst) at x = \(at)")
        // Beyond the range the input is clamped: finite, positive, monotone at the ends.
        let far = VectorMath.exp(SIMD4<Double>(-1e308, -745, 745, 1e308))
        XCTAssertEqual(far[0], Foundation.exp(-700), accuracy: Foundation.exp(-700) * 2e-15)
        XCTAssertEqual(far[3], Foundation.exp(700), accuracy: Foundation.exp(700) * 2e-15)
        XCTAssertTrue(VectorMath.exp(SIMD4<Double>(.nan, 0, 0, 0))[0].isNaN)
    }

    func testFloatExpWithin3e7RelativeOverItsRange() {
        var worst = 0.0, at: Float = 0
        let xs = Self.grid(-87.3, 88.7, count: 800_002).map { Float($0) } + [0, -0.0, 1e-30, -1e-30, 1, -1]
        XCTAssertEqual(xs.count % 8, 0)
        var i = 0
        while i + 8 <= xs.count {
            var x = SIMD8<Float>()
            for j in 0..<8 { x[j] = xs[i + j] }
            let v = VectorMath.exp(x)
            for j in 0..<8 {
                let ref = Foundation.exp(Float80(xs[i + j]))
                let err = Double(abs((Float80(v[j]) - ref) / ref))
                if !(err <= worst) { worst = err; at = xs[i + j] }  // a NaN becomes the worst
            }
            i += 8
        }
        XCTAssertLessThan(worst, 3e-7, "worst relative error \(worst) at x = \(at)")
        let edge = VectorMath.exp(SIMD8<Float>(-.infinity, -1000, -87.31, .nan, 100, .infinity, 88.7, 0))
        XCTAssertEqual(edge[0], 0); XCTAssertEqual(edge[1], 0); XCTAssertEqual(edge[2], 0)
        XCTAssertTrue(edge[3].isNaN)
        XCTAssertTrue(edge[4].isFinite && edge[5].isFinite && edge[4] == edge[6], "above 88.7 the input is clamped")
        XCTAssertEqual(edge[7], 1)
    }

    /// maximum, expShifted and scale compose into every softmax of the model: each probability
    /// within 1e-6 relative of the extended-precision softmax (those above float's smallest
    /// normal number; smaller ones within that number), at every length 1...300 (whole vectors
    /// and tails) and with logits spread over +-40.
    func testSoftmaxWithin1e6RelativePerElement() {
        var key: UInt64 = 7
        var worst = 0.0
        for n in 1...300 {
            for spread in [Float(0.01), 3, 40] {
                var row = (0..<n).map { _ in { key = mix64(key); return Float(unitDouble(key) * 2 - 1) * spread }() }
                let ref: [Float80] = {
                    let m = row.map { Float80($0) }.max()!
                    let e = row.map { Foundation.exp(Float80($0) - m) }
                    let s = e.reduce(0, +)
                    return e.map { $0 / s }
                }()
                let m = row.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: n) }
                XCTAssertEqual(m, row.max()!)
                row.withUnsafeMutableBufferPointer { p in
                    let s = VectorMath.expShifted(p.baseAddress!, count: n, shift: m)
                    VectorMath.scale(p.baseAddress!, count: n, by: Float(1 / s))
                }
                for j in 0..<n {
                    XCTAssertFalse(row[j].isNaN, "n \(n) element \(j)")
                    let err = abs(Float80(row[j]) - ref[j])
                    if ref[j] >= Float80(Float.leastNormalMagnitude) {
                        worst = max(worst, Double(err / ref[j]))
                    } else {
                        XCTAssertLessThanOrEqual(err, Float80(Float.leastNormalMagnitude), "n \(n) element \(j)")
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-6)
        var withNaN: [Float] = [1, 2, .nan, 4, 5, 6, 7, 8, 9]
        XCTAssertTrue(withNaN.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: 9) }.isNaN)
        withNaN[2] = 3
        XCTAssertEqual(withNaN.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: 9) }, 9)
        XCTAssertEqual(withNaN.withUnsafeBufferPointer { VectorMath.maximum($0.baseAddress!, count: 0) }, -.infinity)
    }
}
