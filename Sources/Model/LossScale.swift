/// How the losses of one micro-batch are weighted inside the step's total loss.
///
/// The step loss is the mean LM loss over all `tokens` of the global batch, plus for each
/// MoE layer `aux_coef` x (mean over the global batch's `sequences` of the per-sequence
/// load-balancing loss) and `z_coef` x (mean over tokens of the squared router log-sum-exp).
/// Backward passes scale their seed gradients by these, so that gradients accumulated over
/// micro-batches (and later summed over data-parallel ranks) are those of the step loss.
public struct LossScale: Sendable {
    public let tokens: Int
    public let sequences: Int
    public init(tokens: Int, sequences: Int) { self.tokens = tokens; self.sequences = sequences }
}
