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

    public struct Missing: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The release binary the integration tests run: MOE_TRAIN_BIN when set (`make test`
    /// sets it), else this repository's .build/release/moe-train when it is newer than every
    /// source file, else that binary built once per test process. Throws (the test fails,
    /// never skips) when there is none, saying how to build it.
    public static var binary: String {
        get throws { try resolvedBinary.get() }
    }

    /// Resolved (and built, if need be) on first use; a static let is initialized once,
    /// thread-safely, so concurrent tests build at most once.
    private static let resolvedBinary: Swift.Result<String, Missing> = resolveBinary()

    private static func resolveBinary() -> Swift.Result<String, Missing> {
        let fm = FileManager.default
        let howTo = "build it with `swift build -c release --product moe-train` in \(repoRoot), "
            + "or run the tests through `make test`, or point MOE_TRAIN_BIN at a release binary"
        if let p = ProcessInfo.processInfo.environment["MOE_TRAIN_BIN"], !p.isEmpty {
            return fm.isExecutableFile(atPath: p) ? .success(p)
                : .failure(Missing(description: "MOE_TRAIN_BIN=\(p) is not an executable file: \(howTo)"))
        }
        let built = repoRoot + "/.build/release/moe-train"
        if fm.isExecutableFile(atPath: built), !isOlderThanSources(built) { return .success(built) }
        // `swift test` holds the lock on .build while the tests run: without --ignore-lock
        // this build would wait for it forever. The outer `swift test` has finished building.
        print("integration tests: building the release binary (swift build -c release --product moe-train) in \(repoRoot)")
        let args = ["swift", "build", "-c", "release", "--product", "moe-train", "--ignore-lock"]
        let r: Result
        do {
            r = try run("/usr/bin/env", args, cwd: repoRoot, timeout: 3600, environment: ProcessInfo.processInfo.environment)
        } catch {
            return .failure(Missing(description: "could not start `swift build` (\(error)): \(howTo)"))
        }
        guard r.status == 0, fm.isExecutableFile(atPath: built) else {
            return .failure(Missing(description: "`\(args.joined(separator: " "))` failed (exit \(r.status)):\n"
                                    + String(r.output.suffix(4000)) + "\n" + howTo))
        }
        return .success(built)
    }

    /// True when some file of Sources/ or Package.swift changed after `binary` was written.
    private static func isOlderThanSources(_ binary: String) -> Bool {
        let fm = FileManager.default
        func modified(_ path: String) -> Date? { (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date }
        guard let built = modified(binary) else { return true }
        var paths = [repoRoot + "/Package.swift"]
        let sources = repoRoot + "/Sources"
        if let files = fm.enumerator(atPath: sources) {
            for case let f as String in files { paths.append(sources + "/" + f) }
        }
        return paths.contains { (modified($0) ?? .distantPast) > built }
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
        env["OMPI_MCA_odls_base_sigkill_timeout"] = "0"  // as the Makefile: no 1 s wait after a rank fails
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
    /// Runs in `cwd` (default: the repository root, so relative config paths work).
    /// `environment` adds variables to `mpiEnvironment`.
    public static func mpirun(np: Int, _ args: [String], extraMPIArgs: [String] = [], cwd: String? = nil,
                              timeout: Double = 300, environment: [String: String] = [:]) throws -> Result {
        let bin = try binary
        let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "mpirun"
        return try run(mpirun, ["-np", String(np), "--bind-to", "none"] + extraMPIArgs + [bin] + args,
                       cwd: cwd ?? repoRoot, timeout: timeout, environment: mpiEnvironment.merging(environment) { $1 })
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
