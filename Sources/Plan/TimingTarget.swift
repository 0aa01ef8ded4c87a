import Foundation
import Model

/// `time_as` (`--time-as FILE`): the dimensions the emulated clock charges instead of the
/// executed model's. The numerics run at the executed dimensions; every kernel and message is
/// costed as the same kernel or message of a model of these dimensions (`KernelInventory`),
/// with the layers, experts, top-k, batch count and layout of the executed run. Absent keys
/// keep the executed value. Not part of the numerics: a checkpoint resumes with or without it
/// (without `pp_layers` the layers are split by the timed model's costs, so another target may
/// split them otherwise, and the resume then reshards).
public struct TimingTarget: Equatable, Sendable {
    public var dModel: Int?
    public var ffnHidden: Int?
    public var heads: Int?
    public var kvHeads: Int?
    public var seqLen: Int?
    public var microBatchSize: Int?
    public var vocab: Int?
    /// A free-text label for the header ("GPT-4-like width").
    public var name: String?

    public init(dModel: Int? = nil, ffnHidden: Int? = nil, heads: Int? = nil, kvHeads: Int? = nil, seqLen: Int? = nil,
                microBatchSize: Int? = nil, vocab: Int? = nil, name: String? = nil) {
        self.dModel = dModel; self.ffnHidden = ffnHidden; self.heads = heads; self.kvHeads = kvHeads
        self.seqLen = seqLen; self.microBatchSize = microBatchSize; self.vocab = vocab; self.name = name
    }

    /// The keys of the object, with the flag each replaces in messages about the timed model.
    static let dimensions: [(key: String, path: WritableKeyPath<TimingTarget, Int?>, flag: String)] = [
        ("d_model", \.dModel, "--d-model"), ("ffn_hidden", \.ffnHidden, "--ffn-hidden"), ("heads", \.heads, "--heads"),
        ("kv_heads", \.kvHeads, "--kv-heads"), ("seq_len", \.seqLen, "--seq-len"),
        ("micro_batch_size", \.microBatchSize, "--micro-batch-size"), ("vocab", \.vocab, "vocab"),
    ]

    /// The executed run's configuration as the timed model: its dimensions replaced, the same
    /// number of micro-batches per data-parallel rank (so the same schedule) and, unless the
    /// target names one, the same micro-batch size; no target of its own.
    func timedConfig(of c: RunConfig, batch: BatchPlan) -> RunConfig {
        var t = c
        t.timeAs = nil
        t.model.dModel = dModel ?? c.model.dModel
        t.model.ffnHidden = ffnHidden ?? c.model.ffnHidden
        t.model.heads = heads ?? c.model.heads
        t.model.kvHeads = kvHeads ?? c.model.kvHeads
        t.model.seqLen = seqLen ?? c.model.seqLen
        t.model.vocab = vocab ?? c.model.vocab
        t.microBatchSize = microBatchSize ?? batch.microBatchSize
        t.microBatches = batch.microBatches
        t.globalBatch = nil
        t.dp = batch.dp
        return t
    }

    /// A message about the timed model in the words of this key: "time_as: d_model 1000 is not
    /// divisible by heads 7" rather than the executed model's flags.
    static func reword(_ message: String) -> String {
        var m = message
        for d in dimensions where d.flag.hasPrefix("--") { m = m.replacingOccurrences(of: d.flag + " ", with: d.key + " ") }
        m = m.replacingOccurrences(of: "vocabulary size ", with: "vocab ").replacingOccurrences(of: "FFN hidden size ", with: "ffn_hidden ")
        return "time_as: the timed model: " + m
    }

    /// Reads `--time-as FILE`: a JSON object with the keys of `time_as`.
    public static func load(_ path: String) throws -> TimingTarget {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunConfig.ConfigError("--time-as \(path): no such file (name a JSON file of target dimensions, or none)")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw RunConfig.ConfigError("--time-as \(path) is not valid JSON")
        }
        return try parse(object, what: "--time-as \(path)")
    }

    /// Checks a JSON value as JSONSerialization reads it, naming the offending key.
    static func parse(_ value: Any, what: String) throws -> TimingTarget {
        guard let dict = value as? [String: Any] else {
            throw RunConfig.ConfigError("\(what) must be a JSON object of target dimensions (\(dimensions.map(\.key).joined(separator: ", ")))")
        }
        var t = TimingTarget()
        for key in dict.keys.sorted() {
            let v = dict[key]!
            if key == "name" {
                guard let s = v as? String else { throw RunConfig.ConfigError("\(what): key \"name\" must be a string") }
                t.name = s
            } else if let d = dimensions.first(where: { $0.key == key }) {
                guard Int.accepts(v), let n = (v as? NSNumber)?.intValue else {
                    throw RunConfig.ConfigError("\(what): key \"\(key)\" must be an integer (got \(RunConfig.render(v)))")
                }
                guard (1...Validation.maxCount).contains(n) else {
                    throw RunConfig.ConfigError("\(what): \(key) \(n) must be between 1 and \(Validation.maxCount)")
                }
                t[keyPath: d.path] = n
            } else if !RunConfig.isNote(key) {
                throw RunConfig.ConfigError("\(what): unknown key \"\(key)\" (known keys: \((dimensions.map(\.key) + ["name"]).sorted().joined(separator: ", ")))")
            }
        }
        return t
    }

    /// The dimensions given, as "d_model 6144, ffn_hidden 12288, ...".
    public var summary: String {
        Self.dimensions.compactMap { d in self[keyPath: d.path].map { "\(d.key) \($0)" } }.joined(separator: ", ")
    }
}

extension TimingTarget: Codable {
    typealias Key = RunConfig.Key   // the config file's string keys

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        self.init()
        for key in c.allKeys.map(\.stringValue) where key != "name" && !RunConfig.isNote(key) && !Self.dimensions.contains(where: { $0.key == key }) {
            throw RunConfig.ConfigError("time_as: unknown key \"\(key)\"")
        }
        for d in Self.dimensions { self[keyPath: d.path] = try c.decodeIfPresent(Int.self, forKey: Key(d.key)) }
        name = try c.decodeIfPresent(String.self, forKey: Key("name"))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for d in Self.dimensions { try c.encodeIfPresent(self[keyPath: d.path], forKey: Key(d.key)) }
        try c.encodeIfPresent(name, forKey: Key("name"))
    }
}

extension TimingTarget: ConfigValue {
    static var expected: String { "an object of target dimensions (\(dimensions.map(\.key).joined(separator: ", ")))" }
    static func accepts(_ value: Any) -> Bool { (try? parse(value, what: "time_as")) != nil }
}
