import Foundation
import XCTest
import Model

/// GELU and its derivative, as the DocC article documents them (the tanh approximation),
/// against an extended-precision (Float80) reference over the whole float range: within 1e-6
/// relative per element wherever the exact value is a normal float, and within float's
/// smallest normal number where it is not (far left tail, where GELU underflows).
final class GELUAccuracyTests: XCTestCase {
    static let c0 = Float80(2 / Double.pi).squareRoot(), c1: Float80 = 0.044715

    /// gelu(x) = 0.5 x (1 + tanh(u)), written as x / (1 + e^(-2u)) so that the reference does not
    /// cancel for negative x either; where the tanh form is well conditioned the two agree.
    static func reference(_ x: Float) -> (value: Float80, grad: Float80) {
        let x = Float80(x), u = c0 * (x + c1 * x * x * x)
        let e = Foundation.exp(-2 * u), s = 1 / (1 + e)
        let oneMinusS = e.isInfinite ? 1 : e * s  // far left, e^(-2u) overflows even Float80
        let grad = s + 2 * x * s * oneMinusS * c0 * (1 + 3 * c1 * x * x)
        if x > -3 {  // the documented tanh forms, where 1 + tanh(u) does not cancel
            let t = Foundation.tanh(u)
            let tanhValue = 0.5 * x * (1 + t)
            let tanhGrad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c0 * (1 + 3 * c1 * x * x)
            precondition(abs(tanhValue - x * s) <= 1e-15 * abs(tanhValue) + 1e-300, "reference forms disagree at \(x)")
            precondition(abs(tanhGrad - grad) <= 1e-12 * abs(tanhGrad) + 1e-15, "reference gradients disagree at \(x)")
        }
        return (x * s, grad)
    }

    /// Inputs: every 2^12-th float of [-40, 40] by bit pattern (about 500,000), every float
    /// near the derivative's zero (x about -0.7525, where its relative accuracy is hardest),
    /// and the extremes.
    static func inputs() -> [Float] {
        var xs: [Float] = []
        var b = Float(1e-38).bitPattern
        while Float(bitPattern: b) < 40 { xs.append(Float(bitPattern: b)); xs.append(-Float(bitPattern: b)); b += 1 << 12 }
        var x: Float = -0.7535
        while x < -0.7500 { xs.append(x); x = x.nextUp }
        xs += [0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, 1e30, -1e30, 100, -100, 1000, -1000,
               .greatestFiniteMagnitude, -.greatestFiniteMagnitude]
        if xs.count % 4 == 0 { xs.append(-3.25) }  // so that the whole pass ends in a partial vector too
        return xs
    }

    func check(_ name: String, _ got: [Float], _ want: [Float80], _ xs: [Float]) {
        var worst = 0.0, at: Float = 0, fails = 0
        XCTAssertEqual(got.filter(\.isNaN).count, 0, "\(name): NaN outputs")
        XCTAssertEqual(want.filter(\.isNaN).count, 0, "\(name): NaN in the reference")
        for i in xs.indices {
            let err = abs(Float80(got[i]) - want[i])
            let tiny = Float80(Float.leastNormalMagnitude)
            if abs(want[i]) >= tiny {
                let rel = Double(err / abs(want[i]))
                if rel > worst { worst = rel; at = xs[i] }
            } else if err > tiny {
                fails += 1
                if fails < 5 { XCTFail("\(name)(\(xs[i])) = \(got[i]), exact \(want[i])") }
            }
        }
        XCTAssertLessThan(worst, 1e-6, "\(name): worst relative error \(worst) at x = \(at)")
        XCTAssertEqual(fails, 0, "\(name): \(fails) inputs off by more than the smallest normal float")
    }

    func testForwardWithin1e6RelativeOfTheDocumentedFunction() {
        let xs = Self.inputs()
        let want = xs.map { Self.reference($0).value }
        // The whole set (its length is not a multiple of 4), then odd offsets and lengths into
        // fresh NaN-filled outputs: the kernel's vector loop and its tail, each checked.
        for (lo, hi) in [(0, xs.count), (1, 8), (3, 4), (5, 10), (7, 8)] {
            var a = [Float](repeating: .nan, count: hi - lo)
            xs.withUnsafeBufferPointer { x in a.withUnsafeMutableBufferPointer { o in
                FeedForward.gelu(x.baseAddress! + lo, into: o.baseAddress!, count: hi - lo)
            } }
            check("gelu[\(lo)..<\(hi)]", a, Array(want[lo..<hi]), Array(xs[lo..<hi]))
        }
        var a = [Float](repeating: .nan, count: xs.count)
        xs.withUnsafeBufferPointer { x in a.withUnsafeMutableBufferPointer { o in
            FeedForward.gelu(x.baseAddress!, into: o.baseAddress!, count: xs.count)
        } }
        XCTAssertEqual(a[xs.firstIndex(of: .greatestFiniteMagnitude)!], .greatestFiniteMagnitude)
    }

    func testBackwardWithin1e6RelativeOfTheDocumentedDerivative() {
        let xs = Self.inputs()
        var d = [Float](repeating: 1, count: xs.count)
        xs.withUnsafeBufferPointer { x in d.withUnsafeMutableBufferPointer { o in
            FeedForward.geluBackward(x.baseAddress!, scaling: o.baseAddress!, count: xs.count)
        } }
        check("gelu'", d, xs.map { Self.reference($0).grad }, xs)
        // It scales what is there: gelu'(x) * da.
        var da: [Float] = [2, -3, 0.5, 4, 7]
        let hs: [Float] = [0.3, -1.2, 2.5, -0.75, 9]
        hs.withUnsafeBufferPointer { x in da.withUnsafeMutableBufferPointer { o in
            FeedForward.geluBackward(x.baseAddress!, scaling: o.baseAddress!, count: 5)
        } }
        for (i, (h, m)) in zip(hs, [Float(2), -3, 0.5, 4, 7]).enumerated() {
            let want = Float80(m) * Self.reference(h).grad
            XCTAssertEqual(Double(da[i]), Double(want), accuracy: 1e-6 * abs(Double(want)))
        }
    }
}
