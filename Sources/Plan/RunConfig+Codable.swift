import Foundation
import Emulation
import Model
import Schedule

/// The one list of configuration keys. A config file, a checkpoint manifest and the config
/// hash all go through it: JSON objects with these snake_case keys, every key optional
/// (absent keys keep their defaults), unknown keys rejected by name.
extension RunConfig: Codable {
    /// A key of the JSON object.
    struct Key: CodingKey {
        let stringValue: String
        init(_ s: String) { stringValue = s }
        init?(stringValue s: String) { stringValue = s }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    /// One configuration key: its name, the setting it holds, and how it reads and writes.
    struct Field: Sendable {
        let name: String
        /// Part of the fingerprint: changing it changes the numbers of a run.
        let numerics: Bool
        /// Whether a value as JSONSerialization reads it has this key's type, and the phrase for it.
        let accepts: @Sendable (Any) -> Bool
        let expected: String
        let decode: @Sendable (inout RunConfig, KeyedDecodingContainer<Key>) throws -> Void
        let encode: @Sendable (RunConfig, inout KeyedEncodingContainer<Key>) throws -> Void

        init<T: ConfigValue>(_ name: String, _ path: WritableKeyPath<RunConfig, T> & Sendable, numerics: Bool = false) {
            self.name = name
            self.numerics = numerics
            accepts = { T.accepts($0) }
            expected = T.expected
            decode = { config, container in
                do {
                    config[keyPath: path] = try container.decode(T.self, forKey: Key(name))
                } catch is DecodingError {
                    throw RunConfig.ConfigError("key \"\(name)\" must be \(T.expected)")
                }
            }
            encode = { config, container in try container.encode(config[keyPath: path], forKey: Key(name)) }
        }
    }

    /// Every key, grouped as the README documents them.
    static let fields: [Field] = [
        // model
        Field("vocab", \.model.vocab, numerics: true),
        Field("d_model", \.model.dModel, numerics: true),
        Field("layers", \.model.layers, numerics: true),
        Field("heads", \.model.heads, numerics: true),
        Field("kv_heads", \.model.kvHeads, numerics: true),
        Field("ffn_hidden", \.model.ffnHidden, numerics: true),
        Field("ffn", \.model.ffn, numerics: true),
        Field("experts", \.model.experts, numerics: true),
        Field("top_k", \.model.topK, numerics: true),
        Field("moe_every", \.model.moeEvery, numerics: true),
        Field("capacity_factor", \.model.capacityFactor, numerics: true),
        Field("aux_loss_coef", \.model.auxLossCoef, numerics: true),
        Field("z_loss_coef", \.model.zLossCoef, numerics: true),
        Field("tie_embeddings", \.model.tieEmbeddings, numerics: true),
        Field("seq_len", \.model.seqLen, numerics: true),
        Field("rope_theta", \.model.ropeTheta, numerics: true),
        Field("norm_eps", \.model.normEps, numerics: true),
        Field("init_std", \.model.initStd, numerics: true),
        Field("router_init_scale", \.model.routerInitScale, numerics: true),
        // layout
        Field("tp", \.tp),
        Field("pp", \.pp),
        Field("dp", \.dp),
        Field("ep", \.ep),
        Field("zero", \.zero),
        Field("zero_group", \.zeroGroup),
        Field("schedule", \.schedule),
        Field("virtual_stages", \.virtualStages),
        Field("recompute", \.recompute),
        Field("attention", \.attention),
        Field("sequence_parallel", \.sequenceParallel),
        Field("overlap_grad_reduce", \.overlapGradReduce),
        Field("overlap_param_gather", \.overlapParamGather),
        Field("pp_layers", \.ppLayers),
        // batch
        Field("global_batch", \.globalBatch, numerics: true),
        Field("micro_batch_size", \.microBatchSize),
        Field("micro_batches", \.microBatches),
        // optimisation
        Field("steps", \.steps, numerics: true),
        Field("lr", \.lr, numerics: true),
        Field("min_lr_ratio", \.minLRRatio, numerics: true),
        Field("warmup_steps", \.warmupSteps, numerics: true),
        Field("weight_decay", \.weightDecay, numerics: true),
        Field("beta1", \.beta1, numerics: true),
        Field("beta2", \.beta2, numerics: true),
        Field("adam_eps", \.adamEps, numerics: true),
        Field("grad_clip", \.gradClip, numerics: true),
        Field("max_skipped_steps", \.maxSkippedSteps),
        Field("seed", \.seed, numerics: true),
        // data
        Field("data", \.data, numerics: true),
        Field("markov_order", \.markov.order, numerics: true),
        Field("markov_alphabet", \.markov.alphabet, numerics: true),
        Field("markov_branching", \.markov.branching, numerics: true),
        Field("markov_seed", \.markov.seed, numerics: true),
        // emulated device
        Field("device", \.device),
        Field("clock", \.clock),
        Field("clock_scale", \.clockScale),
        Field("gpus_per_node", \.gpusPerNode),
        Field("link", \.link),
        Field("precision", \.precision),
        Field("ignore_oom", \.ignoreOOM),
        Field("time_as", \.timeAs),
        // checkpoints, restarts and faults
        Field("checkpoint_dir", \.checkpointDir),
        Field("checkpoint_every", \.checkpointEvery),
        Field("keep_checkpoints", \.keepCheckpoints),
        Field("resume", \.resume),
        Field("attempt", \.attempt),
        Field("fail_at_step", \.failAtStep),
        Field("fail_rank", \.failRank),
        Field("fail_mode", \.failMode),
        Field("slow_factor", \.slowFactor),
        Field("mtbf_hours", \.mtbfHours),
        Field("restart_cost_s", \.restartCostS),
        Field("checkpoint_bandwidth", \.checkpointBandwidth),
        Field("checkpoint_mode", \.checkpointMode),
        // output
        Field("log_every", \.logEvery),
        Field("trace", \.trace),
        Field("trace_wall", \.traceWall),
        Field("summary_json", \.summaryJSON),
        Field("dump_step", \.dumpStep),
        Field("dump_dir", \.dumpDir),
    ]

