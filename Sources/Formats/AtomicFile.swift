import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a file so that a crash at any instant leaves either the old content or the
/// new one, never a torn mix: write to a temporary name in the same directory, fsync
/// it, rename over the target, fsync the directory.
public enum AtomicFile {
    public struct WriteError: Error, CustomStringConvertible {
        public let path: String
        /// The C library's error number (ENOSPC, EACCES, ...).
        public let code: Int32
        public var reason: String { String(cString: strerror(code)) }
        public var description: String { "cannot write \(path): \(reason)" }
        /// No space left on the device, or over a quota: no restart can help.
        public var isOutOfSpace: Bool { code == ENOSPC || code == EDQUOT }

        public init(path: String, code: Int32) { self.path = path; self.code = code }
    }

    public static func write(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw WriteError(path: path, code: errno) }
        var written = 0
        let ok: Bool = bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let r = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { if r == 0 { errno = ENOSPC }; return false }
                written += r
            }
            return true
        }
        if !ok || fsync(fd) != 0 {
            let code = errno
            close(fd); unlink(tmp)
            throw WriteError(path: path, code: code)
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let code = errno
            unlink(tmp)
            throw WriteError(path: path, code: code)
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    public static func write(_ text: String, to path: String) throws { try write(Array(text.utf8), to: path) }
}
