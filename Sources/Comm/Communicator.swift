import CMPI
import Emulation
#if canImport(Glibc)
import Glibc
#endif

/// The only code in moe-train that calls MPI.
///
/// A `Communicator` is an immutable value wrapping one MPI communicator (world or a
/// group built by `split`). When ranks outnumber the host's cores (16 ranks share 2), every
/// operation is issued non-blocking and completed by `complete(_:)`, which polls with
/// `MPI_Test` and sleeps with exponential back-off between polls: a rank waiting for a
/// message must leave the core to a rank that computes. When every rank has a core, MPI's
/// blocking calls serve instead (`blocking`; reductions only where no algorithm can change
/// a result, `blockingCall`). Every blocking operation also passes through `perform`,
/// the choke point where observers (byte counters, the emulated clock, tracing) attach;
/// collectives on the communication stream pass through `start` and `finish`, the same
/// hooks, and point-to-point messages through `isend`, `irecv` and `wait`.
public struct Communicator: @unchecked Sendable {
    let handle: MPI_Comm
    /// A duplicate of `handle` that carries only emulated-clock values, so that they never
    /// match a data message's tag.
    let clockHandle: MPI_Comm
    /// On a two-rank group, a duplicate of `handle` for the reductions' exchanges (tag 0), so
    /// that it never matches a caller's message and needs no tag beyond what every MPI allows.
    let exchangeHandle: MPI_Comm?
    public let rank: Int
    public let size: Int
    /// A short name of the group ("world", "tp", "pp", "dp", "ep", "edp"), used in accounting.
    public let name: String
    /// World ranks of this group's members, in group order.
    public let members: [Int]
    let hooks: Hooks

    /// Observers and the emulated clock, shared by the world communicator and every
    /// communicator split from it (one process = one rank = one clock).
    final class Hooks: @unchecked Sendable {
        var observers: [CommObserver] = []
        var clock: DeviceClock?
        var clockSuspended = 0
        /// Emulated bytes per Float element (2 for bf16 activations and gradients).
        var floatBytes = 4.0
        var activeClock: DeviceClock? { clockSuspended == 0 ? clock : nil }
        /// Emulated bytes of the operations inside `emulating` (their caller knows the timed size).
        var override: Double? = nil
        /// The emulated size of every other timed operation, from (kind, group, executed
        /// emulated bytes): a run timed as another model (`--time-as`) charges its messages.
        var sizer: ((CommKind, String, Double) -> Double)? = nil
    }

    /// The emulated bytes the clock charges for an operation of `kind` that moves
    /// `emulatedBytes` at the executed sizes.
    func charged(_ kind: CommKind, _ emulatedBytes: Double) -> Double {
        if let o = hooks.override { return o }
        if let s = hooks.sizer { return s(kind, name, emulatedBytes) }
        return emulatedBytes
    }

    /// Runs `body`, whose timed operations the clock charges as `floats` Float elements each
    /// instead of the elements they move (nil: as they are): for callers that know the size of
    /// the same message in the timed model.
    public func emulating<R>(floats: Double?, _ body: () throws -> R) rethrows -> R {
        guard let floats else { return try body() }
        let saved = hooks.override
        hooks.override = floats * hooks.floatBytes
        defer { hooks.override = saved }
        return try body()
    }

    /// Installs the size every timed operation is charged at (nil: its own) on the whole family.
    public func setSizer(_ sizer: ((CommKind, String, Double) -> Double)?) { hooks.sizer = sizer }

    // MARK: - Life cycle

