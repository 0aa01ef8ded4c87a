import Model

/// What one optimizer step produced, as logged and summarised.
public struct StepRecord: Sendable {
    public let step: Int
    public let loss: Double          // mean LM loss over the global batch's tokens
    public let aux: Double           // mean over MoE layers and sequences of the balance loss (1 = balanced)
    public let zLoss: Double         // mean over MoE layers and tokens of lse^2
    public let gradNorm: Double      // global L2 norm before clipping
    public let lr: Double
    public let load: [[Int]]         // kept assignments per (layer, expert)
    public let dropped: Int
    public let assignments: Int
    public let skipped: Bool         // non-finite gradients: the update was skipped
    public let wallSeconds: Double
    public let tokens: Int
    public let timing: StepTiming
    /// Largest activation footprint of one micro-batch on this rank, in elements.
    public let peakActivationFloats: Int

    public var droppedFraction: Double { assignments == 0 ? 0 : Double(dropped) / Double(assignments) }

    /// The most loaded expert's assignments over the mean expert's, per MoE layer, and overall:
    /// the most imbalanced layer's figure (the layer whose busiest expert holds up the others most).
    public func imbalance(moeLayers: [Int]) -> (overall: Double, perLayer: [Double])? {
        guard !moeLayers.isEmpty else { return nil }
        let perLayer = moeLayers.map { l -> Double in
            let v = load[l], mean = Double(v.reduce(0, +)) / Double(max(v.count, 1))
            return mean > 0 ? Double(v.max() ?? 0) / mean : 1
        }
        return (perLayer.max()!, perLayer)
    }

    /// Min, mean and max assignments per expert over the MoE layers.
    public func loadSummary(moeLayers: [Int]) -> (min: Int, mean: Double, max: Int)? {
        let values = moeLayers.flatMap { load[$0] }
        guard !values.isEmpty else { return nil }
        return (values.min()!, Double(values.reduce(0, +)) / Double(values.count), values.max()!)
    }
}

/// A step's emulated figures (all ranks combined).
public struct StepTiming: Sendable {
    /// From the earliest rank's start to the latest rank's end of the step.
    public let stepTime: Double
    /// Mean over ranks of their compute, communication and idle time in the step.
    public let compute: Double
    public let communication: Double
    public let idle: Double
    /// Mean over ranks of the time spent saving checkpoints in the step.
    public let checkpoint: Double
    /// Per pipeline stage: idle share of the pipeline phase, mean over the stage's ranks.
    public let bubblePerStage: [Double]
    /// From the first pipeline action's start to the last one's end, over all ranks.
    public let pipelinePhase: Double
    /// The event simulator's bubble per stage for the same schedule and measured durations.
    public let simulatedBubblePerStage: [Double]
    public let mfu: Double
    public let hfu: Double
    public var bubble: Double { bubblePerStage.reduce(0, +) / Double(max(bubblePerStage.count, 1)) }
}

/// One rank's figures of a step, gathered from every rank (as doubles, one row per rank) to
/// build the step's `StepTiming`.
struct RankStepFigures: Equatable {
    var stage: Int
    /// Emulated time at which the rank started and ended the step.
    var start: Double
    var end: Double
    /// Its first pipeline action's start and its last one's end.
    var pipelineStart: Double
    var pipelineEnd: Double
    /// Compute and communication within the pipeline phase.
    var pipelineWork: Double
    /// Compute, communication, idle and checkpoint-saving time in the whole step.
    var compute: Double
    var communication: Double
    var idle: Double
    var executedFLOPs: Double
    var checkpoint: Double

    static let width = 11

    var packed: [Double] {
        [Double(stage), start, end, pipelineStart, pipelineEnd, pipelineWork, compute, communication, idle, executedFLOPs, checkpoint]
    }

    init(stage: Int, start: Double, end: Double, pipelineStart: Double, pipelineEnd: Double, pipelineWork: Double,
         compute: Double, communication: Double, idle: Double, executedFLOPs: Double, checkpoint: Double) {
        self.stage = stage; self.start = start; self.end = end; self.pipelineStart = pipelineStart; self.pipelineEnd = pipelineEnd
        self.pipelineWork = pipelineWork; self.compute = compute; self.communication = communication; self.idle = idle
        self.executedFLOPs = executedFLOPs; self.checkpoint = checkpoint
    }

    init(packed r: ArraySlice<Double>) {
        precondition(r.count == Self.width, "a rank's step figures are \(Self.width) numbers, got \(r.count)")
        let v = Array(r)
        self.init(stage: Int(v[0]), start: v[1], end: v[2], pipelineStart: v[3], pipelineEnd: v[4], pipelineWork: v[5],
                  compute: v[6], communication: v[7], idle: v[8], executedFLOPs: v[9], checkpoint: v[10])
    }

    /// The rows of an all-gather of every rank's `packed`, in rank order.
    static func unpack(_ all: [Double], ranks: Int) -> [RankStepFigures] {
        precondition(all.count == ranks * width, "expected \(ranks) x \(width) step figures, got \(all.count)")
        return (0..<ranks).map { RankStepFigures(packed: all[($0 * width)..<(($0 + 1) * width)]) }
    }
}
