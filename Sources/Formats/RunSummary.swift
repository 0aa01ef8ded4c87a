/// The machine-readable result of a training run (`--summary-json FILE`), written by rank 0 of
/// the trainer and read by the supervisor (the last attempt's checksum) and by
/// compare-schedules (its table and `compare.json`). The keys are the JSON's snake_case names.
public struct RunSummary: Codable, Sendable {
    /// One collective kind on one group (`comm_bytes["all-reduce/tp"]`): rank 0's bytes and
    /// calls, and those of all ranks together. Training traffic only.
    public struct CommBytes: Codable, Equatable, Sendable {
        public var bytes: Int
        public var calls: Int
        public var bytesAllRanks: Int
        public var callsAllRanks: Int

        enum CodingKeys: String, CodingKey {
            case bytes, calls, bytesAllRanks = "bytes_all_ranks", callsAllRanks = "calls_all_ranks"
        }

        public init(bytes: Int, calls: Int, bytesAllRanks: Int, callsAllRanks: Int) {
            self.bytes = bytes; self.calls = calls; self.bytesAllRanks = bytesAllRanks; self.callsAllRanks = callsAllRanks
        }
    }

    /// Kept assignments per expert of each MoE layer, over the run and in the last step.
    public struct ExpertLoad: Codable, Sendable {
        public var moeLayers: [Int]
        public var perLayerTotal: [[Int]]
        public var perLayerLastStep: [[Int]]
        public var droppedFraction: Double
        /// Null when the experts have no capacity limit.
        @NullIfNil public var capacityPerSequence: Int?
        /// Per step: the most loaded expert's assignments over the mean expert's, per MoE layer
        /// (`imbalancePerLayerPerStep[step][i]` for layer `moeLayers[i]`) and overall (the most
        /// imbalanced layer's, `imbalancePerStep`); 1 is perfectly balanced.
        public var imbalancePerStep: [Double]
        public var imbalancePerLayerPerStep: [[Double]]

        enum CodingKeys: String, CodingKey {
            case moeLayers = "moe_layers", perLayerTotal = "per_layer_total", perLayerLastStep = "per_layer_last_step"
            case droppedFraction = "dropped_fraction", capacityPerSequence = "capacity_per_sequence"
            case imbalancePerStep = "imbalance_per_step", imbalancePerLayerPerStep = "imbalance_per_layer_per_step"
        }

        public init(moeLayers: [Int], perLayerTotal: [[Int]], perLayerLastStep: [[Int]], droppedFraction: Double,
                    capacityPerSequence: Int?, imbalancePerStep: [Double] = [], imbalancePerLayerPerStep: [[Double]] = []) {
            self.moeLayers = moeLayers; self.perLayerTotal = perLayerTotal; self.perLayerLastStep = perLayerLastStep
            self.droppedFraction = droppedFraction; self.capacityPerSequence = capacityPerSequence
            self.imbalancePerStep = imbalancePerStep; self.imbalancePerLayerPerStep = imbalancePerLayerPerStep
        }
    }

    /// The model the clock charged (`time_as`), when it is not the executed one: its dimensions,
    /// sizes and tokens per step (what MFU, tokens/s and memory refer to).
    public struct TimedModel: Codable, Equatable, Sendable {
        public var dModel, ffnHidden, heads, kvHeads, seqLen, vocab, microBatchSize, globalBatch: Int
        public var totalParams, activeParams, tokensPerStep: Int

        enum CodingKeys: String, CodingKey {
            case dModel = "d_model", ffnHidden = "ffn_hidden", heads, kvHeads = "kv_heads", seqLen = "seq_len", vocab
            case microBatchSize = "micro_batch_size", globalBatch = "global_batch", totalParams = "total_params"
            case activeParams = "active_params", tokensPerStep = "tokens_per_step"
        }

        public init(dModel: Int, ffnHidden: Int, heads: Int, kvHeads: Int, seqLen: Int, vocab: Int, microBatchSize: Int,
                    globalBatch: Int, totalParams: Int, activeParams: Int, tokensPerStep: Int) {
            self.dModel = dModel; self.ffnHidden = ffnHidden; self.heads = heads; self.kvHeads = kvHeads; self.seqLen = seqLen
            self.vocab = vocab; self.microBatchSize = microBatchSize; self.globalBatch = globalBatch
            self.totalParams = totalParams; self.activeParams = activeParams; self.tokensPerStep = tokensPerStep
        }
    }

    /// Emulated seconds of all steps: the mean over ranks of each kind, and the step times' sum.
    public struct TimeBreakdown: Codable, Equatable, Sendable {
        public var compute: Double
        public var communication: Double
        public var idle: Double
        public var total: Double

