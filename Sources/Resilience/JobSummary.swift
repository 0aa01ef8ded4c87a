import Formats

/// The supervisor's summary of a whole job (`supervise --summary-json FILE`): attempts,
/// restarts, the surviving steps' losses, goodput and, when an attempt succeeded, the last
/// attempt's checksum and final loss and where its own summary is (those three keys are
/// written only then), the supervisor's exit status and, short of success, why it stopped.
public struct JobSummary: Codable, Sendable {
    public var attempts: Int
    public var restarts: Int
    public var failures: [String]
    public var succeeded: Bool
    /// One per surviving step, in order (a non-finite loss is null).
    @NullIfNotFinite public var losses: [Double]
    public var steps: Int
    public var goodput: GoodputRecord
    public var runDirectory: String
    public var paramChecksum: String?
    /// Present when an attempt succeeded; null if that loss is not finite.
    public var finalLoss: Double?
    public var lastAttemptSummary: String?
    /// The supervisor's exit status (`ExitStatus`: 0, 2, 3 or 4).
    public var exitStatus = 0
    /// Why the job stopped short of success, in one sentence (absent on success).
    public var stoppedBecause: String?

    enum CodingKeys: String, CodingKey {
        case attempts, restarts, failures, succeeded, losses, steps, goodput, runDirectory = "run_directory"
        case paramChecksum = "param_checksum", finalLoss = "final_loss", lastAttemptSummary = "last_attempt_summary"
        case exitStatus = "exit_status", stoppedBecause = "stopped_because"
    }

    public init(attempts: Int, restarts: Int, failures: [String], succeeded: Bool, losses: [Double], steps: Int,
                goodput: GoodputRecord, runDirectory: String, paramChecksum: String? = nil, finalLoss: Double? = nil,
                lastAttemptSummary: String? = nil) {
        self.attempts = attempts; self.restarts = restarts; self.failures = failures; self.succeeded = succeeded
        self.losses = losses; self.steps = steps; self.goodput = goodput; self.runDirectory = runDirectory
        self.paramChecksum = paramChecksum; self.finalLoss = finalLoss; self.lastAttemptSummary = lastAttemptSummary
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attempts = try c.decode(Int.self, forKey: .attempts)
        restarts = try c.decode(Int.self, forKey: .restarts)
        failures = try c.decode([String].self, forKey: .failures)
        succeeded = try c.decode(Bool.self, forKey: .succeeded)
        _losses = try c.decode(NullIfNotFinite<[Double]>.self, forKey: .losses)
        steps = try c.decode(Int.self, forKey: .steps)
        goodput = try c.decode(GoodputRecord.self, forKey: .goodput)
        runDirectory = try c.decode(String.self, forKey: .runDirectory)
        paramChecksum = try c.decodeIfPresent(String.self, forKey: .paramChecksum)
        // decodeIfPresent would read null (a non-finite loss) as absent.
        finalLoss = c.contains(.finalLoss) ? try c.decode(NullIfNotFinite<Double>.self, forKey: .finalLoss).wrappedValue : nil
        lastAttemptSummary = try c.decodeIfPresent(String.self, forKey: .lastAttemptSummary)
        exitStatus = try c.decode(Int.self, forKey: .exitStatus)
        stoppedBecause = try c.decodeIfPresent(String.self, forKey: .stoppedBecause)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(restarts, forKey: .restarts)
        try c.encode(failures, forKey: .failures)
        try c.encode(succeeded, forKey: .succeeded)
        try c.encode(_losses, forKey: .losses)
        try c.encode(steps, forKey: .steps)
        try c.encode(goodput, forKey: .goodput)
        try c.encode(runDirectory, forKey: .runDirectory)
        try c.encodeIfPresent(paramChecksum, forKey: .paramChecksum)
        try c.encodeIfPresent(finalLoss.map(NullIfNotFinite.init(wrappedValue:)), forKey: .finalLoss)
        try c.encodeIfPresent(lastAttemptSummary, forKey: .lastAttemptSummary)
        try c.encode(exitStatus, forKey: .exitStatus)
        try c.encodeIfPresent(stoppedBecause, forKey: .stoppedBecause)
    }
}
