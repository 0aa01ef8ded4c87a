import Foundation

/// One line of the run directory's `events.jsonl`, written by the supervisor (attempt start
/// and end, failure, kill, restart, interruption by a signal) and by rank 0 of the training job (first step, checkpoint
/// saved or loaded). Only the fields an event has are written.
public struct RunEvent: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case attemptStart = "attempt_start", attemptEnd = "attempt_end", firstStep = "first_step"
        case checkpointSaved = "checkpoint_saved", checkpointLoaded = "checkpoint_loaded"
        case failure, kill, restart, interrupted
    }

    public var event: Kind
    /// Wall-clock time of the event, seconds since 1970.
    public var time: Double
    public var attempt: Int
    /// The step (first step, checkpoint saved or loaded).
    public var step: Int?
    /// The checkpoint directory loaded.
    public var path: String?
    /// How an attempt ended ("success").
    public var status: String?
    /// Why an attempt failed or was killed.
    public var reason: String?
    /// Restarts so far (restart).
    public var restarts: Int?
    /// Ranks the attempt runs on (attempt start).
    public var ranks: Int?
    /// Where the checkpoint loaded was kept ("storage" or "host memory").
    public var source: String?
    /// Emulated seconds the checkpoint load took (the slowest rank's).
    public var seconds: Double?

    public init(_ event: Kind, attempt: Int, step: Int? = nil, path: String? = nil, status: String? = nil,
                reason: String? = nil, restarts: Int? = nil, ranks: Int? = nil, source: String? = nil, seconds: Double? = nil,
                time: Double = Date().timeIntervalSince1970) {
        self.event = event; self.time = time; self.attempt = attempt; self.step = step; self.path = path
        self.status = status; self.reason = reason; self.restarts = restarts; self.ranks = ranks
        self.source = source; self.seconds = seconds
    }
}
