import Foundation
import Formats
import Plan
import Synchronization
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
        /// Elastic restarts: the fewest ranks a restart may run on (nil: always `np`).
        public var minNP: Int?
        /// An Open MPI hostfile, read again before every attempt: its slots bound the world.
        public var hostfile: String?
        /// Whether the training flags plan on a world of that many ranks (elastic restarts).
        public var plans: (Int) -> Bool
        public init(np: Int, maxRestarts: Int, hangTimeout: Double, summaryJSON: String?, mpirunArgs: [String],
                    trainingFlags: [String], binary: String, runDirectory: String, restartCostS: Double, quiet: Bool = false,
                    minNP: Int? = nil, hostfile: String? = nil, plans: @escaping (Int) -> Bool = { _ in true }) {
            self.np = np; self.maxRestarts = maxRestarts; self.hangTimeout = hangTimeout; self.summaryJSON = summaryJSON
            self.mpirunArgs = mpirunArgs; self.trainingFlags = trainingFlags; self.binary = binary
            self.runDirectory = runDirectory; self.restartCostS = restartCostS; self.quiet = quiet
            self.minNP = minNP; self.hostfile = hostfile; self.plans = plans
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

    /// How one attempt ended.
    enum Outcome {
        case success
        /// mpirun exited with `status` (or died of `signal`); `message` is the last error line
        /// the job printed, if any.
        case failed(status: Int32?, signal: Int32?, message: String?)
        case hung
        /// The supervisor received `signal` and stopped the attempt.
        case interrupted(signal: Int32)
    }

    /// How the whole job ended: its exit status and, unless it succeeded, one sentence why.
    public struct Result {
        public let status: ExitStatus
        public let message: String
    }

    /// Runs attempts until one succeeds, the restarts are used up, a failure no restart can
    /// fix happens, or a signal arrives. Writes the goodput table and the summary in every case.
    public func run() throws -> Result {
        try FileManager.default.createDirectory(atPath: options.runDirectory, withIntermediateDirectories: true)
        let lock = try RunDirectoryLock(runDirectory: options.runDirectory, log: log)
        defer { lock.release() }
        Self.catchSignals()
        // This job's accounting starts from empty logs; an earlier job's are kept aside.
        let stamp = Int(Date().timeIntervalSince1970)
        for path in [runLog.stepsPath, runLog.eventsPath] where FileManager.default.fileExists(atPath: path) {
            // Two jobs may start within one second: never overwrite an earlier job's logs.
            var aside = path + ".before-\(stamp)", n = 1
            while FileManager.default.fileExists(atPath: aside) { n += 1; aside = path + ".before-\(stamp)-\(n)" }
            try FileManager.default.moveItem(atPath: path, toPath: aside)
        }
        let start = Date()
        var attempt = 1
        var restarts = 0
        var lastSummary: String? = nil
        var failures: [String] = []
        var result = Result(status: .success, message: "")
        while true {
            if let sig = Self.pendingSignal {
                result = Result(status: .interrupted, message: "interrupted by \(Self.name(of: sig)) before attempt \(attempt) started")
                try runLog.event(RunEvent(.interrupted, attempt: attempt, reason: Self.name(of: sig)))
                break
            }
            let chosen = chooseWorld()
            guard case .success(let world) = chosen else {
                if case .failure(let why) = chosen { result = Result(status: .gaveUp, message: "attempt \(attempt) cannot start: \(why.description)") }
                break
            }
            let summary = options.runDirectory + "/attempt-\(attempt).json"
            var flags = options.trainingFlags + ["--attempt", String(attempt), "--summary-json", summary]
            if attempt > 1 { flags += ["--resume", "auto"] }
            // -x: ranks on other hosts learn of their supervisor too (they cannot watch it, but
            // the variable is the same everywhere).
            let args = ["-np", String(world), "--bind-to", "none", "-x", Lifeline.supervisorVariable]
                + (options.hostfile.map { ["--hostfile", $0] } ?? []) + options.mpirunArgs + [options.binary] + flags
            log("supervise: attempt \(attempt): mpirun \(args.joined(separator: " "))")
            try runLog.event(RunEvent(.attemptStart, attempt: attempt, ranks: world))
            let outcome = try runAttempt(args, output: options.quiet ? options.runDirectory + "/attempt-\(attempt).log" : nil)
            var retry = true
            switch outcome {
            case .success:
                try runLog.event(RunEvent(.attemptEnd, attempt: attempt, status: "success"))
                lastSummary = summary
            case .failed(let status, let signal, let message):
                let why = Self.describe(status: status, signal: signal, message: message)
                try runLog.event(RunEvent(.failure, attempt: attempt, reason: why))
                failures.append("attempt \(attempt): \(why)")
                log("supervise: attempt \(attempt) failed: \(why)")
                switch status.flatMap(ExitStatus.init(rawValue:)) {
                case .badInput?:
                    retry = false
                    result = Result(status: .badInput, message: "attempt \(attempt) was refused as bad input, which no restart can fix: \(why)")
                case .outOfSpace?:
                    retry = false
                    result = Result(status: .gaveUp, message: "attempt \(attempt) ran out of disk space, which no restart can fix: \(why)")
                default:
                    break
                }
            case .hung:
                let why = "no heartbeat for \(options.hangTimeout) s: hung; killed its process group"
                try runLog.event(RunEvent(.failure, attempt: attempt, reason: "hang"))
                try runLog.event(RunEvent(.kill, attempt: attempt, reason: "hang timeout \(options.hangTimeout) s"))
                failures.append("attempt \(attempt): \(why)")
                log("supervise: attempt \(attempt): \(why)")
            case .interrupted(let sig):
                try runLog.event(RunEvent(.interrupted, attempt: attempt, reason: Self.name(of: sig)))
                failures.append("attempt \(attempt): interrupted by \(Self.name(of: sig))")
                result = Result(status: .interrupted,
                                message: "interrupted by \(Self.name(of: sig)): stopped attempt \(attempt) and its ranks; the same command resumes from the last checkpoint")
                retry = false
            }
            if case .success = outcome { break }
            if !retry { break }
            if restarts >= options.maxRestarts {
                result = Result(status: .gaveUp, message: "gave up after \(restarts) restart(s) (--max-restarts \(options.maxRestarts)): \(failures.last ?? "")")
                log("supervise: giving up after \(restarts) restart(s)")
                break
            }
            restarts += 1
            attempt += 1
            try runLog.event(RunEvent(.restart, attempt: attempt, restarts: restarts))
        }
        // The job is over: under --checkpoint-mode memory, its hosts' memory goes with it,
        // unless a signal stopped it (the same command resumes, from memory if it can).
        if result.status != .interrupted { HostMemory.release(root: HostMemory.root(runDirectory: options.runDirectory)) }
        let wall = Date().timeIntervalSince(start)
        let report = try Goodput.compute(runDirectory: options.runDirectory, restarts: restarts, restartCostS: options.restartCostS,
                                     wallSeconds: wall)
        for line in report.table() { log(line) }
        if let path = options.summaryJSON {
            var out = JobSummary(attempts: attempt, restarts: restarts, failures: failures, succeeded: lastSummary != nil,
                                 losses: report.survivingLosses, steps: report.survivingLosses.count, goodput: report.record,
                                 runDirectory: options.runDirectory)
            out.exitStatus = Int(result.status.rawValue)
            if result.status != .success { out.stoppedBecause = result.message }
            if let last = lastSummary {
                // The successful attempt wrote its summary; one that does not read is an error naming it.
                out.paramChecksum = try RunSummary.read(last).paramChecksum
                out.finalLoss = report.survivingLosses.last
                out.lastAttemptSummary = last
            }
            try AtomicFile.write(JSONText.encode(out), to: path)
            log("supervise: summary written to \(path)")
        }
        return result
    }

    // MARK: - Elastic restarts

    /// The slots this job may use now: `--np`, bounded by the hostfile's slots, less the
    /// slots listed as lost in the run directory. Read before every attempt, so capacity that
    /// returns (a hostfile that grows again, a lost slot's line deleted) is used at the next
    /// restart.
    func capacity() -> (slots: Int, notes: [String]) {
        var slots = options.np
        var notes: [String] = []
        if let hostfile = options.hostfile {
            switch Self.slots(inHostfile: hostfile) {
            case .success(let listed):
                if listed < slots { slots = listed; notes.append("\(hostfile) lists \(listed) slot(s)") }
            case .failure(let problem):
                slots = 0; notes.append(problem.description)
            }
        }
        let lostPath = options.runDirectory + "/" + FaultInjector.lostSlotsFile
        let lost = ((try? String(contentsOfFile: lostPath, encoding: .utf8)) ?? "").split(separator: "\n").filter { !$0.isEmpty }.count
        if lost > 0 { slots -= lost; notes.append("\(lost) slot(s) lost (\(lostPath))") }
        return (max(slots, 0), notes)
    }

    /// The world of the next attempt: `--np` when the capacity allows it; with `--min-np`,
    /// the largest world the capacity holds on which the training flags plan (fewer
    /// data-parallel replicas, the same global batch in more micro-batches each).
    func chooseWorld() -> Swift.Result<Int, UsageError> {
        let (slots, notes) = capacity()
        guard let minNP = options.minNP else {
            if slots < options.np { log("supervise: only \(slots) of \(options.np) slot(s) usable (\(notes.joined(separator: "; "))); without --min-np the job runs on \(options.np)") }
            return .success(options.np)
        }
        if slots >= options.np { return .success(options.np) }
        guard let world = stride(from: slots, through: minNP, by: -1).first(where: { options.plans($0) }) else {
            return .failure(UsageError("only \(slots) of \(options.np) slot(s) usable (\(notes.joined(separator: "; "))), and no world from \(slots) down to --min-np \(minNP) plans with these training flags"))
        }
        log("supervise: \(slots) of \(options.np) slot(s) usable (\(notes.joined(separator: "; "))): the job runs on \(world) rank(s), resharded from its checkpoint")
        return .success(world)
    }

    /// Slots in an Open MPI hostfile: `host slots=N` (or a bare host: one slot) per line;
    /// counted up to `maxRanks`, more than one job may use.
    static func slots(inHostfile path: String) -> Swift.Result<Int, UsageError> {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            return .failure(UsageError("--hostfile \(path) cannot be read"))
        }
        var total = 0
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard !words.isEmpty else { continue }
            var slots = 1
            if let word = words.dropFirst().first(where: { $0.hasPrefix("slots=") }) {
                guard let n = Int(word.dropFirst(6)), n >= 0 else {
                    return .failure(UsageError("--hostfile \(path) line \(i + 1): \(word) is not a slot count"))
                }
                slots = n
            }
            total = min(total + min(slots, Self.maxRanks), Self.maxRanks)
        }
        return .success(total)
    }

    /// The most ranks one job may start (the same bound as `supervise --np`).
    public static let maxRanks = 4096

    /// One failure in words: the job's own last error line when it printed one, else what
    /// mpirun's status says.
    static func describe(status: Int32?, signal: Int32?, message: String?) -> String {
        var how: String
        if let signal {
            how = "mpirun died of \(name(of: signal))"
        } else if let status, status > 128 {
            how = "mpirun exited with status \(status) (a rank died of \(name(of: status - 128)))"
        } else if let status, let known = ExitStatus(rawValue: status) {
            how = "mpirun exited with status \(status) (\(known.meaning))"
        } else {
            how = "mpirun exited with status \(status ?? -1)"
        }
        if let message, !message.isEmpty { how += ": " + message }
        return how
    }

    static func name(of signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGHUP: return "SIGHUP"
        case SIGKILL: return "SIGKILL"
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGILL: return "SIGILL"
        case SIGTRAP: return "SIGTRAP"
        case SIGBUS: return "SIGBUS"
        default: return "signal \(signal)"
        }
    }

    // MARK: - Signals

    /// SIGINT, SIGTERM and SIGHUP are noted, not obeyed at once: the supervisor forwards the
    /// signal to its attempt's mpirun, waits for it (SIGKILL after `grace` seconds), writes the
    /// summary and exits 4. Ranks that outlive mpirun stop by their `Lifeline`.
    /// A signal the supervisor was started with ignored (`nohup`, a background job of a
    /// script) stays ignored.
    static func catchSignals() {
        _ = supervisorPendingSignal.load(ordering: .relaxed)  // initialised before any handler can run
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            var old = sigaction()
            sigaction(sig, nil, &old)
            if unsafeBitCast(old.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) { continue }
            signal(sig) { received in
                // Lock-free atomic: safe in a signal handler. The first signal wins.
                _ = supervisorPendingSignal.compareExchange(expected: 0, desired: received, ordering: .relaxed)
            }
        }
    }

    static var pendingSignal: Int32? {
        let s = supervisorPendingSignal.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }

    /// Seconds mpirun gets to stop its ranks after a forwarded signal, before SIGKILL.
    static let grace = 5.0

    /// One mpirun, in its own process group, watched until it exits, stops beating, or the
    /// supervisor is told to stop. Its standard error passes through (to ours or to `output`)
    /// and its last `moe-train: error:` line is kept for the failure's reason.
    func runAttempt(_ args: [String], output: String?) throws -> Outcome {
        let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "mpirun"
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attr, 0)
        // The child starts with the default action for the signals the supervisor catches.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        let argv: [UnsafeMutablePointer<CChar>?] = ([mpirun] + args).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var env = ProcessInfo.processInfo.environment
        env[Lifeline.supervisorVariable] = Lifeline.Process.current?.token
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in envp { free(p) } }

        // Where the attempt's output goes: ours, or the attempt's log file.
        var sink: Int32 = 2
        if let output {
            sink = open(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard sink >= 0 else { throw AtomicFile.WriteError(path: output, code: errno) }
        }
        defer { if sink != 2 { close(sink) } }
        var errPipe: [Int32] = [0, 0]
        guard pipe(&errPipe) == 0 else { throw AtomicFile.WriteError(path: "a pipe", code: errno) }
        // Neither end may leak into other children (the write end reaches mpirun as its fd 2 only).
        for end in errPipe { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if output != nil { posix_spawn_file_actions_adddup2(&actions, sink, 1) }
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, mpirun, &actions, &attr, argv, envp)
        close(errPipe[1])
        guard rc == 0 else {
            close(errPipe[0])
            throw UsageError("cannot start \(mpirun): \(String(cString: strerror(rc)))")
        }
        let errors = ErrorTee(from: errPipe[0], to: sink)

        var lastBeat = heartbeat()
        var lastChange = Date()
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                killGroup(pid)  // leave nothing behind
                let message = errors.finish()
                let exited = (status & 0x7f) == 0
                let code = (status >> 8) & 0xff
                if exited && code == 0 { return .success }
                return .failed(status: exited ? code : nil, signal: exited ? nil : status & 0x7f, message: message)
            }
            if let sig = Self.pendingSignal {
                log("supervise: \(Self.name(of: sig)) received: stopping attempt (mpirun pid \(pid)) and its ranks")
                kill(-pid, sig)
                let deadline = Date().addingTimeInterval(Self.grace)
                while waitpid(pid, &status, WNOHANG) != pid && Date() < deadline { usleep(50_000) }
                killGroup(pid)
                waitpid(pid, &status, 0)
                _ = errors.finish()
                return .interrupted(signal: sig)
            }
            let beat = heartbeat()
            if beat != lastBeat { lastBeat = beat; lastChange = Date() }
            if Date().timeIntervalSince(lastChange) > options.hangTimeout {
                killGroup(pid)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                _ = errors.finish()
                return .hung
            }
            usleep(100_000)
        }
    }

    func heartbeat() -> String { (try? String(contentsOfFile: runLog.heartbeatPath, encoding: .utf8)) ?? "" }

    /// SIGTERM to the attempt's process group (mpirun forwards it to the ranks), then SIGKILL
    /// to the group. Ranks left over stop by their lifeline once mpirun is gone.
    func killGroup(_ pgid: pid_t) {
        kill(-pgid, SIGTERM)
        for _ in 0..<20 {
            if kill(-pgid, 0) != 0 { break }
            usleep(100_000)
        }
        kill(-pgid, SIGKILL)
    }
}

