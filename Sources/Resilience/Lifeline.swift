import Foundation
import Plan
#if canImport(Glibc)
import Glibc
#endif

/// A rank's lifeline: a rank started by mpirun stops (status 4) within a fifth of a second
/// once the mpirun that started it is gone, or the `moe-train supervise` whose job it belongs
/// to is gone, even when they died by SIGKILL and could warn nobody. Open MPI puts every rank
/// in a process group of its own, so a signal to the supervisor's or mpirun's group never
/// reaches the ranks; without this they would run on, reparented to init, and write into a
/// run directory a new job may already be using.
///
/// The supervisor names itself in its job's environment (`MOE_TRAIN_SUPERVISOR`: host, pid
/// and the process's start time, so that a recycled pid is not mistaken for it); ranks on
/// another host cannot see it and rely on their launcher alone.
public enum Lifeline {
    public static let supervisorVariable = "MOE_TRAIN_SUPERVISOR"

    /// One process, as this host's /proc knows it.
    public struct Process: Equatable, Sendable {
        public let host: String
        public let pid: Int32
        public let startTime: UInt64

        /// This process.
        public static var current: Process? { Process(pid: getpid()) }

        /// The process `pid` on this host, if it is alive.
        public init?(pid: Int32) {
            guard case .running(let start) = Lifeline.state(of: pid) else { return nil }
            host = Lifeline.hostName; self.pid = pid; startTime = start
        }

        /// Parses `host pid starttime`.
        public init?(token: String) {
            let parts = token.split(separator: " ")
            guard parts.count == 3, let pid = Int32(parts[1]), let start = UInt64(parts[2]) else { return nil }
            host = String(parts[0]); self.pid = pid; startTime = start
        }

        public var token: String { "\(host) \(pid) \(startTime)" }

        /// Whether it still runs. A process on another host, or one /proc cannot tell about
        /// (out of file descriptors, say), is taken for alive: only proof of its end counts.
        public var isAlive: Bool {
            guard host == Lifeline.hostName else { return true }
            switch Lifeline.state(of: pid) {
            case .running(let start): return start == startTime
            case .gone: return false
            case .unknown: return true
            }
        }
    }

    /// Starts the watch when this process is a rank started by mpirun; does nothing otherwise
    /// (a singleton run has no launcher to lose).
    public static func watchIfLaunched() {
        let env = ProcessInfo.processInfo.environment
        guard env["OMPI_COMM_WORLD_SIZE"] != nil else { return }
        let launcher = getppid()
        let supervisor = env[supervisorVariable].flatMap(Process.init(token:))
        Thread.detachNewThread {
            while true {
                if getppid() != launcher { stop("its launcher (pid \(launcher)) is gone") }
                if let s = supervisor, !s.isAlive { stop("its supervisor (pid \(s.pid)) is gone") }
                usleep(200_000)
            }
        }
    }

    static func stop(_ why: String) -> Never {
        let rank = LaunchEnvironment.current.rank
        FileHandle.standardError.write(Data("moe-train: rank \(rank) stops: \(why)\n".utf8))
        _exit(ExitStatus.interrupted.rawValue)
    }

    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        return String(cString: buffer)
    }

    enum State: Equatable { case running(startTime: UInt64), gone, unknown }

    /// From /proc/PID/stat: running with field 22 (clock ticks after boot), which with the pid
    /// names one process for the machine's uptime; gone when there is no such process or it
    /// is a zombie; unknown when the file cannot be read for another reason.
    static func state(of pid: Int32) -> State {
        let fd = open("/proc/\(pid)/stat", O_RDONLY)
        guard fd >= 0 else { return errno == ENOENT || errno == ESRCH ? .gone : .unknown }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { return errno == ESRCH ? .gone : .unknown }
        let stat = String(decoding: buffer[0..<n], as: UTF8.self)
        guard let close = stat.range(of: ")", options: .backwards) else { return .unknown }
        // After "pid (comm)": field 3 (state) onwards; a zombie has exited already.
        let fields = stat[close.upperBound...].split(separator: " ")
        guard fields.count > 19 else { return .unknown }
        if fields[0] == "Z" || fields[0] == "X" { return .gone }
        return UInt64(fields[19]).map { .running(startTime: $0) } ?? .unknown
    }
}
