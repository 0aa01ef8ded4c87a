import CMPI
#if canImport(Glibc)
import Glibc
#endif

/// The only code in moe-train that calls MPI.
///
/// A `Communicator` is an immutable value wrapping one MPI communicator (world or a
/// group built by `split`). Every operation is issued non-blocking and completed by
/// `complete(_:)`, which polls with `MPI_Test` and sleeps with exponential back-off
/// between polls: 16 ranks share 2 cores, and a rank waiting for a message must leave
/// the core to a rank that computes. Every operation also passes through `perform`,
/// the choke point where observers (byte counters, the emulated clock, tracing) attach.
public struct Communicator: @unchecked Sendable {
    let handle: MPI_Comm
    public let rank: Int
    public let size: Int
    /// A short name of the group ("world", "tp", "pp", "dp", "ep", "edp"), used in accounting.
    public let name: String
    let hooks: Hooks

    /// Observers shared by the world communicator and every communicator split from it.
    final class Hooks: @unchecked Sendable {
        var observers: [CommObserver] = []
    }

    // MARK: - Life cycle

    /// Initialises MPI (once per process) and returns the world communicator.
    public static func initWorld() -> Communicator {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            var provided: Int32 = 0
            MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        }
        return Communicator(handle: cmpi_comm_world(), name: "world", hooks: Hooks())
    }

    /// Finalises MPI. Call once, after the last operation, on every rank.
    public static func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    /// Ends the whole job from one rank with `code` (every rank exits). For errors that
    /// only some ranks can see, where a collective exit would hang.
    public func abort(code: Int32) -> Never {
        MPI_Abort(handle, code)
        exit(code)
    }

    init(handle: MPI_Comm, name: String, hooks: Hooks) {
        self.handle = handle
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        self.rank = Int(r)
        self.size = Int(s)
        self.name = name
        self.hooks = hooks
    }

    /// Adds an observer to this communicator and every communicator split from it later
    /// or earlier (observers are shared across the whole family).
    public func addObserver(_ observer: CommObserver) { hooks.observers.append(observer) }

    /// Splits into sub-groups: ranks passing the same `color` form a group, ordered by `key`.
    public func split(color: Int, key: Int, name: String) -> Communicator {
        var out: MPI_Comm? = nil
        MPI_Comm_split(handle, Int32(color), Int32(key), &out)
        return Communicator(handle: out!, name: name, hooks: hooks)
    }

    // MARK: - Choke point

    @inline(__always)
    func perform<R>(_ kind: CommKind, bytes: Int, peer: Int? = nil, _ body: () -> R) -> R {
        if hooks.observers.isEmpty { return body() }
        let event = CommEvent(kind: kind, group: name, groupSize: size, bytes: bytes, peer: peer)
        for o in hooks.observers { o.willStart(event) }
        let r = body()
        for o in hooks.observers { o.didComplete(event) }
        return r
    }

    /// Waits for a request without burning the core: a few polls with `sched_yield`,
    /// then sleeps that double from 2 us up to 256 us between polls.
    static func complete(_ request: inout MPI_Request?) {
        var flag: Int32 = 0
        var polls = 0
        var sleepNs = 2_000
        while true {
            MPI_Test(&request, &flag, cmpi_status_ignore())
            if flag != 0 { return }
            polls += 1
            if polls < 32 {
                sched_yield()
            } else {
                var ts = timespec(tv_sec: 0, tv_nsec: sleepNs)
                nanosleep(&ts, nil)
                sleepNs = Swift.min(sleepNs * 2, 256_000)
            }
        }
    }

    static func completeAll(_ requests: inout [MPI_Request?]) {
        for i in requests.indices { complete(&requests[i]) }
    }

    // MARK: - Collectives

    public func barrier() {
        perform(.barrier, bytes: 0) {
            var req: MPI_Request? = nil
            MPI_Ibarrier(handle, &req)
            Communicator.complete(&req)
        }
    }

    /// Broadcasts `count` elements at `buffer` from `root` to every rank of the group.
    public func broadcast<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int) {
        perform(.broadcast, bytes: count * MemoryLayout<T>.stride) {
            var req: MPI_Request? = nil
            MPI_Ibcast(buffer, Int32(count), T.mpiType, Int32(root), handle, &req)
            Communicator.complete(&req)
        }
    }

    public func broadcast<T: MPIScalar>(_ values: inout [T], root: Int) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { broadcast($0.baseAddress!, count: n, root: root) }
    }

    /// In-place all-reduce of `count` elements.
    public func allReduce<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, op: ReduceOp = .sum) {
        if count == 0 { return }
        perform(.allReduce, bytes: count * MemoryLayout<T>.stride) {
            var req: MPI_Request? = nil
            MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), T.mpiType, op.mpi, handle, &req)
            Communicator.complete(&req)
        }
    }

    public func allReduce<T: MPIScalar>(_ values: inout [T], op: ReduceOp = .sum) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { allReduce($0.baseAddress!, count: n, op: op) }
    }

    public func allReduce<T: MPIScalar>(_ value: T, op: ReduceOp = .sum) -> T {
        var v = [value]
        allReduce(&v, op: op)
        return v[0]
    }

    /// Sums `countPerRank * size` elements of `send` over the group and leaves block `rank`
    /// (`countPerRank` elements) of the result in `recv`.
    public func reduceScatter<T: MPIScalar>(_ send: UnsafePointer<T>, _ recv: UnsafeMutablePointer<T>,
                                            countPerRank: Int, op: ReduceOp = .sum) {
        perform(.reduceScatter, bytes: countPerRank * size * MemoryLayout<T>.stride) {
            var req: MPI_Request? = nil
            MPI_Ireduce_scatter_block(send, recv, Int32(countPerRank), T.mpiType, op.mpi, handle, &req)
            Communicator.complete(&req)
        }
    }

    /// Gathers `countPerRank` elements from every rank into `recv` (rank-ordered blocks).
    public func allGather<T: MPIScalar>(_ send: UnsafePointer<T>, _ recv: UnsafeMutablePointer<T>, countPerRank: Int) {
        perform(.allGather, bytes: countPerRank * size * MemoryLayout<T>.stride) {
            var req: MPI_Request? = nil
            MPI_Iallgather(send, Int32(countPerRank), T.mpiType, recv, Int32(countPerRank), T.mpiType, handle, &req)
            Communicator.complete(&req)
        }
    }

    public func allGather<T: MPIScalar>(_ values: [T]) -> [T] {
        var out = [T](unsafeUninitializedCapacity: values.count * size) { _, n in n = values.count * size }
        values.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { r in allGather(s.baseAddress!, r.baseAddress!, countPerRank: values.count) }
        }
        return out
    }

    /// Fixed-size all-to-all: block `j` of `send` goes to rank `j`; block `i` of `recv` came from rank `i`.
    public func allToAll<T: MPIScalar>(_ send: [T], countPerRank: Int) -> [T] {
        precondition(send.count == countPerRank * size, "allToAll: send has \(send.count) elements, expected \(countPerRank * size)")
        var out = [T](unsafeUninitializedCapacity: send.count) { _, n in n = send.count }
        perform(.allToAll, bytes: send.count * MemoryLayout<T>.stride) {
            send.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { r in
                    var req: MPI_Request? = nil
                    MPI_Ialltoall(s.baseAddress!, Int32(countPerRank), T.mpiType, r.baseAddress!, Int32(countPerRank),
                                  T.mpiType, handle, &req)
                    Communicator.complete(&req)
                }
            }
        }
        return out
    }

    /// Variable-size all-to-all. Counts and displacements are in elements; the caller
    /// exchanges counts first (for example with `allToAll(_:countPerRank: 1)`).
    public func allToAllV<T: MPIScalar>(_ send: UnsafePointer<T>, sendCounts: [Int], sendDispls: [Int],
                                        _ recv: UnsafeMutablePointer<T>, recvCounts: [Int], recvDispls: [Int]) {
        let sc = sendCounts.map { Int32($0) }, sd = sendDispls.map { Int32($0) }
        let rc = recvCounts.map { Int32($0) }, rd = recvDispls.map { Int32($0) }
        perform(.allToAll, bytes: sendCounts.reduce(0, +) * MemoryLayout<T>.stride) {
            var req: MPI_Request? = nil
            MPI_Ialltoallv(send, sc, sd, T.mpiType, recv, rc, rd, T.mpiType, handle, &req)
            Communicator.complete(&req)
        }
    }

    // MARK: - Point to point

    /// A pending non-blocking send or receive. Complete it with `wait`.
    public struct Request {
        var handle: MPI_Request?
        let event: CommEvent
    }

    /// Starts sending `count` elements to `peer`. The buffer must stay valid and unchanged until `wait`.
    public func isend<T: MPIScalar>(_ buffer: UnsafePointer<T>, count: Int, to peer: Int, tag: Int) -> Request {
        let ev = CommEvent(kind: .send, group: name, groupSize: size, bytes: count * MemoryLayout<T>.stride, peer: peer)
        for o in hooks.observers { o.willStart(ev) }
        var req: MPI_Request? = nil
        MPI_Isend(buffer, Int32(count), T.mpiType, Int32(peer), Int32(tag), handle, &req)
        return Request(handle: req, event: ev)
    }

    /// Starts receiving `count` elements from `peer` into `buffer`.
    public func irecv<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, from peer: Int, tag: Int) -> Request {
        let ev = CommEvent(kind: .recv, group: name, groupSize: size, bytes: count * MemoryLayout<T>.stride, peer: peer)
        for o in hooks.observers { o.willStart(ev) }
        var req: MPI_Request? = nil
        MPI_Irecv(buffer, Int32(count), T.mpiType, Int32(peer), Int32(tag), handle, &req)
        return Request(handle: req, event: ev)
    }

    /// Completes a request started by `isend` or `irecv`.
    public func wait(_ request: inout Request) {
        Communicator.complete(&request.handle)
        for o in hooks.observers { o.didComplete(request.event) }
    }

    public func send<T: MPIScalar>(_ buffer: UnsafePointer<T>, count: Int, to peer: Int, tag: Int) {
        var r = isend(buffer, count: count, to: peer, tag: tag)
        wait(&r)
    }

    public func recv<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, from peer: Int, tag: Int) {
        var r = irecv(buffer, count: count, from: peer, tag: tag)
        wait(&r)
    }
}