    /// The names of every key, sorted.
    public static var keys: [String] { fields.map(\.name).sorted() }

    /// Keys a file may hold as free-text notes.
    static func isNote(_ key: String) -> Bool { key == "comment" || key.hasPrefix("_") }

    public init(from decoder: Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: Key.self)
        let known = Set(Self.fields.map(\.name))
        for key in container.allKeys.map(\.stringValue).sorted() where !known.contains(key) && !Self.isNote(key) {
            throw ConfigError("unknown key \"\(key)\" (known keys: \(Self.keys.joined(separator: ", ")))")
        }
        for field in Self.fields where container.contains(Key(field.name)) {
            try field.decode(&self, container)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for field in Self.fields { try field.encode(self, &container) }
    }

    /// The configuration as canonical JSON: every key, sorted, nothing else. What checkpoint
    /// manifests store and what `decode(json:)` reads back.
    public func canonicalJSON() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Reads a configuration from JSON text. `name` (a file path) prefixes every message.
    public static func decode(json data: Data, name: String) throws -> RunConfig {
        // Shape first, with the reader that names what is wrong with malformed JSON.
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            let ns = error as NSError
            let why = (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
            throw ConfigError("config file \(name) is not valid JSON: \(why)")
        }
        guard let dict = object as? [String: Any] else {
            throw ConfigError("config file \(name) must hold a JSON object at the top level")
        }
        // Types strictly, against the value as written (JSONDecoder would take 2.5 for an
        // integer field in some paths, and names no key when a number does not fit).
        let known = Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0) })
        for key in dict.keys.sorted() {
            guard let field = known[key] else {
                if isNote(key) { continue }
                throw ConfigError("config file \(name): unknown key \"\(key)\" (known keys: \(keys.joined(separator: ", ")))")
            }
            if key == "time_as", !(dict[key] is NSNull) { _ = try TimingTarget.parse(dict[key]!, what: "config file \(name): key \"time_as\"") }
            guard field.accepts(dict[key]!) else {
                throw ConfigError("config file \(name): key \"\(key)\" must be \(field.expected) (got \(render(dict[key]!)))")
            }
        }
        do {
            return try JSONDecoder().decode(RunConfig.self, from: data)
        } catch {
            throw ConfigError("config file \(name): \(error)")
        }
    }

    /// A JSON value as a user wrote it, for messages.
    static func render(_ value: Any) -> String {
        if value is NSNull { return "null" }
        if let s = value as? String { return "\"\(s)\"" }
        if let data = try? JSONSerialization.data(withJSONObject: [value], options: [.fragmentsAllowed]),
           let text = String(data: data, encoding: .utf8) {
            return String(text.dropFirst().dropLast())
        }
        return "\(value)"
    }

    /// The settings that change the numbers of a run (model, batch, optimizer and learning-rate
    /// schedule, data, seed), as canonical JSON: not the layout, the device, the logging or
    /// the checkpoint settings. Checkpoints carry its hash, so a resume with other numerics
    /// is refused.
    /// The settings that change the numbers (the keys of `numericsJSON`) on which `written`
    /// and this configuration differ, as "key A in the checkpoint, B here".
    public func numericsDifferences(from written: RunConfig) -> [String] {
        func object(_ c: RunConfig) -> [String: Any] {
            ((try? c.numericsJSON(omittingDefaults: false)).flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any]) ?? [:]
        }
        func text(_ v: Any?) -> String {
            guard let v, let data = try? JSONSerialization.data(withJSONObject: [v]) else { return "null" }
            return String(decoding: data, as: UTF8.self).dropFirst().dropLast().description
        }
        let a = object(written), b = object(self)
        return Set(a.keys).union(b.keys).sorted().compactMap { key in
            let (x, y) = (text(a[key]), text(b[key]))
            return x == y ? nil : "\(key) \(x) in the checkpoint, \(y) here"
        }
    }

    /// Numerics keys added after checkpoints were first written, left out of `numericsJSON` (the
    /// hashed form; `omittingDefaults: false` names them, for messages)
    /// while they hold the value every earlier run had, so that those checkpoints keep their
    /// hash and still resume.
    static let numericsOmittedAtDefault: [String: @Sendable (RunConfig) -> Bool] = ["ffn": { $0.model.ffn == .gelu }]

    public func numericsJSON(omittingDefaults: Bool = true) throws -> Data {
        struct Numerics: Encodable {
            let config: RunConfig
            let omitting: Bool
            func encode(to encoder: Encoder) throws {
                var container = encoder.container(keyedBy: Key.self)
                for field in RunConfig.fields where field.numerics && !(omitting && RunConfig.numericsOmittedAtDefault[field.name]?(config) == true) {
                    try field.encode(config, &container)
                }
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(Numerics(config: self, omitting: omittingDefaults))
    }
}

/// A type a configuration key can hold: the phrase that names it in a message, and a strict
/// check of a value as JSONSerialization reads it (JSON true is not 1; 2.5 is not an integer).
protocol ConfigValue: Codable, Sendable {
    static var expected: String { get }
    static func accepts(_ value: Any) -> Bool
}

/// A JSON number that is not a boolean, with whether it was written as an integer.
private func number(_ value: Any) -> (n: NSNumber, integer: Bool)? {
    guard let n = value as? NSNumber, !String(describing: type(of: value)).contains("Boolean") else { return nil }
    let type = String(cString: n.objCType)
    return (n, type != "d" && type != "f")
}

extension Int: ConfigValue {
    static var expected: String { "an integer" }
    static func accepts(_ value: Any) -> Bool {
        guard let (n, integer) = number(value) else { return false }
        if integer { return n.compare(NSNumber(value: Int.max)) != .orderedDescending }
        let d = n.doubleValue
        return d == d.rounded() && abs(d) < 9.2e18
    }
}
extension UInt64: ConfigValue {
    static var expected: String { "a whole number from 0 to 2^64 - 1" }
    static func accepts(_ value: Any) -> Bool {
        guard let (n, integer) = number(value) else { return false }
        if integer { return n.compare(NSNumber(value: 0)) != .orderedAscending }
        let d = n.doubleValue
        return d == d.rounded() && d >= 0 && d < 1.8e19
    }
}
extension Double: ConfigValue {
    static var expected: String { "a number" }
    static func accepts(_ value: Any) -> Bool { number(value) != nil }
}
extension Bool: ConfigValue {
    static var expected: String { "true or false" }
    static func accepts(_ value: Any) -> Bool {
        value is NSNumber && String(describing: type(of: value)).contains("Boolean")
    }
}
extension String: ConfigValue {
    static var expected: String { "a string" }
    static func accepts(_ value: Any) -> Bool { value is String }
}
extension Array: ConfigValue where Element == Int {
    static var expected: String { "an array of integers" }
    static func accepts(_ value: Any) -> Bool { (value as? [Any])?.allSatisfy(Int.accepts) ?? false }
}
extension Optional: ConfigValue where Wrapped: ConfigValue {
    static var expected: String { Wrapped.expected + " or null" }
    static func accepts(_ value: Any) -> Bool { value is NSNull || Wrapped.accepts(value) }
}

/// A choice among named values.
protocol ConfigChoice: ConfigValue, RawRepresentable, CaseIterable where RawValue == String {}
extension ConfigChoice {
    static var expected: String { "one of " + allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ") }
    static func accepts(_ value: Any) -> Bool { (value as? String).flatMap(Self.init(rawValue:)) != nil }
}
extension ScheduleKind: ConfigChoice {}
extension ClockChoice: ConfigChoice {}
extension LinkChoice: ConfigChoice {}
extension Precision: ConfigChoice {}
extension FailMode: ConfigChoice {}
extension CheckpointMode: ConfigChoice {}
extension Recompute: ConfigChoice {}
extension AttentionKernel: ConfigChoice {}
extension FFNKind: ConfigChoice {}