        public init(compute: Double, communication: Double, idle: Double, total: Double) {
            self.compute = compute; self.communication = communication; self.idle = idle; self.total = total
        }
    }

    /// Per rank, over its training loop: thread CPU seconds inside compute regions (without
    /// the communication inside them), the process's CPU seconds in all (compute, and MPI's
    /// polling, yields and the emulator's bookkeeping), wall seconds inside communication
    /// (collectives and waits), the loop's wall seconds, and peak resident memory (wall-clock
    /// figures of this machine, not of the emulated device); and the elements of the executed
    /// fp32 buffers: parameters, the gradients' peak (the whole buffer, or under ZeRO-2 the
    /// shards and the buckets open at once) and the Adam moments.
    public struct Resources: Codable, Equatable, Sendable {
        public var computeCPUSecondsPerRank: [Double]
        public var cpuSecondsPerRank: [Double]
        public var communicationWallSecondsPerRank: [Double]
        public var wallSecondsPerRank: [Double]
        public var rssBytesPerRank: [Double]
        public var parameterFloatsPerRank: [Double]?
        public var gradientFloatsPeakPerRank: [Double]?
        public var optimizerFloatsPerRank: [Double]?

        enum CodingKeys: String, CodingKey {
            case computeCPUSecondsPerRank = "compute_cpu_s_per_rank", cpuSecondsPerRank = "cpu_s_per_rank"
            case communicationWallSecondsPerRank = "comm_wall_s_per_rank", wallSecondsPerRank = "wall_s_per_rank"
            case rssBytesPerRank = "rss_bytes_per_rank", parameterFloatsPerRank = "parameter_floats_per_rank"
            case gradientFloatsPeakPerRank = "gradient_floats_peak_per_rank", optimizerFloatsPerRank = "optimizer_floats_per_rank"
        }

        public init(computeCPUSecondsPerRank: [Double], cpuSecondsPerRank: [Double], communicationWallSecondsPerRank: [Double],
                    wallSecondsPerRank: [Double], rssBytesPerRank: [Double], parameterFloatsPerRank: [Double]? = nil,
                    gradientFloatsPeakPerRank: [Double]? = nil, optimizerFloatsPerRank: [Double]? = nil) {
            self.computeCPUSecondsPerRank = computeCPUSecondsPerRank; self.cpuSecondsPerRank = cpuSecondsPerRank
            self.communicationWallSecondsPerRank = communicationWallSecondsPerRank; self.wallSecondsPerRank = wallSecondsPerRank
            self.rssBytesPerRank = rssBytesPerRank
            self.parameterFloatsPerRank = parameterFloatsPerRank; self.gradientFloatsPeakPerRank = gradientFloatsPeakPerRank
            self.optimizerFloatsPerRank = optimizerFloatsPerRank
        }
    }

    /// The memory plan of one role (ranks that hold the same), in emulated bytes, with the
    /// activations measured in the run and the device's capacity.
    public struct MemoryRole: Codable, Equatable, Sendable {
        public var role: String
        public var ranks: [Int]
        public var parameters: Double
        public var gradients: Double
        public var optimizerState: Double
        public var activations: Double
        public var communication: Double
        public var total: Double
        public var activationsMeasured: Double
        public var capacity: Double

        enum CodingKeys: String, CodingKey {
            case role, ranks, parameters, gradients, optimizerState = "optimizer_state", activations, communication, total
            case activationsMeasured = "activations_measured", capacity
        }

        public init(role: String, ranks: [Int], parameters: Double, gradients: Double, optimizerState: Double,
                    activations: Double, communication: Double, total: Double, activationsMeasured: Double, capacity: Double) {
            self.role = role; self.ranks = ranks; self.parameters = parameters; self.gradients = gradients
            self.optimizerState = optimizerState; self.activations = activations; self.communication = communication
            self.total = total; self.activationsMeasured = activationsMeasured; self.capacity = capacity
        }
    }

