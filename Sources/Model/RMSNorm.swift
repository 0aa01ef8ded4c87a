import Tensor

/// RMSNorm: y = x / rms(x) * w, rms(x) = sqrt(mean_c x_c^2 + eps), over the last dimension.
public enum RMSNorm {
    /// x (N, C), w (C) -> y (N, C); caches rstd (N) for the backward.
    public static func forward(_ x: Tensor, _ w: Tensor, eps: Float, y: Tensor, rstd: Tensor) {
        let n = x.rows, c = x.cols
        Kernels.account(flops: Double(4 * n * c), elements: Double(2 * n * c + c + n))
        let xp = x.ptr, yp = y.ptr, wp = w.ptr
        for r in 0..<n {
            let row = xp + r * c
            var ss: Float = 0
            for j in 0..<c { ss += row[j] * row[j] }
            let s = 1 / (ss / Float(c) + eps).squareRoot()
            rstd[r] = s
            let out = yp + r * c
            for j in 0..<c { out[j] = row[j] * s * wp[j] }
        }
    }

    /// dx = rstd * (dy*w) - rstd^3/C * x * sum_j(dy_j w_j x_j);  dw += sum_n dy * x * rstd.
    /// With `accumulate` the input gradient is added to `dx` instead of written.
    public static func backward(_ x: Tensor, _ w: Tensor, rstd: Tensor, dy: Tensor,
                                dx: Tensor, dw: Tensor, accumulate: Bool) {
        let n = x.rows, c = x.cols
        Kernels.account(flops: Double(10 * n * c), elements: Double((accumulate ? 4 : 3) * n * c + 2 * c + n))
        let xp = x.ptr, wp = w.ptr, dyp = dy.ptr, dxp = dx.ptr, dwp = dw.ptr
        for r in 0..<n {
            let row = xp + r * c, g = dyp + r * c, out = dxp + r * c
            let s = rstd[r]
            var dot: Float = 0
            for j in 0..<c { dot += g[j] * wp[j] * row[j]; dwp[j] += g[j] * row[j] * s }
            let k = s * s * s * dot / Float(c)
            if accumulate {
                for j in 0..<c { out[j] += s * g[j] * wp[j] - k * row[j] }
            } else {
                for j in 0..<c { out[j] = s * g[j] * wp[j] - k * row[j] }
            }
        }
    }
}
