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
