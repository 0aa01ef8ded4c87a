import Foundation

/// Where the running moe-train is and where its configs are, whatever the working directory:
/// the executable comes from /proc/self/exe (argv[0] is only a fallback), and configs and
/// device profiles are searched in $MOE_TRAIN_CONFIGS, ./configs, the installed
/// PREFIX/share/moe-train beside PREFIX/bin, then the source checkout the binary was built in.
public enum Installation {
    /// The running executable's absolute path, symlinks resolved. Used by every subcommand that
    /// starts moe-train again (supervise, goodput-sweep) and to find the installed configs.
    public static var executablePath: String {
        executablePath(procSelfExe: "/proc/self/exe", argv0: CommandLine.arguments.first ?? "moe-train",
                       environment: ProcessInfo.processInfo.environment,
                       workingDirectory: FileManager.default.currentDirectoryPath)
    }

    /// `executablePath` with its inputs explicit: the link /proc/self/exe when it can be read;
    /// otherwise argv[0] looked up in $PATH when it has no slash (as the shell did), or resolved
    /// against the working directory when it has one.
    public static func executablePath(procSelfExe: String, argv0: String, environment: [String: String],
                                      workingDirectory: String) -> String {
        let fm = FileManager.default
        if let target = try? fm.destinationOfSymbolicLink(atPath: procSelfExe), target.hasPrefix("/") {
            // A binary replaced while running (a reinstall) reads as "PATH (deleted)".
            let deleted = " (deleted)"
            if target.hasSuffix(deleted), !fm.fileExists(atPath: target), fm.fileExists(atPath: String(target.dropLast(deleted.count))) {
                return String(target.dropLast(deleted.count))
            }
            return target
        }
        if argv0.hasPrefix("/") { return resolved(argv0) }
        if argv0.contains("/") { return resolved(workingDirectory + "/" + argv0) }
        for dir in (environment["PATH"] ?? "").split(separator: ":", omittingEmptySubsequences: false) {
            let base = dir.isEmpty ? workingDirectory : (dir.hasPrefix("/") ? String(dir) : workingDirectory + "/" + dir)
            let candidate = base + "/" + argv0
            var isDirectory: ObjCBool = false
            if fm.isExecutableFile(atPath: candidate), fm.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue {
                return resolved(candidate)
            }
        }
        return argv0  // not found anywhere: the caller's error names it as given
    }

    /// Directories holding moe-train's configs (default.json, tiny.json, gpt4-account.json,
    /// devices/), in search order, without duplicates.
    public static var configDirectories: [String] {
        configDirectories(environment: ProcessInfo.processInfo.environment,
                          workingDirectory: FileManager.default.currentDirectoryPath, executable: executablePath)
    }

    /// `configDirectories` with its inputs explicit.
    public static func configDirectories(environment: [String: String], workingDirectory: String, executable: String) -> [String] {
        var dirs: [String] = []
        if let env = environment["MOE_TRAIN_CONFIGS"], !env.isEmpty { dirs.append(env) }
        dirs.append(URL(fileURLWithPath: workingDirectory).appendingPathComponent("configs").standardized.path)
        let exeDir = URL(fileURLWithPath: executable).deletingLastPathComponent()
        dirs.append(exeDir.appendingPathComponent("../share/moe-train").standardized.path)  // make install
        // The checkout a binary under .build/<triple>/<configuration>/ was built from.
        var dir = exeDir
        for _ in 0..<5 {
            dir = dir.deletingLastPathComponent()
            dirs.append(dir.appendingPathComponent("configs").path)
            if dir.path == "/" { break }
        }
        var seen = Set<String>()
        return dirs.filter { seen.insert($0).inserted }
    }

    /// The first `directory/name` among the config directories that exists, or nil.
    public static func findConfig(_ name: String) -> String? {
        configDirectories.lazy.map { $0 + "/" + name }.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// "searched A, B, C", for error messages.
    public static var searchedDescription: String {
        "searched " + configDirectories.joined(separator: ", ")
    }
}

extension Installation {
    static func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).standardized.resolvingSymlinksInPath().path
    }
}
