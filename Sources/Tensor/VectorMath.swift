/// Vectorised elementary functions for the elementwise kernels (GELU, softmax): no call into
/// libm per element. Each is a Cody-Waite range reduction and a polynomial of documented
/// accuracy, written with Swift's SIMD types so that every lane runs the same instructions.
///
/// Accuracy (checked by `VectorMathTests` against Float80 `exp` over the whole range):
/// - `exp(_: SIMD4<Double>)`: relative error below 2e-15 for inputs in [-700, 700] (the
///   reduction r = x - n ln 2 with |r| <= ln2/2 and a degree-13 Taylor polynomial, whose
///   truncation error is below (ln2/2)^14 / 14! = 4e-18); inputs are clamped to that range,
///   so the result is always finite and positive.
/// - `exp(_: SIMD8<Float>)`: relative error below 3e-7 (about 2 ulp) for inputs in
///   [-87.3, 88.7]: a degree-7 polynomial (truncation (ln2/2)^8/8! = 5e-9), evaluated in
///   float; below -87.3 the result is 0, above 88.7 it is clamped to 88.7's value.
public enum VectorMath {
    /// e^x per lane, double precision (see the type's note for its accuracy).
    // ln 2 is split into hi + lo so that n * hi is exact for the n that occur.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD4<Double>) -> SIMD4<Double> {
        var x = x
        x.replace(with: -700, where: x .< -700)
        x.replace(with: 700, where: x .> 700)
        // n = round(x / ln 2) by the magic-number trick: adding 1.5 * 2^52 rounds to an integer
        // whose low bits are n's two's complement.
        let magic = SIMD4<Double>(repeating: 6755399441055744.0)
        let t = x * 1.44269504088896338700e+00 + magic
        let n = t - magic
        let r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
        // Taylor series of e^r to degree 13, by Estrin's scheme (pairs, then powers r^2, r^4,
        // r^8) so that the lanes' multiplications do not wait on one long chain.
        let r2 = r * r, r4 = r2 * r2, r8 = r4 * r4
        let q0 = 1 + r, q1 = 1.0 / 2 + r * (1.0 / 6), q2 = 1.0 / 24 + r * (1.0 / 120)
        let q3 = 1.0 / 720 + r * (1.0 / 5040), q4 = 1.0 / 40320 + r * (1.0 / 362880)
        let q5 = 1.0 / 3628800 + r * (1.0 / 39916800), q6 = 1.0 / 479001600 + r * (1.0 / 6227020800)
        let s0 = q0 + q1 * r2, s1 = q2 + q3 * r2, s2 = q4 + q5 * r2
        let p = (s0 + s1 * r4) + (s2 + q6 * r4) * r8
        // 2^n from n's bits: (n + 1023) << 52; |n| <= 1010 keeps it a normal number.
        let bits = (unsafeBitCast(t, to: SIMD4<Int64>.self) &+ 1023) &<< 52
        return p * unsafeBitCast(bits, to: SIMD4<Double>.self)
    }

    /// e^x per lane, single precision (see the type's note for its accuracy).
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> { exp(x, plus: SIMD8()) }

    /// e^(x + lo) per lane, for a small correction `lo` (|lo| at most x's rounding error): lets
    /// a caller pass the exact value of a rounded difference (see `expShifted`).
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD8<Float>, plus lo: SIMD8<Float>) -> SIMD8<Float> {
        let underflow = x .< -87.3
        var xc = x
        xc.replace(with: -87.3, where: x .< -87.3)
        xc.replace(with: 88.7, where: x .> 88.7)
        let magic = SIMD8<Float>(repeating: 12582912.0)  // 1.5 * 2^23
        let t = xc * 1.44269504088896341 + magic
        let n = t - magic
        let r = ((xc - n * 0.693145751953125) - n * 1.428606765330187045e-06) + lo
        var p = SIMD8<Float>(repeating: 1.0 / 5040.0)
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        // 2^n from n's bits: (n + 127) << 23, n in [-126, 128). At n = 128 (x near 88.7) the
        // scale is split so that it stays finite.
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000  // n as an integer
        let half = ni &>> 1
        let s1 = unsafeBitCast((half &+ 127) &<< 23, to: SIMD8<Float>.self)
        let s2 = unsafeBitCast((ni &- half &+ 127) &<< 23, to: SIMD8<Float>.self)
        return (p * s1 * s2).replacing(with: 0, where: underflow)
    }

    /// The largest of p[0..<n] (-infinity when n is 0; NaN when one of them is NaN).
    @inlinable
    public static func maximum(_ p: UnsafePointer<Float>, count n: Int) -> Float {
        var m = SIMD8<Float>(repeating: -.infinity), i = 0
        var nan = false
        while i + 8 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
            nan = nan || any(v .!= v)
            m.replace(with: v, where: v .> m)
            i += 8
        }
        var r = m.max()
        while i < n { nan = nan || p[i].isNaN; r = Swift.max(r, p[i]); i += 1 }
        return nan ? .nan : r
    }

    /// p[j] = e^(p[j] - shift) for j < n, eight lanes at a time; returns the sum of the new
    /// values, accumulated in double. The kernel of every softmax of the model.
    @inlinable
    public static func expShifted(_ p: UnsafeMutablePointer<Float>, count n: Int, shift: Float) -> Double {
        var lo = SIMD4<Double>(), hi = SIMD4<Double>(), i = 0
        @inline(__always) func add(_ e: SIMD8<Float>) {
            lo += SIMD4<Double>(e.lowHalf)
            hi += SIMD4<Double>(e.highHalf)
        }
        // x - shift rounds (by up to half an ulp of the larger, 4e-6 at 80): its exact error
        // (Knuth's two-sum) goes into the exponent, so that e^(x - shift) is that of the exact
        // difference.
        @inline(__always) func shifted(_ x: SIMD8<Float>) -> SIMD8<Float> {
            let d = x - shift, bv = d - x
            let err = (x - (d - bv)) + (-shift - bv)
            return exp(d, plus: err.replacing(with: 0, where: d .== -.infinity))
        }
        while i + 8 <= n {
            let e = shifted(UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self))
            UnsafeMutableRawPointer(p + i).storeBytes(of: e, as: SIMD8<Float>.self)
            add(e)
            i += 8
        }
        if i < n {
            var v = SIMD8<Float>(repeating: -.infinity)  // padding: e^-inf = 0
            for j in 0..<(n - i) { v[j] = p[i + j] }
            let e = shifted(v)
            for j in 0..<(n - i) { p[i + j] = e[j] }
            add(e)
        }
        return (lo + hi).sum()
    }

    /// p[j] *= s for j < n.
    @inlinable
    public static func scale(_ p: UnsafeMutablePointer<Float>, count n: Int, by s: Float) {
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * s
            UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { p[i] *= s; i += 1 }
    }
}
