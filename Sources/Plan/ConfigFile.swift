import Foundation
import Model

/// Reads a run configuration from JSON. Every key is optional and overrides the built-in
/// default; an unknown key, a wrong type or malformed JSON is an error naming the file and key.
public enum ConfigFile {
    /// Loads `path` on top of the defaults.
    public static func load(_ path: String) throws -> RunConfig {
        guard FileManager.default.fileExists(atPath: path) else {
            throw RunConfig.ConfigError("config file \(path) does not exist")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunConfig.ConfigError("config file \(path) cannot be read")
        }
        return try parse(data, name: path)
    }

    /// Directories holding moe-train's configs, in search order: $MOE_TRAIN_CONFIGS, ./configs,
    /// the installed share/moe-train next to the binary, and the repository a binary in
    /// .build/ was built from.
    public static var configDirectories: [String] {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["MOE_TRAIN_CONFIGS"] { dirs.append(env) }
        dirs.append(FileManager.default.currentDirectoryPath + "/configs")
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        dirs.append(exe.appendingPathComponent("../share/moe-train").standardized.path)  // make install
        var dir = exe
        for _ in 0..<5 {
            dir = dir.deletingLastPathComponent()
            dirs.append(dir.appendingPathComponent("configs").path)
        }
        return dirs
    }

    /// The configuration used when no --config is given: `default.json` from the config
    /// directories (the model `mpirun -np 16 moe-train --tp 4 --pp 4` trains).
    public static func loadDefault() throws -> RunConfig {
        for dir in configDirectories where FileManager.default.fileExists(atPath: dir + "/default.json") {
            return try load(dir + "/default.json")
        }
        throw RunConfig.ConfigError("no --config given and no default.json found in \(configDirectories.joined(separator: ", ")); pass --config FILE or set MOE_TRAIN_CONFIGS")
    }

    /// Reads a configuration from a file's bytes; `name` is its path, for messages and for
    /// the default run directory (checkpoints/<name without extension>).
    public static func parse(_ data: Data, name: String) throws -> RunConfig {
        var config = try RunConfig.decode(json: data, name: name)
        config.configName = URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
        return config
    }
}