    // Layout and schedule.
    public var worldSize: Int
    public var tp: Int
    public var pp: Int
    public var dp: Int
    public var ep: Int
    public var zero: Int
    public var schedule: String
    public var virtualStages: Int
    public var ppLayers: [Int]
    // Per step (losses and gradient norms can be non-finite: null in the JSON).
    public var steps: Int
    @NullIfNotFinite public var losses: [Double]
    @NullIfNotFinite public var auxLosses: [Double]
    @NullIfNotFinite public var gradNorms: [Double]
    public var learningRates: [Double]
    public var skippedSteps: [Int]
    @NullIfNotFinite public var finalLoss: Double
    /// Null for data without a known floor (a text file).
    @NullIfNil public var entropyFloor: Double?
    public var paramChecksum: String
    // Model, batch and data.
    public var totalParams: Int
    public var activeParams: Int
    public var localParams: Int
    public var optimizerStateBytes: Double
    public var globalBatch: Int
    public var microBatchSize: Int
    public var microBatches: Int
    public var seqLen: Int
    public var seed: UInt64
    public var data: String
    public var expertLoad: ExpertLoad
    public var commBytes: [String: CommBytes]
    // The emulated device and its figures.
    public var device: String
    public var clock: String
    public var precision: String
    public var link: String
    public var gpusPerNode: Int
    /// Null when the clock charged the executed model.
    @NullIfNil public var timedAs: TimedModel?
    public var emulatedStepTimesS: [Double]
    public var emulatedStepTimeS: Double
    public var tokensPerSEmulated: Double
    public var mfu: Double
    public var hfu: Double
    public var bubbleFractionPerStage: [Double]
    public var bubbleFraction: Double
    public var bubbleFractionSimulatedPerStage: [Double]
    public var bubbleFractionSimulated: Double
    /// The closed form (ZB-H1's with measured durations, which can be 0/0).
    @NullIfNotFinite public var bubbleFractionClosedForm: Double
    public var pipelinePhaseS: Double
    public var peakActivationBytesPerStage: [Double]
    public var microbatchActivationBytes: Double
    public var exposedCommFraction: Double
    public var timeBreakdownS: TimeBreakdown
    public var modelFLOPsPerToken: Double
    public var memoryBytes: [MemoryRole]
    // Wall clock, on this machine.
    public var wallTimeS: Double
    public var tokensPerSWall: Double
    public var resources: Resources
    /// What resuming found and hashed (set by the launcher; absent from older summaries).
    public var resume: Resume?

    /// The checkpoint a run continued from (null when none), the candidates hashed to find
    /// it, their listed shard bytes, and the bytes rank 0 and all ranks hashed.
    public struct Resume: Codable, Sendable {
        @NullIfNil public var checkpoint: String?
        public var step: Int
        public var candidatesHashed: Int
        public var shardBytes: Int
        public var bytesHashed: Int
        public var bytesHashedAllRanks: Int
        /// The checksum of the parameters as loaded (before any step), in the single-rank
        /// layout: `export` of the checkpoint gives the same, whatever layout read it.
        @NullIfNil public var loadedParamChecksum: String?
        /// Where the checkpoint was kept ("storage" or "host memory"), and the emulated
        /// seconds its load took (the slowest rank's).
        @NullIfNil public var source: String?
        public var loadSeconds: Double

        enum CodingKeys: String, CodingKey {
            case checkpoint, step, candidatesHashed = "candidates_hashed", shardBytes = "shard_bytes"
            case bytesHashed = "bytes_hashed", bytesHashedAllRanks = "bytes_hashed_all_ranks", loadedParamChecksum = "loaded_param_checksum"
            case source, loadSeconds = "load_seconds"
        }

        public init(checkpoint: String?, step: Int, candidatesHashed: Int, shardBytes: Int, bytesHashed: Int, bytesHashedAllRanks: Int,
                    loadedParamChecksum: String? = nil, source: String? = nil, loadSeconds: Double = 0) {
            self.checkpoint = checkpoint; self.step = step; self.candidatesHashed = candidatesHashed
            self.shardBytes = shardBytes; self.bytesHashed = bytesHashed; self.bytesHashedAllRanks = bytesHashedAllRanks
            self.loadedParamChecksum = loadedParamChecksum; self.source = source; self.loadSeconds = loadSeconds
        }
    }

    enum CodingKeys: String, CodingKey {
        case worldSize = "world_size", tp, pp, dp, ep, zero, schedule, virtualStages = "virtual_stages", ppLayers = "pp_layers"
        case steps, losses, auxLosses = "aux_losses", gradNorms = "grad_norms", learningRates = "learning_rates"
        case skippedSteps = "skipped_steps", finalLoss = "final_loss", entropyFloor = "entropy_floor", paramChecksum = "param_checksum"
        case totalParams = "total_params", activeParams = "active_params", localParams = "local_params"
        case optimizerStateBytes = "optimizer_state_bytes", globalBatch = "global_batch", microBatchSize = "micro_batch_size"
        case microBatches = "micro_batches", seqLen = "seq_len", seed, data, expertLoad = "expert_load", commBytes = "comm_bytes"
        case device, clock, precision, link, gpusPerNode = "gpus_per_node", timedAs = "timed_as"
        case emulatedStepTimesS = "emulated_step_times_s", emulatedStepTimeS = "emulated_step_time_s"
        case tokensPerSEmulated = "tokens_per_s_emulated", mfu, hfu
        case bubbleFractionPerStage = "bubble_fraction_per_stage", bubbleFraction = "bubble_fraction"
        case bubbleFractionSimulatedPerStage = "bubble_fraction_simulated_per_stage", bubbleFractionSimulated = "bubble_fraction_simulated"
        case bubbleFractionClosedForm = "bubble_fraction_closed_form", pipelinePhaseS = "pipeline_phase_s"
        case peakActivationBytesPerStage = "peak_activation_bytes_per_stage", microbatchActivationBytes = "microbatch_activation_bytes"
        case exposedCommFraction = "exposed_comm_fraction", timeBreakdownS = "time_breakdown_s"
        case modelFLOPsPerToken = "model_flops_per_token", memoryBytes = "memory_bytes"
        case wallTimeS = "wall_time_s", tokensPerSWall = "tokens_per_s_wall", resources, resume
    }

