import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Top-k softmax routing with per-sequence expert capacity.
///
/// For token t: logits = x_t R^T (E), p = softmax(logits), the k experts of largest p
/// (ties to the lower index) are chosen, and their gates are p renormalised over the k
/// chosen: g_j = p_{e_j} / sum_m p_{e_m}.
///
/// Capacity is defined per sequence (the routing group), so it does not depend on how a
/// batch is split over ranks: within a sequence, assignments are admitted in the order
/// (choice j, then position t) (all first choices before any second choice, as in GShard),
/// and an assignment is dropped once its expert already holds `capacity` assignments of the
/// sequence. A dropped assignment contributes nothing; a token whose every assignment was
/// dropped passes through on the residual path alone.
public struct Routing {
    public let tokens: Int                 // N
    public let k: Int
    public let experts: Int
    public var choice: [Int32]             // (N, K) expert of each assignment
    public var gate: [Float]               // (N, K) renormalised gate
    public var kept: [Bool]                // (N, K) false when dropped by capacity
    let probs: Tensor                      // (N, E) softmax of the router logits
    let lse: [Float]                       // (N) log-sum-exp of the logits, for the z-loss
    let fraction: [Float]                  // (S, E) share of a sequence's assignments routed to e (before capacity)
    /// Sum over this micro-batch's sequences of E * sum_e f_{s,e} P_{s,e}  (1 per sequence when balanced).
    public let auxSum: Double
    /// Sum over tokens of lse^2.
    public let zSum: Double
    /// Assignments kept per expert (after capacity).
    public let load: [Int]
    public let dropped: Int

    /// Floats the routing keeps for the backward: probabilities, gates, log-sum-exps and
    /// per-sequence expert fractions (N E + N K + N + S E). Choices and kept flags are integers.
    public var floatCount: Int { probs.count + gate.count + lse.count + fraction.count }
}

public enum Router {
    /// x (N, C), router weight (E, C). `capacity` nil means unlimited.
    public static func route(_ x: Tensor, router w: Tensor, topK K: Int, seqLen T: Int, capacity: Int?) -> Routing {
        route(logits: logits(x, router: w), topK: K, seqLen: T, capacity: capacity)
    }

    /// The router's scores x R^T (N, E).
    public static func logits(_ x: Tensor, router w: Tensor) -> Tensor {
        let logits = Tensor(uninitialized: [x.rows, w.shape[0]])  // written whole (beta 0)
        Kernels.linearForward(x, w, into: logits)
        return logits
    }

    /// Routing from the router's scores (N, E), consumed (the softmax runs in place): under
    /// sequence parallelism each tensor-parallel rank scores its own block of tokens and the
    /// scores are gathered, so that every rank routes the whole micro-batch as one rank would.
    public static func route(logits: Tensor, topK K: Int, seqLen T: Int, capacity: Int?) -> Routing {
        let n = logits.rows, E = logits.cols
        let probs = logits  // softmax in place
        Kernels.account(flops: Double(n * E * (5 + K)), elements: Double(2 * n * E + 2 * n * K))
        var lse = [Float](repeating: 0, count: n)
        var choice = [Int32](repeating: 0, count: n * K)
        var gate = [Float](repeating: 0, count: n * K)
        let pp = probs.ptr
        var picked = [Bool](repeating: false, count: E)
        for t in 0..<n {
            let row = pp + t * E
            let m = VectorMath.maximum(row, count: E)
            let s = VectorMath.expShifted(row, count: E, shift: m)
            lse[t] = m + Float(log(s))
            VectorMath.scale(row, count: E, by: Float(1 / s))
            // top-k by repeated arg-max, ties to the lower index.
            for e in 0..<E { picked[e] = false }
            var total: Float = 0
            for j in 0..<K {
                var best = -1
                for e in 0..<E where !picked[e] { if best < 0 || row[e] > row[best] { best = e } }
                picked[best] = true
                choice[t * K + j] = Int32(best)
                gate[t * K + j] = row[best]
                total += row[best]
            }
            for j in 0..<K { gate[t * K + j] /= total }
        }
        // Capacity and load-balancing statistics, per sequence.
        let S = n / T
        var kept = [Bool](repeating: true, count: n * K)
        var fraction = [Float](repeating: 0, count: S * E)
        var load = [Int](repeating: 0, count: E)
        var dropped = 0
        var auxSum = 0.0
        var used = [Int](repeating: 0, count: E)
        for s in 0..<S {
            for e in 0..<E { used[e] = 0 }
            for j in 0..<K {
                for t in (s * T)..<((s + 1) * T) {
                    let e = Int(choice[t * K + j])
                    fraction[s * E + e] += 1
                    if let cap = capacity, used[e] >= cap { kept[t * K + j] = false; dropped += 1 }
                    else { used[e] += 1; load[e] += 1 }
                }
            }
            var aux = 0.0
            for e in 0..<E {
                fraction[s * E + e] /= Float(T * K)
                var pMean = 0.0
                for t in (s * T)..<((s + 1) * T) { pMean += Double(pp[t * E + e]) }
                aux += Double(fraction[s * E + e]) * pMean / Double(T)
            }
            auxSum += Double(E) * aux
        }
        var zSum = 0.0
        for t in 0..<n { zSum += Double(lse[t]) * Double(lse[t]) }
        return Routing(tokens: n, k: K, experts: E, choice: choice, gate: gate, kept: kept, probs: probs,
                       lse: lse, fraction: fraction, auxSum: auxSum, zSum: zSum, load: load, dropped: dropped)
    }

