import Model

/// Which layers each pipeline stage holds. With P ranks and v chunks per rank there are
/// P*v virtual stages in model order; rank r holds virtual stages r, r+P, r+2P, ... The
/// first virtual stage also embeds, the last also runs the final norm, LM head and loss.
public struct StagePlan: Sendable, Equatable, CustomStringConvertible {
    public let stages: Int
    public let virtualStages: Int
    /// Layers of each virtual stage, in model order.
    public let layers: [Range<Int>]

    public struct InvalidPlan: Error, CustomStringConvertible { public let description: String }

    /// `counts`: layers per virtual stage (`--pp-layers`), or nil for the balanced default.
    public init(config c: ModelConfig, stages P: Int, virtualStages v: Int, counts: [Int]? = nil) throws {
        let S = P * v
        guard S <= c.layers else {
            throw InvalidPlan(description: "--pp \(P) x --virtual-stages \(v) = \(S) stages exceed the \(c.layers) layers (every stage needs a layer)")
        }
        let sizes: [Int]
        if let counts {
            guard counts.count == S else {
                throw InvalidPlan(description: "--pp-layers lists \(counts.count) stages, but --pp \(P) x --virtual-stages \(v) = \(S)")
            }
            guard counts.allSatisfy({ $0 >= 1 }) else { throw InvalidPlan(description: "--pp-layers \(counts.map(String.init).joined(separator: ",")): every stage needs at least one layer") }
            guard counts.reduce(0, +) == c.layers else {
                throw InvalidPlan(description: "--pp-layers \(counts.map(String.init).joined(separator: ",")) sums to \(counts.reduce(0, +)), not the \(c.layers) layers")
            }
            sizes = counts
        } else {
            sizes = StagePlan.balanced(config: c, stages: S)
        }
        var ranges: [Range<Int>] = [], start = 0
        for n in sizes { ranges.append(start..<(start + n)); start += n }
        self.stages = P
        self.virtualStages = v
        self.layers = ranges
    }

    /// Contiguous split of the layers into `S` stages minimising the most expensive stage,
    /// with the LM head's cost on the last (linear partition by dynamic programming).
    static func balanced(config c: ModelConfig, stages S: Int) -> [Int] {
        let L = c.layers
        let cost = (0..<L).map { layerCost(c, $0) }
        let head = Double(2 * c.dModel * c.vocab)
        // best[s][i]: minimal max cost of splitting layers 0..<i into s stages.
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: L + 1), count: S + 1)
        var cut = [[Int]](repeating: [Int](repeating: 0, count: L + 1), count: S + 1)
        best[0][0] = 0
        for s in 1...S {
            for i in s...L {
                var sum = 0.0
                for j in stride(from: i - 1, through: s - 1, by: -1) {
                    sum += cost[j]
                    let stageCost = sum + (s == S && i == L ? head : 0)
                    let value = max(best[s - 1][j], stageCost)
                    if value < best[s][i] - 1e-9 { best[s][i] = value; cut[s][i] = j }
                }
            }
        }
        var sizes: [Int] = [], i = L
        for s in stride(from: S, through: 1, by: -1) { let j = cut[s][i]; sizes.append(i - j); i = j }
        return sizes.reversed()
    }

    /// Forward FLOPs per token of one layer (the balance only needs proportions).
    static func layerCost(_ c: ModelConfig, _ l: Int) -> Double {
        let C = Double(c.dModel), D = Double(c.headDim), T = Double(c.seqLen)
        let attention = 2 * C * D * Double(2 * c.heads + 2 * c.kvHeads) + 4 * T * C
        let mlp = 2 * Double(c.ffn.matrices) * C * Double(c.ffnHidden)
        let ffn = c.isMoE(layer: l) ? Double(c.topK) * mlp + 2 * C * Double(c.experts) : mlp
        return attention + ffn
    }

    public var virtualStageCount: Int { stages * virtualStages }

    /// Virtual stage of chunk `chunk` on rank `rank`.
    public func virtualStage(rank: Int, chunk: Int) -> Int { chunk * stages + rank }

    public func layers(rank: Int, chunk: Int) -> Range<Int> { layers[virtualStage(rank: rank, chunk: chunk)] }

    /// The `GradientUnit`s a forward of virtual stage `vs` reads, in order: the embedding on the
    /// first, its layers, the head on the last (a backward reads them in reverse).
    public func units(virtualStage vs: Int) -> [GradientUnit] {
        (vs == 0 ? [.embedding] : []) + layers[vs].map { .layer($0) } + (vs == virtualStageCount - 1 ? [.head] : [])
    }

    /// Every layer rank `rank` holds, over its chunks.
    public func heldLayers(rank: Int) -> [Int] { (0..<virtualStages).flatMap { Array(layers(rank: rank, chunk: $0)) } }

    public func holdsEmbedding(rank: Int) -> Bool { rank == 0 }
    public func holdsHead(rank: Int) -> Bool { virtualStage(rank: rank, chunk: virtualStages - 1) == virtualStageCount - 1 }

    public var description: String { layers.map { String($0.count) }.joined(separator: ",") }
}
