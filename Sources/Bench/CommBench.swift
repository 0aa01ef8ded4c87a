import Foundation
import Comm
import Emulation
#if canImport(Glibc)
import Glibc
#endif

/// `moe-train bench-comm` (under mpirun): latency and bandwidth of the Communicator's
/// collectives and point-to-point messages, timed the same way as `launch/bench_mpi.c`
/// times the bare MPI calls: barrier, N back-to-back operations, the slowest rank's time / N.
public enum CommBench {
    public static let sizes = [8, 64, 512, 4096, 32768, 262_144, 2_097_152, 16_777_216]

    public static func run(quick: Bool, log: (String) -> Void) -> [String: Any] {
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        let n = world.size, r = world.rank
        var results: [[String: Any]] = []
        for bytes in quick ? [8, 65536] : sizes {
            let floats = max(bytes / 4, n)                 // at least one element per rank for reduce-scatter
            let per = floats / n
            let iterations = max(3, min(200, (quick ? 4 : 64) * 1_048_576 / max(bytes, 1)))
            let send = [Float](repeating: 1, count: per * n)
            var recv = [Float](repeating: 0, count: per * n)
            let counts = [Int](repeating: per, count: n)
            let displs = (0..<n).map { $0 * per }
            func time(_ op: () -> Void) -> Double {
                op()  // warm-up
                world.barrier()
                let t0 = DeviceClock.seconds(CLOCK_MONOTONIC)
                for _ in 0..<iterations { op() }
                let mine = (DeviceClock.seconds(CLOCK_MONOTONIC) - t0) / Double(iterations)
                return world.allReduce(mine, op: .max)
            }
            var buffer = send
            let ar = time { buffer.withUnsafeMutableBufferPointer { world.allReduce($0.baseAddress!, count: per * n) } }
            let rs = send.withUnsafeBufferPointer { s in recv.withUnsafeMutableBufferPointer { d in
                time { world.reduceScatter(s.baseAddress!, d.baseAddress!, countPerRank: per) } } }
            let ag = send.withUnsafeBufferPointer { s in recv.withUnsafeMutableBufferPointer { d in
                time { world.allGather(s.baseAddress!, d.baseAddress!, countPerRank: per) } } }
            let a2a = send.withUnsafeBufferPointer { s in recv.withUnsafeMutableBufferPointer { d in
                time { world.allToAllV(s.baseAddress!, sendCounts: counts, sendDispls: displs, d.baseAddress!, recvCounts: counts, recvDispls: displs) } } }
            // Send/recv: ring exchange of the whole buffer with the next and previous rank.
            let next = (r + 1) % n, prev = (r + n - 1) % n
            let p2p = send.withUnsafeBufferPointer { s in recv.withUnsafeMutableBufferPointer { d in
                time {
                    let rq = world.irecv(d.baseAddress!, count: per * n, from: prev, tag: 1)
                    let sq = world.isend(s.baseAddress!, count: per * n, to: next, tag: 1)
                    world.wait(sq); world.wait(rq)
                } } }
            for (op, t) in [("all-reduce", ar), ("reduce-scatter", rs), ("all-gather", ag), ("all-to-all-v", a2a), ("send-recv", p2p)] {
                results.append(["op": op, "bytes": per * n * 4, "seconds": t])
            }
        }
        if r == 0 { log("bench-comm: \(results.count) measurements on \(n) ranks") }
        return ["np": n, "waits": Communicator.blocking ? "block" : "sleep", "results": results]
    }

}
