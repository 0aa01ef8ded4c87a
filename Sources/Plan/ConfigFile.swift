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

    public static func parse(_ data: Data, name: String) throws -> RunConfig {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw RunConfig.ConfigError("config file \(name) is not valid JSON: \(describe(error))")
        }
        guard let dict = object as? [String: Any] else {
            throw RunConfig.ConfigError("config file \(name) must hold a JSON object at the top level")
        }
        var config = RunConfig()
        config.configName = URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
        for key in dict.keys.sorted() {
            guard let setter = setters[key] else {
                if key == "comment" || key.hasPrefix("_") { continue }  // free-text notes
                let known = setters.keys.sorted().joined(separator: ", ")
                throw RunConfig.ConfigError("config file \(name): unknown key \"\(key)\" (known keys: \(known))")
            }
            do { try setter(&config, dict[key]!) } catch let e as TypeMismatch {
                throw RunConfig.ConfigError("config file \(name): key \"\(key)\" must be \(e.expected)")
            }
        }
        return config
    }

    struct TypeMismatch: Error { let expected: String }

    /// The keys a config file may hold, with this configuration's values: the inverse of
    /// `parse` (`parse(JSON(dictionary(c)))` gives back c's numbers). Stored in checkpoint
    /// manifests so that a checkpoint describes its own model.
    public static func dictionary(_ c: RunConfig) -> [String: Any] {
        var d: [String: Any] = [
            "vocab": c.model.vocab, "d_model": c.model.dModel, "layers": c.model.layers, "heads": c.model.heads,
            "kv_heads": c.model.kvHeads, "ffn_hidden": c.model.ffnHidden, "experts": c.model.experts, "top_k": c.model.topK,
            "moe_every": c.model.moeEvery, "capacity_factor": c.model.capacityFactor, "aux_loss_coef": c.model.auxLossCoef,
            "z_loss_coef": c.model.zLossCoef, "tie_embeddings": c.model.tieEmbeddings, "seq_len": c.model.seqLen,
            "rope_theta": c.model.ropeTheta, "norm_eps": c.model.normEps, "init_std": c.model.initStd,
            "router_init_scale": c.model.routerInitScale,
            "tp": c.tp, "pp": c.pp, "ep": c.ep, "zero": c.zero, "schedule": c.schedule, "virtual_stages": c.virtualStages,
            "steps": c.steps, "lr": c.lr, "min_lr_ratio": c.minLRRatio, "warmup_steps": c.warmupSteps,
            "weight_decay": c.weightDecay, "beta1": c.beta1, "beta2": c.beta2, "adam_eps": c.adamEps, "grad_clip": c.gradClip,
            "seed": NSNumber(value: c.seed), "data": c.data, "markov_order": c.markov.order, "markov_alphabet": c.markov.alphabet,
            "markov_branching": c.markov.branching, "markov_seed": NSNumber(value: c.markov.seed),
        ]
        if let g = c.globalBatch { d["global_batch"] = g }
        if let b = c.microBatchSize { d["micro_batch_size"] = b }
        if let m = c.microBatches { d["micro_batches"] = m }
        if let l = c.ppLayers { d["pp_layers"] = l }
        if let dp = c.dp { d["dp"] = dp }
        return d
    }

    /// JSON true/false arrive as a boolean-typed NSNumber; tell them apart from 0 and 1.
    static func isBool(_ v: Any) -> Bool { String(describing: type(of: v)).contains("Boolean") }

    static func int(_ v: Any) throws -> Int {
        if let n = v as? NSNumber, !isBool(v), n.doubleValue == n.doubleValue.rounded(), abs(n.doubleValue) < 1e15 {
            return n.intValue
        }
        throw TypeMismatch(expected: "an integer")
    }
    static func double(_ v: Any) throws -> Double {
        if let n = v as? NSNumber, !isBool(v) { return n.doubleValue }
        throw TypeMismatch(expected: "a number")
    }
    static func bool(_ v: Any) throws -> Bool {
        if let n = v as? NSNumber, isBool(v) { return n.boolValue }
        throw TypeMismatch(expected: "true or false")
    }
    static func string(_ v: Any) throws -> String {
        if let s = v as? String { return s }
        throw TypeMismatch(expected: "a string")
    }

    typealias Setter = (inout RunConfig, Any) throws -> Void

    /// One entry per accepted key: the single list of what a config file may say.
    static let setters: [String: Setter] = [
        // model
        "vocab": { $0.model.vocab = try int($1) },
        "d_model": { $0.model.dModel = try int($1) },
        "layers": { $0.model.layers = try int($1) },
        "heads": { $0.model.heads = try int($1) },
        "kv_heads": { $0.model.kvHeads = try int($1) },
        "ffn_hidden": { $0.model.ffnHidden = try int($1) },
        "experts": { $0.model.experts = try int($1) },
        "top_k": { $0.model.topK = try int($1) },
        "moe_every": { $0.model.moeEvery = try int($1) },
        "capacity_factor": { $0.model.capacityFactor = try double($1) },
        "aux_loss_coef": { $0.model.auxLossCoef = try double($1) },
        "z_loss_coef": { $0.model.zLossCoef = try double($1) },
        "tie_embeddings": { $0.model.tieEmbeddings = try bool($1) },
        "seq_len": { $0.model.seqLen = try int($1) },
        "rope_theta": { $0.model.ropeTheta = try double($1) },
        "norm_eps": { $0.model.normEps = try double($1) },
        "init_std": { $0.model.initStd = try double($1) },
        "router_init_scale": { $0.model.routerInitScale = try double($1) },
        // layout
        "tp": { $0.tp = try int($1) },
        "pp": { $0.pp = try int($1) },
        "dp": { $0.dp = try int($1) },
        "ep": { $0.ep = try int($1) },
        "zero": { $0.zero = try int($1) },
        "schedule": { $0.schedule = try string($1) },
        "virtual_stages": { $0.virtualStages = try int($1) },
        "pp_layers": { c, v in
            guard let a = v as? [Any] else { throw TypeMismatch(expected: "an array of integers") }
            c.ppLayers = try a.map(int)
        },
        // batch
        "global_batch": { $0.globalBatch = try int($1) },
        "micro_batch_size": { $0.microBatchSize = try int($1) },
        "micro_batches": { $0.microBatches = try int($1) },
        // optimisation
        "steps": { $0.steps = try int($1) },
        "lr": { $0.lr = try double($1) },
        "min_lr_ratio": { $0.minLRRatio = try double($1) },
        "warmup_steps": { $0.warmupSteps = try int($1) },
        "weight_decay": { $0.weightDecay = try double($1) },
        "beta1": { $0.beta1 = try double($1) },
        "beta2": { $0.beta2 = try double($1) },
        "adam_eps": { $0.adamEps = try double($1) },
        "grad_clip": { $0.gradClip = try double($1) },
        "seed": { $0.seed = try unsigned($1) },
        // data
        "data": { $0.data = try string($1) },
        "markov_order": { $0.markov.order = try int($1) },
        "markov_alphabet": { $0.markov.alphabet = try int($1) },
        "markov_branching": { $0.markov.branching = try int($1) },
        "markov_seed": { $0.markov.seed = try unsigned($1) },
        // emulated device
        "device": { $0.device = try string($1) },
        "clock": { $0.clock = try string($1) },
        "clock_scale": { $0.clockScale = try double($1) },
        "gpus_per_node": { $0.gpusPerNode = try int($1) },
        "link": { $0.link = try string($1) },
        "precision": { $0.precision = try string($1) },
        // checkpoints and faults
        "checkpoint_dir": { $0.checkpointDir = try string($1) },
        "checkpoint_every": { $0.checkpointEvery = try int($1) },
        "keep_checkpoints": { $0.keepCheckpoints = try int($1) },
        "restart_cost_s": { $0.restartCostS = try double($1) },
        "checkpoint_bandwidth": { $0.checkpointBandwidth = try double($1) },
        "mtbf_hours": { $0.mtbfHours = try double($1) },
        // output
        "log_every": { $0.logEvery = try int($1) },
    ]

    /// A whole number from 0 to 2^64 - 1 (seeds).
    static func unsigned(_ v: Any) throws -> UInt64 {
        if let n = v as? NSNumber, !isBool(v), n.doubleValue >= 0, n.doubleValue == n.doubleValue.rounded() { return n.uint64Value }
        throw TypeMismatch(expected: "a non-negative integer")
    }

    static func nonNegative(_ v: Any) throws -> Int {
        let n = try int(v)
        if n < 0 { throw TypeMismatch(expected: "a non-negative integer") }
        return n
    }

    static func describe(_ error: Error) -> String {
        let ns = error as NSError
        if let d = ns.userInfo[NSDebugDescriptionErrorKey] as? String { return d }
        return ns.localizedDescription
    }
}
