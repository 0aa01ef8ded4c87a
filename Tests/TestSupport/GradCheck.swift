import Tensor

/// Finite-difference gradient checks for the hand-written backward passes.
///
/// Every check perturbs one coordinate of a tensor in place, evaluates an objective at
/// x + eps and x - eps (accumulated in Double by the caller), and compares the central
/// difference with the analytic gradient:
///
///     numeric  n = (f(x + h+) - f(x - h-)) / (h+ + h-)
///     relative error = |a - n| / max(|a|, |n|, floor),   floor = floorFraction * max_i |a_i|
///
/// h+ and h- are the perturbations actually stored in fp32 (x + eps rounded), which equal
/// eps up to rounding; using them removes one avoidable error term.
///
/// Why the floor is not tiny: the layers compute in fp32, so every objective value carries
/// round-off of ~1e-8..1e-7 of its size, which central differences divide by 2 eps, while
/// truncation grows as eps^2. At the best eps the absolute error of a numeric gradient is
/// about 1e-5..1e-4 of the tensor's largest gradient (printed on every line as
/// max|a-n|/max|a|). A coordinate whose gradient is 1000x smaller than the largest can
/// therefore not be checked to 1% relative; the floor compares such coordinates in absolute
/// terms instead (|a - n| < tolerance * floor). Linear maps are checked with floor 1e-3,
/// single nonlinear layers with 2e-2, the whole model with 5e-2; each test states its own.

// MARK: - Seeded random data

/// Fills `t` with mean + std * N(0, 1); element i depends only on (seed, i).
public func fillNormal(_ t: Tensor, seed: UInt64, std: Float = 1, mean: Float = 0) {
    let key = hashKey(seed, 0x6772_6164)  // "grad"
    for i in 0..<t.count { t[i] = mean + std * normalAt(key, UInt64(i)) }
}

/// A new tensor of the given shape filled by `fillNormal`.
public func randomTensor(_ shape: [Int], seed: UInt64, std: Float = 1, mean: Float = 0) -> Tensor {
    let t = Tensor(zeros: shape)
    fillNormal(t, seed: seed, std: std, mean: mean)
    return t
}

/// `count` tokens uniform in [0, vocab), from a seeded stream.
public func randomTokens(count: Int, vocab: Int, seed: UInt64) -> [Int32] {
    var g = SplitMix(key: hashKey(seed, 0x746F_6B73))  // "toks"
    return (0..<count).map { _ in Int32(g.next() % UInt64(vocab)) }
}

/// sum_i r_i * y_i in Double: the objective whose gradient with respect to y is r.
public func weightedSum(_ y: Tensor, _ r: Tensor) -> Double {
    precondition(y.count == r.count, "weightedSum: sizes differ")
    var s = 0.0
    for i in 0..<y.count { s += Double(r[i]) * Double(y[i]) }
    return s
}

/// Up to `limit` distinct indices in [0, count), deterministic in `seed`, sorted; all when count <= limit.
public func sampleIndices(count: Int, limit: Int, seed: UInt64) -> [Int] {
    if count <= limit { return Array(0..<count) }
    var g = SplitMix(key: hashKey(seed, 0x7361_6D70))  // "samp"
    var all = Array(0..<count)
    for i in 0..<limit {  // partial Fisher-Yates
        let j = i + Int(g.next() % UInt64(count - i))
        all.swapAt(i, j)
    }
    return all[0..<limit].sorted()
}

// MARK: - Relative error

/// |a - n| / max(|a|, |n|, floor); 0 when all three are 0.
public func relativeError(analytic a: Double, numeric n: Double, floor: Double) -> Double {
    let denom = max(abs(a), abs(n), floor)
    return denom == 0 ? 0 : abs(a - n) / denom
}

// MARK: - The check

/// The outcome of checking one tensor, printable as one llm.c-style OK / NOT OK line.
public struct GradCheckReport: CustomStringConvertible, Sendable {
    public let name: String
    public let maxRelError: Double
    public let maxAbsError: Double
    /// Coordinate with the largest relative error, and its analytic and numeric values.
    public let worstIndex: Int
    public let worstAnalytic: Double
    public let worstNumeric: Double
    public let checked: Int
    /// Coordinates skipped because the objective reported a discontinuity (a routing decision flipped).
    public let skipped: Int
    public let eps: Float
    public let floor: Double
    public let floorFraction: Double
    /// max_i |a_i|: the scale the floor and the normalised error refer to.
    public let maxGradient: Double
    public let tolerance: Double

