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

    /// The configuration used when no --config is given: `default.json` from the config
    /// directories (`Installation.configDirectories`; the model `mpirun -np 16 moe-train --tp 4
    /// --pp 4` trains).
    public static func loadDefault() throws -> RunConfig {
        if let path = Installation.findConfig("default.json") { return try load(path) }
        throw RunConfig.ConfigError("no --config given and no default.json found (\(Installation.searchedDescription)); pass --config FILE or set MOE_TRAIN_CONFIGS")
    }

    /// Reads a configuration from a file's bytes; `name` is its path, for messages and for
    /// the default run directory (checkpoints/<name without extension>).
    public static func parse(_ data: Data, name: String) throws -> RunConfig {
        var config = try RunConfig.decode(json: data, name: name)
        config.configName = URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
        return config
    }
}
