/// One step of a pipeline schedule on one rank, PyTorch-pipelining style: a kind, a
/// micro-batch and the local model chunk (virtual stage) it runs on. Printed as `F3`,
/// `B3`, `I3`, `W3` (chunk 0) or `F3.1` (chunk 1); sends and receives as `sF3` / `rF3`
/// (activation of F3) and `sB3` / `rB3` (gradient of B3).
public struct Action: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case forward = "F"
        /// Full backward: input and weight gradients.
        case backward = "B"
        /// Zero-bubble split: input gradients only (the critical path)...
        case backwardInput = "I"
        /// ...and the weight gradients, deferred.
        case backwardWeight = "W"
        case sendActivation = "sF"
        case recvActivation = "rF"
        case sendGradient = "sB"
        case recvGradient = "rB"

        public var isCompute: Bool { [.forward, .backward, .backwardInput, .backwardWeight].contains(self) }
        public var isSend: Bool { self == .sendActivation || self == .sendGradient }
        public var isRecv: Bool { self == .recvActivation || self == .recvGradient }
    }

    public let kind: Kind
    public let microbatch: Int
    public let chunk: Int

    public init(_ kind: Kind, _ microbatch: Int, chunk: Int = 0) {
        self.kind = kind; self.microbatch = microbatch; self.chunk = chunk
    }

    public var description: String { "\(kind.rawValue)\(microbatch)" + (chunk == 0 ? "" : ".\(chunk)") }

    /// Parses the printed form back (`F3`, `I0.1`, `sB2`).
    public init?(_ text: String) {
        let kinds = Kind.allCases.sorted { $0.rawValue.count > $1.rawValue.count }
        guard let k = kinds.first(where: { text.hasPrefix($0.rawValue) }) else { return nil }
        let rest = text.dropFirst(k.rawValue.count).split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(rest.count), let mb = Int(rest[0]), mb >= 0 else { return nil }
        let chunk = rest.count == 2 ? Int(rest[1]) : 0
        guard let chunk, chunk >= 0 else { return nil }
        self.init(k, mb, chunk: chunk)
    }
}

/// The schedules moe-train generates.
public enum ScheduleKind: String, Sendable, CaseIterable, Codable {
    /// GPipe (Huang et al. 2019): all forwards, then all backwards.
    case gpipe
    /// PipeDream-Flush 1F1B (Narayanan et al. 2021): warm-up forwards, one forward one backward, cool-down.
    case oneFOneB = "1f1b"
    /// Megatron's interleaved 1F1B (Narayanan et al. 2021, section 2.2): v model chunks per rank.
    case interleaved
    /// Zero-bubble H1 (Qi et al. 2024): backward split into input (I) and weight (W) gradients,
    /// some W deferred into the cool-down bubble; peak activations as 1F1B.
    case zbH1 = "zb-h1"
}