    /// Initialises MPI (once per process) and returns the world communicator.
    public static func initWorld() -> Communicator {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            // Open MPI's default point-to-point layer on Debian is UCX, whose start-up probes
            // the network devices for about 0.2 s in every rank and buys nothing for ranks on
            // one host. ob1 (shared memory between local ranks, TCP between hosts) starts in
            // 0.04 s. Only a default: a user's OMPI_MCA_pml (or `mpirun --mca pml`) wins.
            setenv("OMPI_MCA_pml", "ob1", 0)
            var provided: Int32 = 0
            MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
            // Every rank must wait the same way (a two-rank reduction is an exchange when
            // sleeping and MPI's call when blocking): blocking only if every rank can block,
            // whatever its host's cores or its environment.
            Communicator.couldBlock = Communicator.chooseBlocking(Communicator.hostShare())
            var mine: Int32 = Communicator.couldBlock ? 1 : 0, all: Int32 = 0
            MPI_Allreduce(&mine, &all, 1, cmpi_int32(), cmpi_op_min(), cmpi_comm_world())
            Communicator.blocking = all == 1
        }
        var size: Int32 = 0
        MPI_Comm_size(cmpi_comm_world(), &size)
        return Communicator(handle: cmpi_comm_world(), name: "world", members: Array(0..<Int(size)), hooks: Hooks())
    }

    /// The ranks on this rank's host and the CPUs they may run on together (the union of
    /// their affinity masks: a cpuset or `taskset` counts, and ranks that mpirun bound to one
    /// core each still add up to the cores they hold). Collective over the world.
    static func hostShare() -> (ranks: Int, cpus: Int) {
        var shared: MPI_Comm? = nil
        MPI_Comm_split_type(cmpi_comm_world(), cmpi_comm_type_shared(), 0, cmpi_info_null(), &shared)
        var ranks: Int32 = 0
        MPI_Comm_size(shared!, &ranks)
        let bytes = 128   // 1024 CPUs, glibc's cpu_set_t
        var mask = [UInt8](repeating: 0, count: bytes), union = [UInt8](repeating: 0, count: bytes)
        if cmpi_affinity_mask(&mask, Int32(bytes)) != 0 {   // unknown: every online CPU
            let online = Swift.max(1, Swift.min(sysconf(Int32(_SC_NPROCESSORS_ONLN)), bytes * 8))
            for cpu in 0..<online { mask[cpu / 8] |= UInt8(1 << (cpu % 8)) }
        }
        MPI_Allreduce(mask, &union, Int32(bytes), cmpi_uint8(), cmpi_op_bor(), shared!)
        MPI_Comm_free(&shared)
        return (Int(ranks), union.reduce(0) { $0 + $1.nonzeroBitCount })
    }

    /// This rank could block: the ranks on its host are no more than the CPUs they may run on
    /// (`hostShare`); `MOE_TRAIN_WAIT=block` or `sleep` overrides (a host shared with other
    /// jobs, a CPU quota, or for measuring both). The job blocks only if every rank could
    /// (`initWorld`).
    static func chooseBlocking(_ host: (ranks: Int, cpus: Int)) -> Bool {
        switch getenv("MOE_TRAIN_WAIT").map({ String(cString: $0) }) {
        case "block": return true
        case "sleep": return false
        default: return host.ranks <= host.cpus
        }
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

    init(handle: MPI_Comm, name: String, members: [Int], hooks: Hooks) {
        self.handle = handle
        var dup: MPI_Comm? = nil
        MPI_Comm_dup(handle, &dup)
        self.clockHandle = dup!
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        var exchange: MPI_Comm? = nil
        if s == 2 { MPI_Comm_dup(handle, &exchange) }  // collective: every member has the same size
        self.exchangeHandle = exchange
        self.rank = Int(r)
        self.size = Int(s)
        self.name = name
        self.members = members
        self.hooks = hooks
    }

    /// Attaches the emulated device clock of this rank to every communicator of the family.
    /// `floatBytes` is the emulated size of one Float payload element.
    public func attach(clock: DeviceClock, floatBytes: Double) {
        hooks.clock = clock
        hooks.floatBytes = floatBytes
    }

    public var clock: DeviceClock? { hooks.clock }

    public func detachClock() { hooks.clock = nil; hooks.floatBytes = 4 }

    /// Runs `body` without charging its communication to the emulated clock or reporting it
    /// to observers: for bookkeeping (gathering logs, traces, summaries, dumps) that a real
    /// job would not do on the GPU.
    public func untimed<R>(_ body: () throws -> R) rethrows -> R {
        hooks.clockSuspended += 1
        defer { hooks.clockSuspended -= 1 }
        return try body()
    }

    @inline(__always)
    func emulatedBytes<T>(_ type: T.Type, count: Int) -> Double {
        T.self == Float.self ? Double(count) * hooks.floatBytes : Double(count * MemoryLayout<T>.stride)
    }

    /// Adds an observer to this communicator and every communicator split from it later
    /// or earlier (observers are shared across the whole family).
    public func addObserver(_ observer: CommObserver) { hooks.observers.append(observer) }

    /// Splits into sub-groups: ranks passing the same `color` form a group, ordered by `key`.
    public func split(color: Int, key: Int, name: String) -> Communicator {
        var out: MPI_Comm? = nil
        MPI_Comm_split(handle, Int32(color), Int32(key), &out)
        var n: Int32 = 0
        MPI_Comm_size(out!, &n)
        var mine = Int32(members[rank])
        var all = [Int32](repeating: 0, count: Int(n))
        MPI_Allgather(&mine, 1, cmpi_int32(), &all, 1, cmpi_int32(), out!)
        return Communicator(handle: out!, name: name, members: all.map(Int.init), hooks: hooks)
    }

    // MARK: - Choke point

    /// Every collective passes here. `start` issues the MPI call (a non-blocking one sets the
    /// request, completed here); `finish` is the local work that completes the operation (an
    /// all-reduce's own exchanges), run before the clock advances, as part of the operation, and
    /// before observers hear of it. With a clock attached, the participants' clocks are combined
    /// by a max all-reduce issued first on the clock communicator (it progresses while the
    /// operation runs: no extra round trip in sequence), and the clock advances by the cost
    /// model's time for the group.
    func perform(_ kind: CommKind, bytes: Int, emulatedBytes: Double, _ start: (inout MPI_Request?) -> Void,
                 finish: () -> Void = {}) {
        let spent = Communicator.Spent(hooks.clock)
        defer { spent.end(hooks.clock) }
        var request: MPI_Request? = nil
        if let clock = hooks.activeClock, size > 1 {
            clock.flush()
            let wallStart = clock.wallNow
            var mine = clock.now, groupStart = 0.0
            var clockReq: MPI_Request? = nil
            MPI_Iallreduce(&mine, &groupStart, 1, cmpi_double(), cmpi_op_max(), clockHandle, &clockReq)
            start(&request)
            Communicator.complete(&request)
            finish()
            Communicator.complete(&clockReq)
            let emulatedBytes = charged(kind, emulatedBytes)
            let duration = clock.cost.collective(kind.collective, bytes: emulatedBytes, ranks: size,
                                                 link: clock.cost.links.link(for: members))
            clock.collective(kind.span, groupStart: groupStart, duration: duration,
                             detail: "\(kind.rawValue) \(name) \(Int(emulatedBytes)) B", wallStart: wallStart)
        } else {
            start(&request)
            Communicator.complete(&request)
            finish()
        }
        if hooks.clockSuspended == 0, !hooks.observers.isEmpty {
            let event = CommEvent(kind: kind, group: name, bytes: bytes, peer: nil)
            for o in hooks.observers { o.didComplete(event) }
        }
    }

    /// Wall seconds this process has spent inside communication: collectives from start to
    /// end, and waits for point-to-point messages and for collectives on the communication
    /// stream (issuing them is not counted). Where a rank's wall time goes, beside its CPU time.
    public nonisolated(unsafe) internal(set) static var communicationWallSeconds = 0.0

    /// The wall time of one operation, added to `communicationWallSeconds`, and inside a
    /// compute region (a layer's tensor-parallel all-reduce) its thread CPU time, reported to
    /// the clock so that it is not counted as compute. (The thread's CPU clock is a system call,
    /// about 0.5 us here: read only where it counts.)
    struct Spent {
        let wall: Double, cpu: Double?
        init(_ clock: DeviceClock?) {
            wall = DeviceClock.seconds(CLOCK_MONOTONIC)
            cpu = clock?.inComputeRegion == true ? DeviceClock.threadCPUSeconds() : nil
        }
        func end(_ clock: DeviceClock?) {
            Communicator.communicationWallSeconds += DeviceClock.seconds(CLOCK_MONOTONIC) - wall
            if let cpu, let clock { clock.communicated(cpuSeconds: DeviceClock.threadCPUSeconds() - cpu) }
        }
    }

    /// Polls with `sched_yield` before the first sleep. Non-blocking collectives progress
    /// only inside MPI_Test, so each of their rounds waits for the next poll: polling longer
    /// before sleeping keeps small collectives fast when a core is free, while `sched_yield`
    /// still hands the core to a rank with work when there is one.
    static let spinPolls = 2000

    /// Whether every rank has a core of its own: then collectives are MPI's blocking calls
    /// and waits are `MPI_Wait`, MPI's own algorithms and progress, as a bare MPI program gets
    /// them (a waiting rank spins, which costs nothing when no other rank needs the core);
    /// otherwise non-blocking calls completed by `complete`, which yields and then sleeps (on
    /// 16 ranks and 2 cores, blocking calls made the headline run 7-11% slower). Set once by
    /// `initWorld` (`chooseBlocking`).
    public nonisolated(unsafe) internal(set) static var blocking = false
    /// This rank's own choice (`chooseBlocking`), before the job agreed on `blocking`.
    public nonisolated(unsafe) internal(set) static var couldBlock = false
    /// How the job waits, for logs: "MPI's blocking calls" or "sleeping (non-blocking calls)".
    public static var waitsDescription: String { blocking ? "MPI's blocking calls" : "sleeping (non-blocking calls)" }

    /// Whether a reduction of `T` by `op` may be MPI's blocking call: only where any algorithm
    /// gives the same values, so that a run's results do not depend on whether its host had a
    /// core per rank: integers, and floating-point sums over two ranks (a + b = b + a; only
    /// which NaN payload a NaN sum carries can differ). A floating-point maximum or minimum
    /// is not order-free (Open MPI's `a > b ? a : b` keeps a NaN in one operand order and drops
    /// it in the other), nor is a sum over more ranks: those take the same path either way,
    /// the two-rank exchange or libnbc's non-blocking call, completed with `MPI_Wait` when
    /// blocking.
    @inline(__always)
    func blockingCall<T: MPIScalar>(_ type: T.Type, _ op: ReduceOp) -> Bool {
        Communicator.blocking && (!T.isFloatingPoint || (op == .sum && size <= 2))
    }

    /// Waits for a request. Blocking (`blocking`): `MPI_Wait`, which spins. Otherwise without
    /// burning the core: polls with `sched_yield`, then sleeps that double from 2 us up to
    /// 256 us between polls.
    static func complete(_ request: inout MPI_Request?) {
        if request == nil { return }   // the operation was a blocking call, already done
        if Communicator.blocking {
            MPI_Wait(&request, cmpi_status_ignore())
            return
        }
        var flag: Int32 = 0
        var polls = 0
        var sleepNs = 2_000
        while true {
            MPI_Test(&request, &flag, cmpi_status_ignore())
            if flag != 0 { return }
            polls += 1
            if polls < Communicator.spinPolls {
                sched_yield()
            } else {
                var ts = timespec(tv_sec: 0, tv_nsec: sleepNs)
                nanosleep(&ts, nil)
                sleepNs = Swift.min(sleepNs * 2, 256_000)
            }
        }
    }

    // MARK: - Collectives

    public func barrier() {
        perform(.barrier, bytes: 0, emulatedBytes: 0) { if Communicator.blocking { MPI_Barrier(handle) } else { MPI_Ibarrier(handle, &$0) } }
    }

    /// Broadcasts `count` elements at `buffer` from `root` to every rank of the group.
    public func broadcast<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, root: Int) {
        perform(.broadcast, bytes: count * MemoryLayout<T>.stride, emulatedBytes: emulatedBytes(T.self, count: count)) {
            if Communicator.blocking { MPI_Bcast(buffer, Int32(count), T.mpiType, Int32(root), handle) }
            else { MPI_Ibcast(buffer, Int32(count), T.mpiType, Int32(root), handle, &$0) }
        }
    }

    public func broadcast<T: MPIScalar>(_ values: inout [T], root: Int) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { broadcast($0.baseAddress!, count: n, root: root) }
    }

    /// In-place all-reduce of `count` elements. When every rank has a core, MPI's blocking
    /// `MPI_Allreduce` where the order of the operands cannot show (`blockingCall`);
    /// otherwise by group size (measured against the blocking call, README "Performance"):
    /// Open MPI 4.1's non-blocking all-reduce (libnbc) uses a binomial tree (reduce to one
    /// rank, then broadcast: twice log2(n) rounds of the whole message) whenever the call is in
    /// place, the message is under 64 KiB or there are fewer than 4 ranks. So:
    /// - 2 ranks: the two exchange their buffers and each combines them, one round instead of
    ///   two; `MPIScalar.combine` is symmetric to the bit, so both ranks agree.
    /// - more: libnbc, in place. Exchanging with partners instead (recursive doubling under
    ///   64 KiB, halving and gathering above) was tried on 4 and 16 ranks sharing 2 cores:
    ///   16-byte all-reduces took half the time (4 ranks: 15.5 against 28.7 us), but from 32 KiB
    ///   on they took longer (256 KiB: 325 against 234 us), and the 16-rank headline run was
    ///   11% slower: every rank must wake in every round, where a binomial tree's leaves wake twice.
    public func allReduce<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, op: ReduceOp = .sum) {
        if count == 0 { return }
        let bytes = count * MemoryLayout<T>.stride
        if let exchange = exchangeHandle, !blockingCall(T.self, op) {
            // The receive buffer comes from the heap, not fresh pages (`Allocation.keepLargeBuffersInHeap`).
            let other = UnsafeMutablePointer<T>.allocate(capacity: count)
            defer { other.deallocate() }
            perform(.allReduce, bytes: bytes, emulatedBytes: emulatedBytes(T.self, count: count), { _ in }, finish: {
                Communicator.swap(buffer, count, other, count, with: 1 - rank, on: exchange)
                T.combine(into: buffer, other, count: count, op)
            })
            return
        }
        perform(.allReduce, bytes: bytes, emulatedBytes: emulatedBytes(T.self, count: count)) {
            if blockingCall(T.self, op) { MPI_Allreduce(cmpi_in_place(), buffer, Int32(count), T.mpiType, op.mpi, handle) }
            else { MPI_Iallreduce(cmpi_in_place(), buffer, Int32(count), T.mpiType, op.mpi, handle, &$0) }
        }
    }

    /// Sends `sendCount` elements to `peer` and receives `recvCount` from it (tag 0 on the
    /// exchange communicator), then waits for both.
    static func swap<T: MPIScalar>(_ send: UnsafePointer<T>, _ sendCount: Int, _ recv: UnsafeMutablePointer<T>, _ recvCount: Int,
                                   with peer: Int, on exchange: MPI_Comm) {
        var r: MPI_Request? = nil, s: MPI_Request? = nil
        MPI_Irecv(recv, Int32(recvCount), T.mpiType, Int32(peer), 0, exchange, &r)
        MPI_Isend(send, Int32(sendCount), T.mpiType, Int32(peer), 0, exchange, &s)
        complete(&r)
        complete(&s)
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
    /// (`countPerRank` elements) of the result in `recv`. Two ranks send each other the
    /// other's block and combine it with their own (one round, half the message each way),
    /// unless the blocking call serves (`blockingCall`); more ranks, MPI's call.
    public func reduceScatter<T: MPIScalar>(_ send: UnsafePointer<T>, _ recv: UnsafeMutablePointer<T>,
                                            countPerRank: Int, op: ReduceOp = .sum) {
        let count = countPerRank * size
        if let exchange = exchangeHandle, !blockingCall(T.self, op) {
            perform(.reduceScatter, bytes: count * MemoryLayout<T>.stride, emulatedBytes: emulatedBytes(T.self, count: count), { _ in },
                    finish: {
                let peer = 1 - rank
                Communicator.swap(send + peer * countPerRank, countPerRank, recv, countPerRank, with: peer, on: exchange)
                T.combine(into: recv, send + rank * countPerRank, count: countPerRank, op)
            })
            return
        }
        perform(.reduceScatter, bytes: count * MemoryLayout<T>.stride, emulatedBytes: emulatedBytes(T.self, count: count)) {
            if blockingCall(T.self, op) { MPI_Reduce_scatter_block(send, recv, Int32(countPerRank), T.mpiType, op.mpi, handle) }
            else { MPI_Ireduce_scatter_block(send, recv, Int32(countPerRank), T.mpiType, op.mpi, handle, &$0) }
        }
    }

    /// Gathers `countPerRank` elements from every rank into `recv` (rank-ordered blocks).
    public func allGather<T: MPIScalar>(_ send: UnsafePointer<T>, _ recv: UnsafeMutablePointer<T>, countPerRank: Int) {
        perform(.allGather, bytes: countPerRank * size * MemoryLayout<T>.stride,
                emulatedBytes: emulatedBytes(T.self, count: countPerRank * size)) {
            if Communicator.blocking { MPI_Allgather(send, Int32(countPerRank), T.mpiType, recv, Int32(countPerRank), T.mpiType, handle) }
            else { MPI_Iallgather(send, Int32(countPerRank), T.mpiType, recv, Int32(countPerRank), T.mpiType, handle, &$0) }
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
        send.withUnsafeBufferPointer { s in
            out.withUnsafeMutableBufferPointer { r in
                perform(.allToAll, bytes: send.count * MemoryLayout<T>.stride, emulatedBytes: emulatedBytes(T.self, count: send.count)) {
                    MPI_Ialltoall(s.baseAddress!, Int32(countPerRank), T.mpiType, r.baseAddress!, Int32(countPerRank),
                                  T.mpiType, handle, &$0)
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
        let total = sendCounts.reduce(0, +)
        perform(.allToAll, bytes: total * MemoryLayout<T>.stride, emulatedBytes: emulatedBytes(T.self, count: total)) {
            if Communicator.blocking { MPI_Alltoallv(send, sc, sd, T.mpiType, recv, rc, rd, T.mpiType, handle) }
            else { MPI_Ialltoallv(send, sc, sd, T.mpiType, recv, rc, rd, T.mpiType, handle, &$0) }
        }
    }

    /// Gathers a variable-length byte string from every rank at `root` (in rank order);
    /// other ranks get an empty array. Lengths are exchanged first.
    public func gatherBytes(_ bytes: [UInt8], root: Int) -> [[UInt8]] {
        let lengths = allGather([Int64(bytes.count)]).map(Int.init)
        var displs = [Int](), offset = 0
        for l in lengths { displs.append(offset); offset += l }
        var out = [UInt8](repeating: 0, count: rank == root ? lengths.reduce(0, +) : 1)
        let counts32 = lengths.map { Int32($0) }, displs32 = displs.map { Int32($0) }
        bytes.withUnsafeBufferPointer { sp in
            out.withUnsafeMutableBufferPointer { rp in
                perform(.allGather, bytes: bytes.count, emulatedBytes: Double(lengths.reduce(0, +))) {
                    MPI_Igatherv(sp.baseAddress, Int32(bytes.count), cmpi_uint8(), rp.baseAddress, counts32, displs32,
                                 cmpi_uint8(), Int32(root), handle, &$0)
                }
            }
        }
        guard rank == root else { return [] }
        return (0..<size).map { Array(out[displs[$0]..<(displs[$0] + lengths[$0])]) }
    }

    /// Sends a variable-length byte string to `dest` and receives one from `src` (lengths
    /// first); every rank of a ring calls it at once, so no pairing can deadlock.
    public func exchangeBytes(_ bytes: [UInt8], to dest: Int, from src: Int, tag: Int) -> [UInt8] {
        var lengthOut = Int64(bytes.count), lengthIn = Int64(0)
        withUnsafePointer(to: &lengthOut) { op in
            withUnsafeMutablePointer(to: &lengthIn) { ip in
                let r = irecv(ip, count: 1, from: src, tag: tag)
                let s = isend(op, count: 1, to: dest, tag: tag)
                wait(s); wait(r)
            }
        }
        var received = [UInt8](repeating: 0, count: Int(lengthIn))
        bytes.withUnsafeBufferPointer { sp in
            received.withUnsafeMutableBufferPointer { rp in
                let r = rp.count > 0 ? irecv(rp.baseAddress!, count: rp.count, from: src, tag: tag) : nil
                let s = sp.count > 0 ? isend(sp.baseAddress!, count: sp.count, to: dest, tag: tag) : nil
                if let s { wait(s) }
                if let r { wait(r) }
            }
        }
        return received
    }

    // MARK: - On the communication stream

    /// A collective started with `startReduceScatter`, `startAllGather` or `startAllReduce`: MPI progresses it
    /// while the rank computes (inside the MPI calls compute makes anyway, and at `finish`).
    /// With a clock attached, the participants' issue times are max-reduced alongside, so
    /// that `finish` can place it on the emulated communication stream. The buffers given to
    /// the start must stay valid and the send buffer unchanged until `finish`.
    public final class PendingCollective {
        var request: MPI_Request?
        var clockRequest: MPI_Request?
        let kind: CommKind
        let comm: Communicator
        let bytes: Int
        let emulatedBytes: Double
        let timed: Bool
        /// [this rank's issue time, the group's latest]; heap-allocated for MPI.
        let times = UnsafeMutablePointer<Double>.allocate(capacity: 2)
        /// Per-rank counts of a reduce-scatter or all-gather (then the displacements), read by
        /// MPI until completion.
        let counts: UnsafeMutablePointer<Int32>
        let wallStart: Double
        public let detail: String
        public internal(set) var finished = false
        init(kind: CommKind, comm: Communicator, bytes: Int, emulatedBytes: Double, timed: Bool, counts: [Int], detail: String, wallStart: Double) {
            self.kind = kind; self.comm = comm; self.bytes = bytes; self.emulatedBytes = emulatedBytes; self.timed = timed
            self.detail = detail; self.wallStart = wallStart
            times.initialize(repeating: 0, count: 2)
            self.counts = .allocate(capacity: max(2 * counts.count, 1))
            var displacement = 0
            for (i, c) in counts.enumerated() {
                self.counts[i] = Int32(c)
                self.counts[counts.count + i] = Int32(displacement)
                displacement += c
            }
        }
        deinit {
            // Unfinished (a step abandoned by an error): MPI may still write these; leave them.
            if finished { times.deallocate(); counts.deallocate() }
        }
    }

    /// Completes the transfer of `op` now (its buffers may then be reused or freed), leaving its
    /// place on the emulated communication stream to `finish`. ZeRO-2 frees each gradient
    /// bucket as soon as it is reduced, while its reduction still overlaps the backward in
    /// emulated time.
    public static func completeTransfer(_ op: PendingCollective) {
        precondition(!op.finished, "a collective completed after it finished")
        let spent = Spent(op.comm.hooks.clock)
        defer { spent.end(op.comm.hooks.clock) }
        complete(&op.request)
    }

    func start(_ kind: CommKind, bytes: Int, emulatedBytes: Double, counts: [Int] = [], detail: String,
               _ begin: (PendingCollective) -> Void) -> PendingCollective {
        let clock = hooks.activeClock
        let timed = clock != nil && size > 1
        let op = PendingCollective(kind: kind, comm: self, bytes: bytes, emulatedBytes: timed ? charged(kind, emulatedBytes) : emulatedBytes,
                                   timed: timed, counts: counts,
                                   detail: detail, wallStart: clock?.wallNow ?? 0)
        begin(op)
        if timed, let clock {
            clock.flush()
            op.times[0] = clock.now
            MPI_Iallreduce(op.times, op.times + 1, 1, cmpi_double(), cmpi_op_max(), clockHandle, &op.clockRequest)
        }
        return op
    }

    /// Starts a sum over the group of `counts.reduce(0, +)` floats at `send`, of which rank r
    /// receives the `counts[r]` floats after those of the ranks before it, into `recv`
    /// (MPI_Ireduce_scatter). Every rank passes the same counts.
    public func startReduceScatter(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, counts: [Int],
                                   detail: String) -> PendingCollective {
        precondition(counts.count == size, "reduce-scatter: \(counts.count) counts for \(size) ranks")
        let total = counts.reduce(0, +)
        return start(.reduceScatter, bytes: total * 4, emulatedBytes: emulatedBytes(Float.self, count: total), counts: counts,
                     detail: detail) { op in
            MPI_Ireduce_scatter(send, recv, op.counts, Float.mpiType, ReduceOp.sum.mpi, handle, &op.request)
        }
    }

    /// Starts gathering, in place, the `counts[r]` floats each rank r holds at its place in
    /// `buffer` (after the counts of the ranks before it) into every rank's `buffer`
    /// (MPI_Iallgatherv with MPI_IN_PLACE). Every rank passes the same counts.
    public func startAllGather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int], detail: String) -> PendingCollective {
        precondition(counts.count == size, "all-gather: \(counts.count) counts for \(size) ranks")
        let total = counts.reduce(0, +)
        return start(.allGather, bytes: total * 4, emulatedBytes: emulatedBytes(Float.self, count: total), counts: counts,
                     detail: detail) { op in
            MPI_Iallgatherv(cmpi_in_place(), 0, Float.mpiType, buffer, op.counts, op.counts + size, Float.mpiType, handle, &op.request)
        }
    }

    /// Starts a sum over the group of `count` floats from `send` into `recv` (MPI_Iallreduce).
    public func startAllReduce(_ send: UnsafePointer<Float>, _ recv: UnsafeMutablePointer<Float>, count: Int,
                               detail: String) -> PendingCollective {
        start(.allReduce, bytes: count * 4, emulatedBytes: emulatedBytes(Float.self, count: count), detail: detail) { op in
            MPI_Iallreduce(send, recv, Int32(count), Float.mpiType, ReduceOp.sum.mpi, handle, &op.request)
        }
    }

    /// Completes collectives started on the communication stream, in the order given (the
    /// order they were started), and places each on the emulated communication stream; the
    /// compute stream then waits for the last of them, and what compute did not hide is
    /// recorded as exposed `detail`.
    public static func finish(_ ops: [PendingCollective], exposedAs kind: CommKind, detail: String) {
        let spent = Spent(ops.first?.comm.hooks.clock)
        defer { spent.end(ops.first?.comm.hooks.clock) }
        var last = -Double.infinity
        var clock: DeviceClock? = nil
        // The compute so far is recorded before any waiting (the polling below is not compute).
        for op in ops where op.timed { op.comm.hooks.clock?.flush() }
        for op in ops {
            precondition(!op.finished, "a collective finished twice")
            let hooks = op.comm.hooks
            complete(&op.request)
            if op.clockRequest != nil { complete(&op.clockRequest) }   // whether or not a clock is still attached
            if op.timed, let c = hooks.clock {
                let duration = c.cost.collective(op.kind.collective, bytes: op.emulatedBytes, ranks: op.comm.size,
                                                 link: c.cost.links.link(for: op.comm.members))
                last = max(last, c.streamCollective(op.kind.span, groupIssue: op.times[1], duration: duration,
                                                    detail: "\(op.kind.rawValue) \(op.comm.name) \(Int(op.emulatedBytes)) B " + op.detail,
                                                    wallStart: op.wallStart))
                clock = c
            }
            op.finished = true
            if hooks.clockSuspended == 0 {
                let event = CommEvent(kind: op.kind, group: op.comm.name, bytes: op.bytes, peer: nil)
                for o in hooks.observers { o.didComplete(event) }
            }
        }
        if let clock, last.isFinite { clock.waitForStream(until: last, as: kind.span, detail: detail) }
    }

    // MARK: - Point to point

    /// A pending non-blocking send or receive. Complete it with `wait`.
    /// With a clock attached, a companion message on the clock communicator carries the
    /// sender's emulated time; the receiver's clock advances on `wait`.
    public final class Request {
        var handle: MPI_Request?
        var clockHandle: MPI_Request?
        let event: CommEvent
        let emulatedBytes: Double
        /// Sender: its clock at the send; receiver: filled by the companion message.
        /// Heap-allocated because MPI reads or writes it after the call that starts it returns.
        let sentAt = UnsafeMutablePointer<Double>.allocate(capacity: 1)
        let timed: Bool
        init(event: CommEvent, emulatedBytes: Double, timed: Bool) {
            self.event = event; self.emulatedBytes = emulatedBytes; self.timed = timed
            sentAt.initialize(to: 0)
        }
        deinit { sentAt.deallocate() }
    }

    /// Starts sending `count` elements to `peer`. The buffer must stay valid and unchanged until `wait`.
    /// Sending costs the sender nothing on its emulated clock (copy engines are asynchronous);
    /// the receiver pays the transfer.
    public func isend<T: MPIScalar>(_ buffer: UnsafePointer<T>, count: Int, to peer: Int, tag: Int) -> Request {
        let ev = CommEvent(kind: .send, group: name, bytes: count * MemoryLayout<T>.stride, peer: peer)
        let clock = hooks.activeClock
        let r = Request(event: ev, emulatedBytes: clock != nil ? charged(.send, emulatedBytes(T.self, count: count)) : emulatedBytes(T.self, count: count), timed: clock != nil)
        MPI_Isend(buffer, Int32(count), T.mpiType, Int32(peer), Int32(tag), handle, &r.handle)
        if let clock {
            clock.flush()
            r.sentAt.pointee = clock.now
            MPI_Isend(r.sentAt, 1, cmpi_double(), Int32(peer), Int32(tag), clockHandle, &r.clockHandle)
        }
        return r
    }

    /// Starts receiving `count` elements from `peer` into `buffer`.
    public func irecv<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, from peer: Int, tag: Int) -> Request {
        let ev = CommEvent(kind: .recv, group: name, bytes: count * MemoryLayout<T>.stride, peer: peer)
        let clock = hooks.activeClock
        let r = Request(event: ev, emulatedBytes: clock != nil ? charged(.recv, emulatedBytes(T.self, count: count)) : emulatedBytes(T.self, count: count), timed: clock != nil)
        MPI_Irecv(buffer, Int32(count), T.mpiType, Int32(peer), Int32(tag), handle, &r.handle)
        if clock != nil {
            MPI_Irecv(r.sentAt, 1, cmpi_double(), Int32(peer), Int32(tag), clockHandle, &r.clockHandle)
        }
        return r
    }

    /// Completes a request started by `isend` or `irecv`. For a receive with a clock, the
    /// receiver's clock becomes max(own, sent_at + alpha + bytes / beta).
    public func wait(_ request: Request) {
        let spent = Communicator.Spent(hooks.clock)
        defer { spent.end(hooks.clock) }
        if request.timed && request.event.kind == .recv { hooks.clock?.flush() }
        let wallStart = hooks.clock?.wallNow ?? 0
        Communicator.complete(&request.handle)
        if request.timed {
            Communicator.complete(&request.clockHandle)
            if request.event.kind == .recv, let clock = hooks.clock, let peer = request.event.peer {
                let link = clock.cost.links.link(for: [members[rank], members[peer]])
                clock.receive(sentAt: request.sentAt.pointee, transfer: clock.cost.pointToPoint(bytes: request.emulatedBytes, link: link),
                              detail: "recv from \(name) rank \(peer), \(Int(request.emulatedBytes)) B", wallStart: wallStart)
            }
        }
        if hooks.clockSuspended == 0 { for o in hooks.observers { o.didComplete(request.event) } }
    }

    public func send<T: MPIScalar>(_ buffer: UnsafePointer<T>, count: Int, to peer: Int, tag: Int) {
        wait(isend(buffer, count: count, to: peer, tag: tag))
    }

    public func recv<T: MPIScalar>(_ buffer: UnsafeMutablePointer<T>, count: Int, from peer: Int, tag: Int) {
        wait(irecv(buffer, count: count, from: peer, tag: tag))
    }
}
