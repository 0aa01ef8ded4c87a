/// One line of the run directory's `steps.jsonl`: a completed step of one attempt, as rank 0
/// of the training job wrote it and the supervisor's goodput accounting reads it.
public struct StepLogLine: Codable, Sendable {
    /// The step's emulated seconds: from the earliest rank's start to the latest rank's end,
    /// and the mean over ranks of compute, communication, idle and checkpoint-saving time.
    public struct Emulated: Codable, Equatable, Sendable {
        public var step: Double
        public var compute: Double
        public var communication: Double
        public var idle: Double
        public var checkpoint: Double

        public init(step: Double, compute: Double, communication: Double, idle: Double, checkpoint: Double) {
            self.step = step; self.compute = compute; self.communication = communication; self.idle = idle
            self.checkpoint = checkpoint
        }
    }

    public var attempt: Int
    public var step: Int
    @NullIfNotFinite public var loss: Double
    public var skipped: Bool
    public var emulated: Emulated
    /// Wall-clock seconds of the step.
    public var wallSeconds: Double
    /// Model FLOPs of the step (tokens x FLOPs per token).
    public var modelFLOPs: Double
    public var ranks: Int
    /// Peak FLOP/s of one emulated device.
    public var peakFLOPS: Double
    /// The most loaded expert's assignments over the mean: the most imbalanced MoE layer's, and
    /// per MoE layer (absent without MoE layers, and in logs written before these were recorded).
    public var expertImbalance: Double?
    public var expertImbalancePerLayer: [Double]?

    enum CodingKeys: String, CodingKey {
        case attempt, step, loss, skipped, emulated, ranks
        case wallSeconds = "wall_s", modelFLOPs = "model_flops", peakFLOPS = "peak_flops"
        case expertImbalance = "expert_imbalance", expertImbalancePerLayer = "expert_imbalance_per_layer"
    }

    public init(attempt: Int, step: Int, loss: Double, skipped: Bool, emulated: Emulated, wallSeconds: Double,
                modelFLOPs: Double, ranks: Int, peakFLOPS: Double, expertImbalance: Double? = nil,
                expertImbalancePerLayer: [Double]? = nil) {
        self.attempt = attempt; self.step = step; self.loss = loss; self.skipped = skipped; self.emulated = emulated
        self.wallSeconds = wallSeconds; self.modelFLOPs = modelFLOPs; self.ranks = ranks; self.peakFLOPS = peakFLOPS
        self.expertImbalance = expertImbalance; self.expertImbalancePerLayer = expertImbalancePerLayer
    }
}
