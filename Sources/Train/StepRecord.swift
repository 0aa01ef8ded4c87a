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

    public var droppedFraction: Double { assignments == 0 ? 0 : Double(dropped) / Double(assignments) }

    /// Min, mean and max assignments per expert over the MoE layers.
    public func loadSummary(moeLayers: [Int]) -> (min: Int, mean: Double, max: Int)? {
        let values = moeLayers.flatMap { load[$0] }
        guard !values.isEmpty else { return nil }
        return (values.min()!, Double(values.reduce(0, +)) / Double(values.count), values.max()!)
    }
}
