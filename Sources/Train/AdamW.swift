import Foundation
import Model
import Tensor

/// AdamW (Loshchilov & Hutter 2019) over a contiguous range of the flat parameter buffer,
/// with fp32 master weights and moments. On one rank the range is everything; under
/// ZeRO-1 each data-parallel rank owns one range and steps only that.
public final class AdamW {
    public struct Hyper: Sendable {
        public var beta1: Double, beta2: Double, eps: Double, weightDecay: Double
        public init(beta1: Double, beta2: Double, eps: Double, weightDecay: Double) {
            self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        }
    }

    public let range: Range<Int>
    public let hyper: Hyper
    /// First and second moments for `range` (indexed from range.lowerBound).
    public let m: Storage
    public let v: Storage
    /// 1 where weight decay applies, 0 elsewhere (norm gains), for `range`.
    let decayMask: [Float]
    public private(set) var stepCount = 0

    public init(layout: ParameterLayout, range: Range<Int>, hyper: Hyper) {
        self.range = range
        self.hyper = hyper
        m = Storage(count: range.count)
        v = Storage(count: range.count)
        var mask = [Float](repeating: 0, count: range.count)
        for s in layout.specs where s.decay {
            let lo = max(s.offset, range.lowerBound), hi = min(s.offset + s.count, range.upperBound)
            if lo < hi { for i in lo..<hi { mask[i - range.lowerBound] = 1 } }
        }
        decayMask = mask
    }

    /// Sets the number of updates made so far (resuming from a checkpoint).
    public func restore(stepCount n: Int) { stepCount = n }

    /// Bytes of optimizer state this rank holds (two fp32 moments).

    /// One update of `params[range]` from `grads[range] * gradScale` (the clipping factor).
    /// One pass over eight elements at a time (SIMD8; the last few padded into one more
    /// vector): the moments, the bias corrections, the decay and the update, each element by
    /// the same IEEE operations in the same order as one at a time, so the result is the same
    /// to the bit.
    public func step(params: Storage, grads: Storage, lr: Double, gradScale: Float = 1) {
        step(parameters: params.base + range.lowerBound, gradients: grads.base + range.lowerBound, lr: lr, gradScale: gradScale)
    }

    /// The same update, the parameters and gradients of `range` starting at `parameters` and
    /// `gradients` (ZeRO-2 keeps only its shard of the gradients, ZeRO-3 of both).
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, lr: Double, gradScale: Float = 1) {
        stepCount += 1
        typealias V = SIMD8<Float>
        let b1 = Float(hyper.beta1), b2 = Float(hyper.beta2)
        let bc1 = V(repeating: Float(1 - pow(hyper.beta1, Double(stepCount))))
        let bc2 = V(repeating: Float(1 - pow(hyper.beta2, Double(stepCount))))
        let lrF = V(repeating: Float(lr)), eps = V(repeating: Float(hyper.eps)), wd = V(repeating: Float(hyper.weightDecay))
        let vb1 = V(repeating: b1), vb2 = V(repeating: b2), c1 = V(repeating: 1 - b1), c2 = V(repeating: 1 - b2)
        let scale = V(repeating: gradScale)
        let p = parameters, g = gradients
        let mp = m.base, vp = v.base
        let n = range.count
        guard n > 0 else { return }
        /// One vector's update: the new moments and parameters.
        @inline(__always) func update(_ g: V, _ m: V, _ v: V, _ p: V, _ mask: V) -> (m: V, v: V, p: V) {
            let gi = g * scale
            let mi = vb1 * m + c1 * gi
            let vi = vb2 * v + c2 * gi * gi
            let mhat = mi / bc1, vhat = vi / bc2
            return (mi, vi, p - lrF * (mhat / (vhat.squareRoot() + eps) + wd * mask * p))
        }
        decayMask.withUnsafeBufferPointer { maskBuffer in
            let mask = maskBuffer.baseAddress!
            @inline(__always) func load(_ x: UnsafePointer<Float>, _ i: Int) -> V { UnsafeRawPointer(x + i).loadUnaligned(as: V.self) }
            @inline(__always) func store(_ value: V, _ x: UnsafeMutablePointer<Float>, _ i: Int) {
                UnsafeMutableRawPointer(x + i).storeBytes(of: value, as: V.self)
            }
            var i = 0
            while i + 8 <= n {
                let r = update(load(g, i), load(mp, i), load(vp, i), load(p, i), load(mask, i))
                store(r.m, mp, i); store(r.v, vp, i); store(r.p, p, i)
                i += 8
            }
            guard i < n else { return }
            // The last n - i elements, padded into one vector.
            var t = (g: V(), m: V(), v: V(), p: V(), mask: V())
            for j in 0..<(n - i) { t.g[j] = g[i + j]; t.m[j] = mp[i + j]; t.v[j] = vp[i + j]; t.p[j] = p[i + j]; t.mask[j] = mask[i + j] }
            let r = update(t.g, t.m, t.v, t.p, t.mask)
            for j in 0..<(n - i) { mp[i + j] = r.m[j]; vp[i + j] = r.v[j]; p[i + j] = r.p[j] }
        }
    }
}

/// Linear warm-up to the peak rate, then cosine decay to `minRatio` x peak at the last step.
public struct LRSchedule: Sendable {
    public let peak: Double, minRatio: Double, warmup: Int, total: Int
    public init(peak: Double, minRatio: Double, warmup: Int, total: Int) {
        self.peak = peak; self.minRatio = minRatio; self.warmup = warmup; self.total = total
    }

    /// Learning rate of 1-based step `step`.
    public func rate(step: Int) -> Double {
        if step <= warmup { return peak * Double(step) / Double(max(warmup, 1)) }
        let span = max(total - warmup, 1)
        let progress = min(Double(step - warmup) / Double(span), 1)
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return peak * (minRatio + (1 - minRatio) * cosine)
    }
}
