/// Schedule generators: each returns, for every pipeline rank, its list of compute actions
/// in execution order. They hold no communication; `Lowering` adds it.
public enum Generators {
    public struct InvalidSchedule: Error, CustomStringConvertible {
        public let description: String
    }

    /// Compute actions per rank for `kind` with P ranks, M micro-batches, v chunks per rank.
    public static func generate(_ kind: ScheduleKind, stages P: Int, microbatches M: Int, virtualStages v: Int = 1) throws -> [[Action]] {
        guard P >= 1, M >= 1, v >= 1 else { throw InvalidSchedule(description: "stages, micro-batches and virtual stages must be at least 1") }
        if kind != .interleaved && v != 1 {
            throw InvalidSchedule(description: "--virtual-stages \(v) needs --schedule interleaved (\(kind.rawValue) runs one chunk per rank)")
        }
        switch kind {
        case .gpipe: return (0..<P).map { _ in gpipe(M) }
        case .oneFOneB: return (0..<P).map { oneFOneB(stage: $0, stages: P, microbatches: M) }
        case .zbH1: return (0..<P).map { zbH1(stage: $0, stages: P, microbatches: M) }
        case .interleaved:
            guard M % P == 0 else {
                throw InvalidSchedule(description: "--schedule interleaved needs --micro-batches divisible by --pp: \(M) micro-batches do not divide into groups of \(P)")
            }
            return (0..<P).map { interleaved(stage: $0, stages: P, microbatches: M, chunks: v) }
        }
    }

    static func gpipe(_ M: Int) -> [Action] {
        (0..<M).map { Action(.forward, $0) } + (0..<M).map { Action(.backward, $0) }
    }

    /// Stage s runs P-s-1 warm-up forwards, then alternates one forward and one backward,
    /// then drains the remaining backwards: at most P-s micro-batches in flight.
    static func oneFOneB(stage s: Int, stages P: Int, microbatches M: Int) -> [Action] {
        let warmup = min(P - s - 1, M)
        var out = (0..<warmup).map { Action(.forward, $0) }
        var f = warmup, b = 0
        while f < M { out.append(Action(.forward, f)); f += 1; out.append(Action(.backward, b)); b += 1 }
        while b < M { out.append(Action(.backward, b)); b += 1 }
        return out
    }

    /// ZB-H1: as 1F1B, but for the first `s` backwards of stage s only the input gradient
    /// (I) runs in place; their weight gradients (W) are deferred to the end, where the
    /// 1F1B cool-down leaves stage s idle. Later backwards run I then W at once. Stage 0
    /// (nothing to defer) is exactly 1F1B with split backwards.
    static func zbH1(stage s: Int, stages P: Int, microbatches M: Int) -> [Action] {
        let warmup = min(P - s - 1, M)
        var out = (0..<warmup).map { Action(.forward, $0) }
        var f = warmup, b = 0
        var deferred: [Int] = []
        func backward(_ mb: Int) {
            out.append(Action(.backwardInput, mb))
            if deferred.count < s && mb < M - 1 { deferred.append(mb) } else { out.append(Action(.backwardWeight, mb)) }
        }
        while f < M { out.append(Action(.forward, f)); f += 1; backward(b); b += 1 }
        while b < M { backward(b); b += 1 }
        out += deferred.map { Action(.backwardWeight, $0) }
        return out
    }

    /// Megatron's interleaved 1F1B. Rank s holds chunks c = 0..<v, global virtual stage
    /// c*P + s. Micro-batches go through the chunks in groups of P: forward step k runs
    /// chunk (k / P) % v on micro-batch (k / (P v)) P + k % P; backward step k runs the chunks
    /// in reverse. Warm-up: 2(P - s - 1) + (v - 1) P forwards (all of them when M = P).
    static func interleaved(stage s: Int, stages P: Int, microbatches M: Int, chunks v: Int) -> [Action] {
        let total = M * v
        func forwardAction(_ k: Int) -> Action {
            Action(.forward, (k / (P * v)) * P + k % P, chunk: (k / P) % v)
        }
        func backwardAction(_ k: Int) -> Action {
            Action(.backward, (k / (P * v)) * P + k % P, chunk: v - 1 - (k / P) % v)
        }
        let warmup = M == P ? total : min(2 * (P - s - 1) + (v - 1) * P, total)
        var out = (0..<warmup).map(forwardAction)
        var f = warmup, b = 0
        while f < total { out.append(forwardAction(f)); f += 1; out.append(backwardAction(b)); b += 1 }
        while b < total { out.append(backwardAction(b)); b += 1 }
        return out
    }
}
