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
            guard let start = Lifeline.startTime(of: pid) else { return nil }
            host = Lifeline.hostName; self.pid = pid; startTime = start
        }

        /// Parses `host pid starttime`.
        public init?(token: String) {
            let parts = token.split(separator: " ")
            guard parts.count == 3, let pid = Int32(parts[1]), let start = UInt64(parts[2]) else { return nil }
            host = String(parts[0]); self.pid = pid; startTime = start
        }

        public var token: String { "\(host) \(pid) \(startTime)" }

        /// Whether it still runs. A process on another host is assumed alive.
        public var isAlive: Bool { host != Lifeline.hostName || Lifeline.startTime(of: pid) == startTime }
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

    /// Field 22 of /proc/PID/stat (clock ticks after boot), which with the pid names one
    /// process for the machine's uptime; nil when there is no such process.
    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.range(of: ")", options: .backwards) else { return nil }
        // After "pid (comm)": field 3 (state) onwards; a zombie has exited already.
        let fields = stat[close.upperBound...].split(separator: " ")
        guard fields.count > 19, fields[0] != "Z" else { return nil }
        return UInt64(fields[19])
    }
}