    /// Backward of routing. `dGate` (N, K) is the gradient of the loss w.r.t. each gate.
    /// Adds the load-balancing and z-loss gradients, then goes through the softmax and the
    /// router projection: dW_router += dlogits^T x, dx += dlogits W_router.
    /// Only the tokens in `tokens` are handled (a tensor-parallel rank's share, all of them
    /// on one rank): their load-balancing and z-loss terms, their gate gradients, their rows
    /// of dx, and their part of the router gradient. Row r of `x` and `dx` is token
    /// `rowBase + r` (a sequence-parallel rank holds only its block of tokens).
    public static func backward(_ r: Routing, dGate: [Float], tokens: Range<Int>, x: Tensor, router w: Tensor, dRouter: Tensor,
                                seqLen T: Int, auxCoef: Float, zCoef: Float, scale: LossScale, dx: Tensor, rowBase: Int = 0) {
        let E = r.experts, K = r.k
        let n = tokens.count
        let dLogits = Tensor(zeros: [n, E])
        let pp = r.probs.ptr, dl = dLogits.ptr - tokens.lowerBound * E  // indexed by global token
        Kernels.account(flops: Double(8 * n * E), elements: Double(3 * n * E + n * K))
        let auxW = auxCoef * Float(E) / (Float(scale.sequences) * Float(T))
        let zW = zCoef * 2 / Float(scale.tokens)
        var dp = [Float](repeating: 0, count: E)
        for t in tokens {
            let s = t / T
            let row = pp + t * E
            for e in 0..<E { dp[e] = auxW * r.fraction[s * E + e] }
            // Gate renormalisation: g_j = p_j / S  =>  dp_j = (dg_j - sum_m dg_m g_m) / S.
            var total: Float = 0, dot: Float = 0
            for j in 0..<K {
                total += row[Int(r.choice[t * K + j])]
                dot += dGate[t * K + j] * r.gate[t * K + j]
            }
            for j in 0..<K { dp[Int(r.choice[t * K + j])] += (dGate[t * K + j] - dot) / total }
            // Softmax: dlogit_e = p_e (dp_e - sum_m p_m dp_m); z-loss adds zW * lse * p_e.
            var sdp: Float = 0
            for e in 0..<E { sdp += row[e] * dp[e] }
            let zt = zW * r.lse[t]
            for e in 0..<E { dl[t * E + e] = row[e] * (dp[e] - sdp) + zt * row[e] }
        }
        Kernels.linearBackward(x.rowSlice(tokens.lowerBound - rowBase, n), w, dLogits, dx: dx.rowSlice(tokens.lowerBound - rowBase, n),
                               dw: dRouter, accumulateDx: true)
    }
}
