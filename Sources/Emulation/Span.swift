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

/// One interval of emulated time on one rank, with the wall-clock interval it took to emulate.
public struct Span: Sendable, Equatable {
    public var kind: SpanKind
    public var start: Double          // emulated seconds
    public var end: Double
    public var detail: String
    public var wallStart: Double      // wall seconds since the clock was created
    public var wallEnd: Double
    public var duration: Double { end - start }

    public init(kind: SpanKind, start: Double, end: Double, detail: String, wallStart: Double = 0, wallEnd: Double = 0) {
        self.kind = kind; self.start = start; self.end = end; self.detail = detail
        self.wallStart = wallStart; self.wallEnd = wallEnd
    }
}

/// Time per kind and category over a window of one rank's spans.
public struct SpanTotals: Sendable {
    public private(set) var byKind: [SpanKind: Double] = [:]
    public var compute: Double { total(.compute) }
    public var communication: Double { total(.communication) }
    public var idle: Double { total(.idle) }
    public var io: Double { total(.io) }

    public init(_ spans: [Span], from: Double = -.infinity, to: Double = .infinity) {
        for s in spans {
            let lo = max(s.start, from), hi = min(s.end, to)
            if hi > lo { byKind[s.kind, default: 0] += hi - lo }
        }
    }

    public func total(_ c: SpanKind.Category) -> Double {
        byKind.reduce(0) { $0 + ($1.key.category == c ? $1.value : 0) }
    }
}
