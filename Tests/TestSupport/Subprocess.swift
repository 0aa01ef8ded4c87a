import Foundation

/// Runs the release binary (and mpirun) for integration tests.
public enum Subprocess {
    public struct Result {
        public let status: Int32
        public let stdout: String
        public let stderr: String
        public let seconds: Double
        public var output: String { stdout + stderr }
    }

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }

    /// The release binary built by `make test` (MOE_TRAIN_BIN), or nil when not set.
    public static var binary: String? {
        guard let p = ProcessInfo.processInfo.environment["MOE_TRAIN_BIN"], FileManager.default.isExecutableFile(atPath: p) else {
            return nil
        }
        return p
    }

    /// The repository root (for configs/), found from this file's location.
    public static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Environment for mpirun on a small machine, run as root, with more ranks than cores.
    public static var mpiEnvironment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        return env
    }

    /// Runs `executable args`, killing it (and its process group) after `timeout` seconds.
    public static func run(_ executable: String, _ args: [String], cwd: String? = nil,
                           timeout: Double = 300, environment: [String: String]? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.environment = environment ?? mpiEnvironment
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice
        let start = Date()
        try p.run()
        // Drain the pipes concurrently so a chatty child never blocks on a full pipe.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box(), errBox = Box()
        let group = DispatchGroup()
        group.enter(); DispatchQueue.global().async { outBox.data = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter(); DispatchQueue.global().async { errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(-p.processIdentifier, SIGKILL)
            p.terminate()
            kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
        group.wait()
        return Result(status: p.terminationStatus, stdout: String(decoding: outBox.data, as: UTF8.self),
                      stderr: String(decoding: errBox.data, as: UTF8.self), seconds: Date().timeIntervalSince(start))
    }

    /// `mpirun -np N --bind-to none <binary> args`.
    public static func mpirun(np: Int, _ args: [String], extraMPIArgs: [String] = [], timeout: Double = 300) throws -> Result {
        guard let bin = binary else { throw Missing(description: "MOE_TRAIN_BIN is not set: run the integration tests through `make test`") }
        let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "mpirun"
        return try run(mpirun, ["-np", String(np), "--bind-to", "none"] + extraMPIArgs + [bin] + args,
                       cwd: repoRoot, timeout: timeout)
    }

    /// A fresh temporary directory.
    public static func tempDir(_ prefix: String = "moe-train-test") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Parses a JSON object file.
    public static func readJSON(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Missing(description: "\(path) does not hold a JSON object")
        }
        return obj
    }
}
