/// Where a supervised job's time went (`goodput` in the job summary): see `Goodput`.
public struct GoodputRecord: Codable, Equatable, Sendable {
    /// Emulated device seconds, all attempts.
    public struct Emulated: Codable, Equatable, Sendable {
        public var usefulCompute: Double
        public var bubbleAndIdle: Double
        public var exposedCommunication: Double
        public var checkpointSave: Double
        public var lostWork: Double
        public var restart: Double
        /// Checkpoint loads of the resumed attempts (from storage or host memory).
        public var checkpointLoad: Double
        /// The share of the allocation left idle while the job ran on fewer ranks (elastic restarts).
        public var reducedCapacity: Double
        public var total: Double

        enum CodingKeys: String, CodingKey {
            case usefulCompute = "useful_compute", bubbleAndIdle = "bubble_and_idle", exposedCommunication = "exposed_communication"
            case checkpointSave = "checkpoint_save", lostWork = "lost_work", restart, checkpointLoad = "checkpoint_load", reducedCapacity = "reduced_capacity", total
        }

        public init(usefulCompute: Double, bubbleAndIdle: Double, exposedCommunication: Double, checkpointSave: Double,
                    lostWork: Double, restart: Double, checkpointLoad: Double = 0, reducedCapacity: Double = 0, total: Double) {
            self.usefulCompute = usefulCompute; self.bubbleAndIdle = bubbleAndIdle; self.exposedCommunication = exposedCommunication
            self.checkpointSave = checkpointSave; self.lostWork = lostWork; self.restart = restart; self.checkpointLoad = checkpointLoad
            self.reducedCapacity = reducedCapacity; self.total = total
        }
    }

    /// Wall-clock seconds of the whole job.
    public struct Wall: Codable, Equatable, Sendable {
        public var survivingSteps: Double
        public var lostSteps: Double
        public var startupDetectionRelaunchLoad: Double
        public var total: Double

        enum CodingKeys: String, CodingKey {
            case survivingSteps = "surviving_steps", lostSteps = "lost_steps"
            case startupDetectionRelaunchLoad = "startup_detection_relaunch_load", total
        }

        public init(survivingSteps: Double, lostSteps: Double, startupDetectionRelaunchLoad: Double, total: Double) {
            self.survivingSteps = survivingSteps; self.lostSteps = lostSteps
            self.startupDetectionRelaunchLoad = startupDetectionRelaunchLoad; self.total = total
        }
    }

    public var emulated: Emulated
    public var wall: Wall
    public var effectiveUtilization: Double
    public var lostSteps: Int
    public var modelFLOPsSurviving: Double

    enum CodingKeys: String, CodingKey {
        case emulated = "emulated_s", wall = "wall_s", effectiveUtilization = "effective_utilization", lostSteps = "lost_steps"
        case modelFLOPsSurviving = "model_flops_surviving"
    }

    public init(emulated: Emulated, wall: Wall, effectiveUtilization: Double, lostSteps: Int, modelFLOPsSurviving: Double) {
        self.emulated = emulated; self.wall = wall; self.effectiveUtilization = effectiveUtilization; self.lostSteps = lostSteps
        self.modelFLOPsSurviving = modelFLOPsSurviving
    }
}
