import Foundation
import Formats
import Plan
#if canImport(Glibc)
import Glibc
#endif

/// `moe-train supervise`, in the spirit of `torchrun --max-restarts`: runs the training job
/// under mpirun, detects a failed attempt (non-zero exit, or no heartbeat for the hang
/// timeout, after which the attempt's whole process group is killed), restarts it from the
/// last good checkpoint, and at the end describes the whole job: the surviving steps'
/// losses, the final checksum, attempts, restarts and goodput.
public final class Supervisor {
    public struct Options {
        public var np: Int
        public var maxRestarts: Int
        public var hangTimeout: Double
        public var summaryJSON: String?
        public var mpirunArgs: [String]
        public var trainingFlags: [String]
        public var binary: String
        public var runDirectory: String
        public var restartCostS: Double
        /// Send each attempt's output to `attempt-K.log` in the run directory instead of ours.
        public var quiet: Bool
        public init(np: Int, maxRestarts: Int, hangTimeout: Double, summaryJSON: String?, mpirunArgs: [String],
                    trainingFlags: [String], binary: String, runDirectory: String, restartCostS: Double, quiet: Bool = false) {
            self.np = np; self.maxRestarts = maxRestarts; self.hangTimeout = hangTimeout; self.summaryJSON = summaryJSON
            self.mpirunArgs = mpirunArgs; self.trainingFlags = trainingFlags; self.binary = binary
            self.runDirectory = runDirectory; self.restartCostS = restartCostS; self.quiet = quiet
        }
    }

    let options: Options
    let log: (String) -> Void
    let runLog: RunLog

    public init(options: Options, log: @escaping (String) -> Void) {
        self.options = options
        self.log = log
        runLog = RunLog(dir: options.runDirectory)
    }

    enum Outcome { case success, failed(String), hung }

    /// Runs attempts until one succeeds or the restarts are used up. Returns the exit status.
    public func run() throws -> Int32 {
        try FileManager.default.createDirectory(atPath: options.runDirectory, withIntermediateDirectories: true)
        // This job's accounting starts from empty logs; an earlier job's are kept aside.
        let stamp = Int(Date().timeIntervalSince1970)
        for path in [runLog.stepsPath, runLog.eventsPath] where FileManager.default.fileExists(atPath: path) {
            try FileManager.default.moveItem(atPath: path, toPath: path + ".before-\(stamp)")
        }
        let start = Date()
        var attempt = 1
        var restarts = 0
        var lastSummary: String? = nil
        var failures: [String] = []
        while true {
            let summary = options.runDirectory + "/attempt-\(attempt).json"
            var flags = options.trainingFlags + ["--attempt", String(attempt), "--summary-json", summary]
            if attempt > 1 { flags += ["--resume", "auto"] }
            let args = ["-np", String(options.np), "--bind-to", "none"] + options.mpirunArgs + [options.binary] + flags
            log("supervise: attempt \(attempt): mpirun \(args.joined(separator: " "))")
            try runLog.event(RunEvent(.attemptStart, attempt: attempt))
            let outcome = try runAttempt(args, output: options.quiet ? options.runDirectory + "/attempt-\(attempt).log" : nil)
            switch outcome {
            case .success:
                try runLog.event(RunEvent(.attemptEnd, attempt: attempt, status: "success"))
                lastSummary = summary
            case .failed(let why):
                try runLog.event(RunEvent(.failure, attempt: attempt, reason: why))
                failures.append("attempt \(attempt): \(why)")
                log("supervise: attempt \(attempt) failed: \(why)")
            case .hung:
                let why = "no heartbeat for \(options.hangTimeout) s: hung; killed its process group"
                try runLog.event(RunEvent(.failure, attempt: attempt, reason: "hang"))
                try runLog.event(RunEvent(.kill, attempt: attempt, reason: "hang timeout \(options.hangTimeout) s"))
                failures.append("attempt \(attempt): \(why)")
                log("supervise: attempt \(attempt): \(why)")
            }
            if case .success = outcome { break }
            if restarts >= options.maxRestarts {
                log("supervise: giving up after \(restarts) restart(s)")
                break
            }
            restarts += 1
            attempt += 1
            try runLog.event(RunEvent(.restart, attempt: attempt, restarts: restarts))
        }
        let wall = Date().timeIntervalSince(start)
        let report = try Goodput.compute(runDirectory: options.runDirectory, restarts: restarts, restartCostS: options.restartCostS,
                                     wallSeconds: wall)
        for line in report.table() { log(line) }
        if let path = options.summaryJSON {
            var out = JobSummary(attempts: attempt, restarts: restarts, failures: failures, succeeded: lastSummary != nil,
                                 losses: report.survivingLosses, steps: report.survivingLosses.count, goodput: report.record,
                                 runDirectory: options.runDirectory)
            if let last = lastSummary {
                // The successful attempt wrote its summary; one that does not read is an error naming it.
                out.paramChecksum = try RunSummary.read(last).paramChecksum
                out.finalLoss = report.survivingLosses.last
                out.lastAttemptSummary = last
            }
            try AtomicFile.write(JSONText.encode(out), to: path)
            log("supervise: summary written to \(path)")
        }
        return lastSummary != nil ? 0 : 1
    }

    /// One mpirun, in its own process group, watched until it exits or stops beating.
    func runAttempt(_ args: [String], output: String?) throws -> Outcome {
        let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "mpirun"
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([mpirun] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let output {
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, mpirun, &actions, &attr, argv, environ)
        guard rc == 0 else { throw UsageError("cannot start \(mpirun): \(String(cString: strerror(rc)))") }
        var lastBeat = heartbeat()
        var lastChange = Date()
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                killGroup(pid)  // leave nothing behind
                let exited = (status & 0x7f) == 0
                let code = (status >> 8) & 0xff
                if exited && code == 0 { return .success }
                return .failed(exited ? "mpirun exited with status \(code)" : "mpirun killed by signal \(status & 0x7f)")
            }
            let beat = heartbeat()
            if beat != lastBeat { lastBeat = beat; lastChange = Date() }
            if Date().timeIntervalSince(lastChange) > options.hangTimeout {
                killGroup(pid)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                return .hung
            }
            usleep(100_000)
        }
    }

    func heartbeat() -> String { (try? String(contentsOfFile: runLog.heartbeatPath, encoding: .utf8)) ?? "" }

    /// SIGTERM to the attempt's process group (mpirun forwards it to the ranks), then SIGKILL
    /// to the group and to any rank left over.
    func killGroup(_ pgid: pid_t) {
        kill(-pgid, SIGTERM)
        for _ in 0..<20 {
            if kill(-pgid, 0) != 0 { break }
            usleep(100_000)
        }
        kill(-pgid, SIGKILL)
    }
}
