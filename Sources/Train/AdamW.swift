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
    public func step(params: Storage, grads: Storage, lr: Double, gradScale: Float = 1) {
        stepCount += 1
        let b1 = Float(hyper.beta1), b2 = Float(hyper.beta2)
        let bc1 = Float(1 - pow(hyper.beta1, Double(stepCount)))
        let bc2 = Float(1 - pow(hyper.beta2, Double(stepCount)))
        let lrF = Float(lr), eps = Float(hyper.eps), wd = Float(hyper.weightDecay)
        let p = params.base + range.lowerBound, g = grads.base + range.lowerBound
        let mp = m.base, vp = v.base
        decayMask.withUnsafeBufferPointer { mask in
            for i in 0..<range.count {
                let gi = g[i] * gradScale
                mp[i] = b1 * mp[i] + (1 - b1) * gi
                vp[i] = b2 * vp[i] + (1 - b2) * gi * gi
                let mhat = mp[i] / bc1, vhat = vp[i] / bc2
                p[i] -= lrF * (mhat / (vhat.squareRoot() + eps) + wd * mask[i] * p[i])
            }
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
