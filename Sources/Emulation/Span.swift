/// What a stretch of a rank's emulated time was spent on.
public enum SpanKind: String, Sendable, CaseIterable {
    case forward, backward
    case weightGrad = "weight-gradient"
    case optimizer
    case send
    case recvWait = "recv-wait"
    case allReduce = "all-reduce"
    case reduceScatter = "reduce-scatter"
    case allGather = "all-gather"
    case allToAll = "all-to-all"
    case broadcast, barrier
    case checkpoint
    case idle

    public enum Category: String, Sendable { case compute, communication, idle, io }

    public var category: Category {
        switch self {
        case .forward, .backward, .weightGrad, .optimizer: return .compute
        case .send, .recvWait, .allReduce, .reduceScatter, .allGather, .allToAll, .broadcast, .barrier: return .communication
        case .checkpoint: return .io
        case .idle: return .idle
        }
    }
}

/// Which of an emulated GPU's two streams a span ran on: the compute stream (kernels, and the
/// collectives a kernel waits for), or the communication stream, where collectives issued
/// asynchronously run while compute goes on (`DeviceClock.streamCollective`).
public enum Stream: String, Sendable, CaseIterable {
    case compute, communication
}

/// One interval of emulated time on one rank, with the wall-clock interval it took to emulate.
public struct Span: Sendable, Equatable {
    public var kind: SpanKind
    public var start: Double          // emulated seconds
    public var end: Double
    public var detail: String
    public var wallStart: Double      // wall seconds since the clock was created
    public var wallEnd: Double
    public var stream: Stream
    public var duration: Double { end - start }

    public init(kind: SpanKind, start: Double, end: Double, detail: String, wallStart: Double = 0, wallEnd: Double = 0,
                stream: Stream = .compute) {
        self.kind = kind; self.start = start; self.end = end; self.detail = detail
        self.wallStart = wallStart; self.wallEnd = wallEnd; self.stream = stream
    }
}

/// The communication stream of one emulated GPU: operations run one at a time in the order
/// they were issued, each starting when it has been issued by every participant and the
/// stream is free. The clock of a run and the projection place operations with this one rule.
public struct CommunicationStream: Sendable {
    public private(set) var free = 0.0
    public init() {}
    /// Places an operation issued (by its last participant) at `issued` that lasts `duration`.
    public mutating func run(issued: Double, duration: Double) -> (start: Double, end: Double) {
        let start = max(issued, free)
        free = start + duration
        return (start, free)
    }
}

/// Time per kind and category over a window of one rank's compute-stream spans (its
/// timeline: communication there is exposed; the communication stream's spans overlap it).
public struct SpanTotals: Sendable {
    public private(set) var byKind: [SpanKind: Double] = [:]
    public var compute: Double { total(.compute) }
    public var communication: Double { total(.communication) }
    public var idle: Double { total(.idle) }
    public var io: Double { total(.io) }

    public init(_ spans: [Span], from: Double = -.infinity, to: Double = .infinity) {
        for s in spans {
            let lo = max(s.start, from), hi = min(s.end, to)
            if hi > lo && s.stream == .compute { byKind[s.kind, default: 0] += hi - lo }
        }
    }

    public func total(_ c: SpanKind.Category) -> Double {
        byKind.reduce(0) { $0 + ($1.key.category == c ? $1.value : 0) }
    }
}
