import Foundation
import Plan
#if canImport(Glibc)
import Glibc
#endif

/// One job per run directory: `supervise` holds an exclusive `flock` on `RUN_DIR/lock`, a
/// file naming the holder (`host pid starttime`). The kernel drops the lock when the last
/// process holding the file open exits, and mpirun inherits it, so the lock is held until the
/// supervisor and the job it started are both gone; a lock file whose holder died is taken
/// over with a message.
public final class RunDirectoryLock {
    public let path: String
    let fd: Int32

    /// Takes the lock of `runDirectory` (which must exist), or throws a `UsageError` naming the
    /// holder. `log` receives the take-over message, when there is one.
    public init(runDirectory: String, log: (String) -> Void) throws {
        path = runDirectory + "/lock"
        // Not close-on-exec: mpirun keeps the lock alive while it runs.
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else {
            throw UsageError("--checkpoint-dir \(runDirectory): cannot open its lock file \(path): \(String(cString: strerror(errno)))")
        }
        let previous = Self.read(fd)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = previous.map { "the supervisor pid \($0.pid) on host \($0.host) (or the job it started, still stopping)" } ?? "another job"
            close(fd)
            throw UsageError("--checkpoint-dir \(runDirectory) is in use by \(holder): it holds \(path); stop that job or choose another --checkpoint-dir")
        }
        if let p = previous, p.pid != getpid() {
            log("supervise: taking over \(path) from pid \(p.pid) on host \(p.host), which no longer runs")
        }
        let me = (Lifeline.Process.current?.token ?? "\(Lifeline.hostName) \(getpid()) 0") + "\n"
        _ = ftruncate(fd, 0)
        _ = me.withCString { pwrite(fd, $0, strlen($0), 0) }
        fsync(fd)
        self.fd = fd
    }

    static func read(_ fd: Int32) -> Lifeline.Process? {
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = pread(fd, &buffer, buffer.count, 0)
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Lifeline.Process(token: text)
    }

    /// Releases the lock, emptying the file first (a lock file that still names its holder
    /// was left by a process that died). The file stays: removing it would let a job that
    /// opened it a moment earlier lock a file no one else can see.
    public func release() {
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
    }
}