    /// max |a - n| / max |a|: the round-off level of the check, independent of the floor.
    public var normalizedError: Double { maxGradient > 0 ? maxAbsError / maxGradient : maxAbsError }

    public var passed: Bool { checked > 0 && maxRelError < tolerance }

    public var description: String {
        func e(_ x: Double) -> String { formatScientific(x) }
        let tag = passed ? "OK    " : "NOT OK"
        let padded = name + String(repeating: " ", count: max(0, 40 - name.count))
        return "\(tag) \(padded) max rel err \(e(maxRelError))"
            + "  max|a-n|/max|a| \(e(normalizedError))  checked \(checked) skipped \(skipped)"
            + "  [eps \(e(Double(eps))), floor \(e(floorFraction))*max|g| = \(e(floor)), tol \(e(tolerance))]"
            + (passed ? "" : "  worst #\(worstIndex): analytic \(e(worstAnalytic)) numeric \(e(worstNumeric))")
    }
}

/// Compares `analytic` (the gradient of the objective with respect to `param`) with central
/// differences of `objective` at the coordinates `indices` (all when nil).
///
/// `param` is perturbed in place and restored exactly. `objective` returns nil when the
/// perturbed point is on the other side of a discontinuity (for example a top-k routing
/// decision changed); such coordinates are skipped and counted, never compared.
public func gradCheck(_ name: String, param: Tensor, analytic: Tensor, eps: Float,
                      tolerance: Double = 1e-2, floorFraction: Double, indices: [Int]? = nil,
                      objective: () -> Double?) -> GradCheckReport {
    precondition(param.count == analytic.count, "gradCheck \(name): parameter and gradient sizes differ")
    var maxAnalytic = 0.0
    for i in 0..<analytic.count { maxAnalytic = max(maxAnalytic, abs(Double(analytic[i]))) }
    let floor = floorFraction * maxAnalytic
    var maxRel = 0.0, maxAbs = 0.0, worst = -1, worstA = 0.0, worstN = 0.0
    var checked = 0, skipped = 0
    for i in indices ?? Array(0..<param.count) {
        let v = param[i]
        let up = v + eps, down = v - eps
        param[i] = up
        let fPlus = objective()
        param[i] = down
        let fMinus = objective()
        param[i] = v
        guard let fp = fPlus, let fm = fMinus else { skipped += 1; continue }
        let h = Double(up) - Double(down)
        let n = (fp - fm) / h
        let a = Double(analytic[i])
        let rel = relativeError(analytic: a, numeric: n, floor: floor)
        maxAbs = max(maxAbs, abs(a - n))
        if rel > maxRel || worst < 0 { maxRel = max(rel, maxRel); worst = i; worstA = a; worstN = n }
        checked += 1
    }
    return GradCheckReport(name: name, maxRelError: maxRel, maxAbsError: maxAbs, worstIndex: worst,
                           worstAnalytic: worstA, worstNumeric: worstN, checked: checked, skipped: skipped,
                           eps: eps, floor: floor, floorFraction: floorFraction, maxGradient: maxAnalytic, tolerance: tolerance)
}

/// Formats like "%.2e" without Foundation.
public func formatScientific(_ x: Double) -> String {
    if x == 0 { return "0.00e+00" }
    if !x.isFinite { return "\(x)" }
    var m = abs(x), ex = 0
    while m >= 10 { m /= 10; ex += 1 }
    while m < 1 { m *= 10; ex -= 1 }
    var hundredths = Int((m * 100).rounded())
    if hundredths >= 1000 { hundredths /= 10; ex += 1 }
    let digits = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    let sign = ex < 0 ? "-" : "+"
    let exDigits = abs(ex) < 10 ? "0\(abs(ex))" : "\(abs(ex))"
    return (x < 0 ? "-" : "") + digits + "e" + sign + exDigits
}
