import Foundation

/// The exit statuses of every `moe-train` process (a rank, `supervise`, any subcommand), one
/// table for the binary and for the supervisor that reads them back. mpirun exits with the
/// status of the first rank that failed (128 + N when a rank died of signal N).
public enum ExitStatus: Int32, Sendable, CaseIterable {
    /// Done.
    case success = 0
    /// A rank failed while running (an I/O error, a failed check, a crash): a restart from the
    /// last checkpoint may help, so `supervise` retries.
    case failure = 1
    /// Bad input: a flag, a config key, a file. One message; never retried.
    case badInput = 2
    /// `supervise` gave up: its restarts are used up, or the failure is one no restart can fix
    /// (out of disk space). The message names the last failure.
    case gaveUp = 3
    /// Stopped by SIGINT, SIGTERM or SIGHUP (the supervisor stops its job's ranks first).
    case interrupted = 4
    /// A rank could not write: no space left on the device (or over quota). Not retried.
    case outOfSpace = 5
    /// Training went non-finite: more consecutive steps than `--max-skipped-steps` had a
    /// non-finite loss or gradient norm. Retried from the last checkpoint.
    case nonFinite = 6

    /// What the status means, in a few words, for messages.
    public var meaning: String {
        switch self {
        case .success: return "success"
        case .failure: return "a rank failed"
        case .badInput: return "bad input"
        case .gaveUp: return "gave up"
        case .interrupted: return "interrupted by a signal"
        case .outOfSpace: return "out of disk space"
        case .nonFinite: return "training went non-finite"
        }
    }
}

/// A failure that ends the process with a chosen status and one sentence.
public struct ExitFailure: Error, CustomStringConvertible {
    public let status: ExitStatus
    public let description: String
    public init(_ status: ExitStatus, _ description: String) { self.status = status; self.description = description }
}
