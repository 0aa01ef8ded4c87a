import Foundation
import Plan
import Tensor

/// Where training sequences come from. A sample is a pure function of
/// (seed, step, index in the global batch): never of the layout or of the rank asking.
public protocol DataSource: Sendable {
    /// A human-readable description for the run header.
    var description: String { get }
    /// T+1 tokens: inputs are the first T, targets the last T.
    func sample(step: Int, index: Int, length: Int) -> [Int32]
    /// The lowest achievable mean loss per target token, when known.
    func entropyFloor(seqLen: Int) -> Double?
    /// The largest token id the source can produce; the vocabulary must exceed it.
    var maxToken: Int { get }
}

extension DataSource {
    /// Inputs and targets of sequences [first, first+count) of `step`, each T long, concatenated.
    public func batch(step: Int, first: Int, count: Int, seqLen T: Int) -> (tokens: [Int32], targets: [Int32]) {
        var tokens = [Int32](), targets = [Int32]()
        tokens.reserveCapacity(count * T); targets.reserveCapacity(count * T)
        for i in first..<(first + count) {
            let s = sample(step: step, index: i, length: T + 1)
            tokens += s[0..<T]
            targets += s[1...T]
        }
        return (tokens, targets)
    }
}

/// Random windows of a text file, read as bytes.
public struct TextFileSource: DataSource {
    public let path: String
    let bytes: [UInt8]
    let seed: UInt64

    public init(path: String, seed: UInt64, seqLen: Int) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunConfig.ConfigError("data file \(path) cannot be read")
        }
        guard data.count >= seqLen + 2 else {
            throw RunConfig.ConfigError("data file \(path) holds \(data.count) bytes; it needs at least seq-len + 2 = \(seqLen + 2)")
        }
        self.path = path
        self.bytes = [UInt8](data)
        self.seed = seed
    }

    public var description: String { "text file \(path) (\(bytes.count) bytes, byte-level)" }

    public func sample(step: Int, index: Int, length: Int) -> [Int32] {
        let key = hashKey(seed, stableHash("text-window"), UInt64(bitPattern: Int64(step)), UInt64(index))
        let start = Int(key % UInt64(bytes.count - length + 1))
        return bytes[start..<(start + length)].map { Int32($0) }
    }

    public func entropyFloor(seqLen: Int) -> Double? { nil }

    public var maxToken: Int { Int(bytes.max() ?? 0) }
}