/// The first of SIGINT, SIGTERM, SIGHUP received by the supervisor (0: none). A plain
/// global: a signal handler can only reach that.
let supervisorPendingSignal = Atomic<Int32>(0)

/// Copies an attempt's standard error through as it comes, keeping its last
/// `moe-train: error:` line.
final class ErrorTee: @unchecked Sendable {
    let fd: Int32
    let sink: Int32
    let done = DispatchSemaphore(value: 0)
    let lock = NSLock()
    var pending: [UInt8] = []
    var lastError: String?

    /// `sink` is duplicated: the copier closes its own descriptor when the output ends, so
    /// the caller may close `sink` at once, even when `finish` stopped waiting.
    init(from fd: Int32, to sink: Int32) {
        self.fd = fd; self.sink = dup(sink)
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                var off = 0
                while off < n {
                    let w = buffer.withUnsafeBytes { write(sink, $0.baseAddress! + off, n - off) }
                    if w < 0 && errno == EINTR { continue }
                    if w <= 0 { break }
                    off += w
                }
                scan(buffer[0..<n])
            }
            close(fd)
            close(self.sink)
            done.signal()
        }
    }

    func scan(_ bytes: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        pending += bytes
        while let nl = pending.firstIndex(of: 0x0A) {
            let line = String(decoding: pending[..<nl], as: UTF8.self)
            pending.removeSubrange(...nl)
            if let r = line.range(of: "moe-train: error: ") { lastError = String(line[r.upperBound...]) }
        }
    }

    /// Waits (at most 5 s: a straggling rank may hold the pipe) for the end of the output; the
    /// last error line.
    func finish() -> String? {
        _ = done.wait(timeout: .now() + 5)
        lock.lock(); defer { lock.unlock() }
        return lastError
    }
}
