/// What a Communicator operation is, for the choke point that every call passes through.
/// The emulated device clock and the trace writer attach to `CommObserver`.
public enum CommKind: String, Sendable, CaseIterable {
    case barrier, broadcast, allReduce = "all-reduce", reduceScatter = "reduce-scatter"
    case allGather = "all-gather", allToAll = "all-to-all", send, recv
}

import Emulation

extension CommKind {
    /// The span this operation records on the emulated clock.
    var span: SpanKind {
        switch self {
        case .barrier: return .barrier
        case .broadcast: return .broadcast
        case .allReduce: return .allReduce
        case .reduceScatter: return .reduceScatter
        case .allGather: return .allGather
        case .allToAll: return .allToAll
        case .send: return .send
        case .recv: return .recvWait
        }
    }

    /// The cost-model formula of a collective.
    var collective: CostModel.Collective {
        switch self {
        case .barrier: return .barrier
        case .broadcast: return .broadcast
        case .allReduce: return .allReduce
        case .reduceScatter: return .reduceScatter
        case .allGather: return .allGather
        case .allToAll, .send, .recv: return .allToAll
        }
    }
}

/// One operation as seen by an observer: its kind, the group it ran on, the bytes this
/// rank contributed, and the peer for point-to-point messages.
public struct CommEvent: Sendable {
    public let kind: CommKind
    public let group: String
    public let bytes: Int
    public let peer: Int?
}

/// A hook called after every Communicator operation completes.
public protocol CommObserver: AnyObject {
    func didComplete(_ event: CommEvent)
}

/// Counts bytes and calls per (kind, group): the figures that go into `comm_bytes`.
public final class CommCounter: CommObserver, @unchecked Sendable {
    public struct Key: Hashable, Sendable {
        public let kind: CommKind
        public let group: String
        public init(kind: CommKind, group: String) { self.kind = kind; self.group = group }
    }
    public private(set) var bytes: [Key: Int] = [:]
    public private(set) var calls: [Key: Int] = [:]
    public init() {}
    public func didComplete(_ event: CommEvent) {
        let k = Key(kind: event.kind, group: event.group)
        bytes[k, default: 0] += event.bytes
        calls[k, default: 0] += 1
    }
}
