import Foundation
import Plan
import Tensor

/// The embedded default data: an order-k Markov chain over `alphabet` printable bytes.
///
/// Each context of k symbols has `branching` possible successors with fixed random
/// probabilities, all drawn from the chain's seed. Every sequence starts from the chain's
/// stationary distribution, so the best possible predictor's loss is known exactly:
/// the entropy of X_i given X_0..X_{i-1} for the first k-1 targets, and the chain's
/// entropy rate for the rest. That is the `entropy_floor` printed by a run.
public struct MarkovSource: DataSource {
    public let spec: MarkovSpec
    let seed: UInt64
    let symbols: [Int32]
    /// For each context index (base-A number of the last k symbols): successors and cumulative probabilities.
    let next: [[Int]]
    let cumulative: [[Double]]
    let probability: [[Double]]
    /// Stationary distribution over contexts, and its cumulative form for sampling.
    let stationary: [Double]
    let stationaryCumulative: [Double]

    public init(spec: MarkovSpec, seed: UInt64) {
        self.spec = spec
        self.seed = seed
        let A = spec.alphabet, k = spec.order
        let alphabetBytes = Array("etaonisrhldcumfpgwybvkxjqz ETAONISRHLDCUMFPGWYBVKXJQZ0123456789.,".utf8)
        symbols = (0..<A).map { Int32(alphabetBytes[$0]) }
        var rng = SplitMix(key: hashKey(spec.seed, stableHash("markov-chain")))
        let contexts = Int(pow(Double(A), Double(k)))
        var next = [[Int]](), prob = [[Double]](), cum = [[Double]]()
        for _ in 0..<contexts {
            var pool = Array(0..<A)
            pool.shuffle(using: &rng)
            let succ = Array(pool.prefix(spec.branching))
            // Weights 1, 1/2, 1/3, ... jittered: skewed but never degenerate.
            var w = (0..<spec.branching).map { 1.0 / Double($0 + 1) * (0.75 + 0.5 * rng.nextDouble()) }
            let total = w.reduce(0, +)
            w = w.map { $0 / total }
            var c = [Double](); var acc = 0.0
            for p in w { acc += p; c.append(acc) }
            c[c.count - 1] = 1
            next.append(succ); prob.append(w); cum.append(c)
        }
        self.next = next; self.probability = prob; self.cumulative = cum
        // Stationary distribution by power iteration on the lazy context chain (P + I) / 2,
        // which has the same stationary distributions and cannot oscillate.
        var pi = [Double](repeating: 1 / Double(contexts), count: contexts)
        for _ in 0..<20000 {
            var nextPi = pi.map { $0 * 0.5 }
            for s in 0..<contexts {
                for (j, sym) in next[s].enumerated() { nextPi[(s * A + sym) % contexts] += 0.5 * pi[s] * prob[s][j] }
            }
            let delta = zip(pi, nextPi).reduce(0.0) { $0 + abs($1.0 - $1.1) }
            pi = nextPi
            if delta < 1e-15 { break }
        }
        stationary = pi
        var c = [Double](); var acc = 0.0
        for p in pi { acc += p; c.append(acc) }
        stationaryCumulative = c
    }

    public var description: String {
        "synthetic order-\(spec.order) Markov chain over \(spec.alphabet) symbols, \(spec.branching) successors per context (markov_seed \(spec.seed))"
    }

    /// Entropy rate of the chain in nats per symbol: sum_s pi(s) H(next | s).
    public var entropyRate: Double {
        var h = 0.0
        for s in stationary.indices { for p in probability[s] where p > 0 { h -= stationary[s] * p * log(p) } }
        return h
    }

    /// H(X_0..X_{m-1}) under the stationary start, for m <= k (marginal of the context distribution).
    func prefixEntropy(_ m: Int) -> Double {
        -prefixMarginal(m).reduce(0.0) { $1 > 0 ? $0 + $1 * log($1) : $0 }
    }

    /// Distribution of the first m symbols (m <= k) of a sequence, indexed base-A oldest first.
    func prefixMarginal(_ m: Int) -> [Double] {
        let A = spec.alphabet, k = spec.order
        let divisor = Int(pow(Double(A), Double(k - m)))  // context index / divisor = first m symbols
        var marginal = [Double](repeating: 0, count: Int(pow(Double(A), Double(m))))
        for s in stationary.indices { marginal[s / divisor] += stationary[s] }
        return marginal
    }

    public var maxToken: Int { Int(symbols.max() ?? 0) }

    public func entropyFloor(seqLen T: Int) -> Double? {
        let k = spec.order
        var total = 0.0
        for i in 1...T {
            // target X_i given X_0..X_{i-1}
            total += i < k ? prefixEntropy(i + 1) - prefixEntropy(i) : entropyRate
        }
        return total / Double(T)
    }

    /// Monte Carlo estimate of the loss of the exact predictor (the chain's own conditional
    /// probabilities) on `samples` sequences: should agree with `entropyFloor`.
    public func empiricalLoss(samples: Int, seqLen T: Int) -> Double {
        let A = spec.alphabet, k = spec.order
        let index = Dictionary(uniqueKeysWithValues: symbols.enumerated().map { ($1, $0) })
        let marginals = (0...k).map { prefixMarginal($0) }
        var total = 0.0
        for n in 0..<samples {
            let seq = sample(step: -1, index: n, length: T + 1).map { index[$0]! }
            for i in 1...T {
                if i < k {
                    // P(x_0..x_i) / P(x_0..x_{i-1}) from the stationary start's marginals.
                    let num = seq[0...i].reduce(0) { $0 * A + $1 }, den = seq[0..<i].reduce(0) { $0 * A + $1 }
                    total -= log(marginals[i + 1][num] / marginals[i][den])
                } else {
                    let context = seq[(i - k)..<i].reduce(0) { $0 * A + $1 }
                    let j = next[context].firstIndex(of: seq[i])!
                    total -= log(probability[context][j])
                }
            }
        }
        return total / Double(samples * T)
    }

    public func sample(step: Int, index: Int, length: Int) -> [Int32] {
        let A = spec.alphabet, k = spec.order
        let contexts = stationary.count
        var rng = SplitMix(key: hashKey(seed, stableHash("markov-sample"), UInt64(bitPattern: Int64(step)), UInt64(index)))
        var state = pick(stationaryCumulative, rng.nextDouble())
        var out = [Int32]()
        out.reserveCapacity(length)
        // The k symbols of the starting context, oldest first.
        var digits = [Int](repeating: 0, count: k)
        var s = state
        for i in stride(from: k - 1, through: 0, by: -1) { digits[i] = s % A; s /= A }
        for d in digits.prefix(length) { out.append(symbols[d]) }
        while out.count < length {
            let j = pick(cumulative[state], rng.nextDouble())
            let sym = next[state][j]
            out.append(symbols[sym])
            state = (state * A + sym) % contexts
        }
        return out
    }

    @inline(__always) func pick(_ cumulative: [Double], _ u: Double) -> Int {
        var lo = 0, hi = cumulative.count - 1
        while lo < hi { let mid = (lo + hi) / 2; if u < cumulative[mid] { hi = mid } else { lo = mid + 1 } }
        return lo
    }
}