    public init(worldSize: Int, tp: Int, pp: Int, dp: Int, ep: Int, zero: Int, schedule: String, virtualStages: Int, ppLayers: [Int],
                steps: Int, losses: [Double], auxLosses: [Double], gradNorms: [Double], learningRates: [Double], skippedSteps: [Int],
                finalLoss: Double, entropyFloor: Double?, paramChecksum: String,
                totalParams: Int, activeParams: Int, localParams: Int, optimizerStateBytes: Double,
                globalBatch: Int, microBatchSize: Int, microBatches: Int, seqLen: Int, seed: UInt64, data: String,
                expertLoad: ExpertLoad, commBytes: [String: CommBytes],
                device: String, clock: String, precision: String, link: String, gpusPerNode: Int,
                emulatedStepTimesS: [Double], emulatedStepTimeS: Double, tokensPerSEmulated: Double, mfu: Double, hfu: Double,
                bubbleFractionPerStage: [Double], bubbleFraction: Double,
                bubbleFractionSimulatedPerStage: [Double], bubbleFractionSimulated: Double, bubbleFractionClosedForm: Double,
                pipelinePhaseS: Double, peakActivationBytesPerStage: [Double], microbatchActivationBytes: Double,
                exposedCommFraction: Double, timeBreakdownS: TimeBreakdown, modelFLOPsPerToken: Double, memoryBytes: [MemoryRole],
                wallTimeS: Double, tokensPerSWall: Double, resources: Resources, timedAs: TimedModel? = nil) {
        self.timedAs = timedAs
        self.worldSize = worldSize; self.tp = tp; self.pp = pp; self.dp = dp; self.ep = ep; self.zero = zero
        self.schedule = schedule; self.virtualStages = virtualStages; self.ppLayers = ppLayers
        self.steps = steps; self.losses = losses; self.auxLosses = auxLosses; self.gradNorms = gradNorms
        self.learningRates = learningRates; self.skippedSteps = skippedSteps; self.finalLoss = finalLoss
        self.entropyFloor = entropyFloor; self.paramChecksum = paramChecksum
        self.totalParams = totalParams; self.activeParams = activeParams; self.localParams = localParams
        self.optimizerStateBytes = optimizerStateBytes
        self.globalBatch = globalBatch; self.microBatchSize = microBatchSize; self.microBatches = microBatches
        self.seqLen = seqLen; self.seed = seed; self.data = data
        self.expertLoad = expertLoad; self.commBytes = commBytes
        self.device = device; self.clock = clock; self.precision = precision; self.link = link; self.gpusPerNode = gpusPerNode
        self.emulatedStepTimesS = emulatedStepTimesS; self.emulatedStepTimeS = emulatedStepTimeS
        self.tokensPerSEmulated = tokensPerSEmulated; self.mfu = mfu; self.hfu = hfu
        self.bubbleFractionPerStage = bubbleFractionPerStage; self.bubbleFraction = bubbleFraction
        self.bubbleFractionSimulatedPerStage = bubbleFractionSimulatedPerStage; self.bubbleFractionSimulated = bubbleFractionSimulated
        self.bubbleFractionClosedForm = bubbleFractionClosedForm
        self.pipelinePhaseS = pipelinePhaseS; self.peakActivationBytesPerStage = peakActivationBytesPerStage
        self.microbatchActivationBytes = microbatchActivationBytes; self.exposedCommFraction = exposedCommFraction
        self.timeBreakdownS = timeBreakdownS; self.modelFLOPsPerToken = modelFLOPsPerToken; self.memoryBytes = memoryBytes
        self.wallTimeS = wallTimeS; self.tokensPerSWall = tokensPerSWall; self.resources = resources
    }

    /// Reads a summary file; a missing or renamed key is an error naming the file and the key.
    public static func read(_ path: String) throws -> RunSummary { try JSONText.read(RunSummary.self, from: path) }
}
