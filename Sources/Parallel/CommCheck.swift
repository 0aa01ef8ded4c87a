import Comm
import Plan
import Emulation
import Tensor

/// A self-test of the Communicator over real MPI, in the spirit of nccl-tests: every
/// operation is run on the world and on the sub-groups of a topology, and its result is
/// compared with the value it must have. Used by `moe-train comm-check` and the tests.
public enum CommCheck {
    public struct Report: Sendable {
        public var checks = 0
        public var failures: [String] = []
    }

    public static func run(world: Communicator, topology: Topology) -> Report {
        var report = Report()
        func expect(_ ok: Bool, _ what: @autoclosure () -> String) {
            report.checks += 1
            if !ok { report.failures.append("rank \(world.rank): \(what())") }
        }
        let groups = ProcessGroups(world: world, topology: topology)
        for comm in [groups.world, groups.tp, groups.pp, groups.dp, groups.ep, groups.edp] {
            check(comm, expect)
        }
        // Each group must hold exactly the ranks the topology says, in its order.
        for (g, comm) in [(Topology.Group.tp, groups.tp), (.pp, groups.pp), (.dp, groups.dp), (.ep, groups.ep), (.edp, groups.edp)] {
            let members = comm.allGather([Int32(world.rank)]).map(Int.init)
            expect(members == topology.members(g, of: world.rank),
                   "\(g.rawValue) group holds \(members), topology says \(topology.members(g, of: world.rank))")
        }
        checkClock(world, &report)
        return report
    }

    /// The emulated clock through real messages: rank 0 computes a GEMM of known modeled
    /// cost and then sends to rank 1, which had nothing to do: rank 1 must record exactly
    /// an idle span of the GEMM's cost, then the transfer alpha + bytes / beta. A collective
    /// then starts at the latest participant's clock.
    static func checkClock(_ world: Communicator, _ report: inout Report) {
        guard world.size >= 2 else { return }
        func expect(_ ok: Bool, _ what: @autoclosure () -> String) {
            report.checks += 1
            if !ok { report.failures.append("rank \(world.rank): clock: \(what())") }
        }
        let link = LinkClass(alpha: 5e-6, beta: 100e9)
        let device = DeviceProfile(name: "check", peakFLOPS: 100e12, memoryBytes: 80e9, memoryBandwidth: 2e12,
                                   flopsEfficiency: 0.5, memoryEfficiency: 1, kernelLaunchSeconds: 1e-6,
                                   intraNode: link, interNode: LinkClass(alpha: 20e-6, beta: 10e9))
        let cost = CostModel(device: device, bytesPerElement: 2, links: LinkModel(intraNode: link, interNode: device.interNode, gpusPerNode: 64))
        let clock = DeviceClock(mode: .modeled, cost: cost)
        defer { world.detachClock() }
        world.attach(clock: clock, floatBytes: 2)
        let m = 256, n = 128, k = 512, count = 4096
        let gemmCost = cost.kernel(flops: 2.0 * Double(m * n * k), elements: Double(m * k + k * n + m * n))
        var payload = [Float](repeating: 1.5, count: count)
        if world.rank == 0 {
            let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [k, n]), c = Tensor(zeros: [m, n])
            clock.compute(.forward, "gemm") {
                Kernels.with(KernelContext(accountant: clock)) {
                    Kernels.gemm(transA: false, transB: false, m: m, n: n, k: k, a: a.ptr, lda: k, b: b.ptr, ldb: n, c: c.ptr, ldc: n)
                }
            }
            expect(clock.now == gemmCost, "sender clock \(clock.now), want \(gemmCost)")
            payload.withUnsafeBufferPointer { world.send($0.baseAddress!, count: count, to: 1, tag: 3) }
        } else if world.rank == 1 {
            payload.withUnsafeMutableBufferPointer { world.recv($0.baseAddress!, count: count, from: 0, tag: 3) }
            let transfer = link.alpha + Double(count) * 2 / link.beta
            let kinds = clock.spans.map(\.kind)
            expect(kinds == [.idle, .recvWait], "receiver spans \(kinds)")
            if kinds.count == 2 {
                expect(clock.spans[0].start == 0 && clock.spans[0].end == gemmCost,
                       "idle span \(clock.spans[0].start)...\(clock.spans[0].end), want 0...\(gemmCost)")
                expect(abs(clock.spans[1].duration - transfer) <= 1e-15,
                       "transfer span \(clock.spans[1].duration), want \(transfer)")
            }
            expect(abs(clock.now - (gemmCost + transfer)) <= 1e-15, "receiver clock \(clock.now), want \(gemmCost + transfer)")
        }
        // A collective starts at the latest clock: rank 1's (or rank 0's if it is alone ahead).
        let before = clock.now
        let latest = world.untimed { world.allReduce(before, op: .max) }
        var x: [Float] = [1, 2, 3, 4]
        world.allReduce(&x)
        let want = latest + cost.collective(.allReduce, bytes: 8, ranks: world.size, link: link)
        expect(abs(clock.now - want) <= 1e-12, "after all-reduce clock \(clock.now), want \(want)")
    }

    static func check(_ c: Communicator, _ expect: (Bool, @autoclosure () -> String) -> Void) {
        let n = c.size, r = c.rank, name = c.name
        c.barrier()

        // broadcast from the last rank
        var b: [Float] = (0..<5).map { Float(r * 10 + $0) }
        c.broadcast(&b, root: n - 1)
        expect(b == (0..<5).map { Float((n - 1) * 10 + $0) }, "\(name): broadcast gave \(b)")

        // all-reduce sum and max, Float and Double
        var s: [Float] = (0..<7).map { Float(r + $0) }
        c.allReduce(&s)
        expect(s == (0..<7).map { Float(n * (n - 1) / 2 + n * $0) }, "\(name): all-reduce sum gave \(s)")
        var m: [Double] = [Double(r), -Double(r)]
        c.allReduce(&m, op: .max)
        expect(m == [Double(n - 1), 0], "\(name): all-reduce max gave \(m)")

        // Every rank of any group gets the same bits, also where the order could show: +0 / -0,
        // NaN, and sums that round (a group's ranks must hold identical reduced gradients).
        let edge: [Float] = [r % 2 == 0 ? 0 : -0.0, r == 0 ? .nan : Float(r), 0.1 * Float(r + 1), r % 2 == 0 ? -0.0 : 0]
        /// Max, min and sum of three arrays over the group, required to agree on every rank bit for bit.
        func reducedAlike(max mx: [Float], min mn: [Float], sum sm: [Float]) -> (max: [Float], min: [Float], sum: [Float]) {
            var (mx, mn, sm) = (mx, mn, sm)
            c.allReduce(&mx, op: .max)
            c.allReduce(&mn, op: .min)
            c.allReduce(&sm)
            let bits = (mx + mn + sm).map { Int64($0.bitPattern) }
            let all = c.allGather(bits)
            expect((0..<n).allSatisfy { Array(all[($0 * bits.count)..<(($0 + 1) * bits.count)]) == bits },
                   "\(name): all-reduce results differ between ranks in their bits")
            return (mx, mn, sm)
        }
        _ = reducedAlike(max: edge, min: edge, sum: edge.map { $0.isNaN ? 1e-8 : $0 + 1e-8 * Float(r) })

        // Two ranks reduce floats by an exchange of their own (see allReduce; a sum by MPI's
        // blocking call when every rank has a core): both must also hold the same NaN payloads
        // (NaN + -NaN keeps the first operand's sign on x86), with +0 above -0 and NaN winning.
        // (Larger groups use MPI's algorithms: held to agreement above, not to these rules.)
        if n == 2 {
            let zeros: [Float] = [r == 0 ? 0 : -0.0, r == 0 ? .nan : 1, r == 0 ? -0.0 : 0]
            // (eleven sums, so that both the eight-lane loop and the tail are covered)
            let (mx, mn, sm) = reducedAlike(max: zeros, min: zeros, sum: [r == 0 ? .nan : -.nan, .infinity * (r == 0 ? 1 : -1), 0.1 * Float(r + 1)]
                                                + [r == 0 ? -.nan : .nan, 1, 2, 3, 4, 5, 6, r == 0 ? .nan : 7])
            // Zero maxima and minima: +0 above -0, and NaN wins, whichever way the ranks wait.
            expect(mx[0].bitPattern == Float(0).bitPattern && mx[1].isNaN && mx[2].bitPattern == Float(0).bitPattern
                   && mn[0].bitPattern == Float(-0.0).bitPattern && mn[1].isNaN && mn[2].bitPattern == Float(-0.0).bitPattern
                   && sm[0].isNaN && sm[1].isNaN && sm[2] == Float(0.1) + Float(0.2) && sm[3].isNaN
                   && sm[10].isNaN && sm[4] == 2,
                   "\(name): max/min/sum of +0/-0, NaN and infinities gave \(mx), \(mn), \(sm)")
        }

        // Large all-reduces with odd counts (the exchange's eight-lane combine and its tail, MPI's
        // segmented algorithms): integer-valued sums and maxima are exact in any order; sums
        // of 0.1 (r + 1) i must be close, and agree across the ranks bit for bit.
        for count in [16_387, 70_001] {
            var sum = (0..<count).map { Float((r + 1) * ($0 % 1000)) }
            var top = (0..<count).map { Float(($0 * 7 + r * 131) % 977) }
            var fraction = (0..<count).map { 0.1 * Float(r + 1) * Float($0 % 97) }
            c.allReduce(&sum)
            c.allReduce(&top, op: .max)
            c.allReduce(&fraction)
            let wantSum = (0..<count).map { Float(n * (n + 1) / 2 * ($0 % 1000)) }
            let wantTop = (0..<count).map { i in Float((0..<n).map { (i * 7 + $0 * 131) % 977 }.max()!) }
            expect(sum == wantSum, "\(name): all-reduce sum of \(count) floats wrong at element \(sum.indices.first { sum[$0] != wantSum[$0] } ?? -1)")
            expect(top == wantTop, "\(name): all-reduce max of \(count) floats wrong at element \(top.indices.first { top[$0] != wantTop[$0] } ?? -1)")
            let ranksSum = Float(n * (n + 1) / 2)
            var spread: Float = 0
            for i in 0..<count {
                let want: Float = ranksSum * 0.1 * Float(i % 97)
                spread = max(spread, abs(fraction[i] - want) / max(abs(want), 1e-30))
            }
            expect(spread < 1e-5, "\(name): all-reduce sum of \(count) fractions off by \(spread) relative")
            let digest = fraction.reduce(into: UInt64(1469598103934665603)) { h, x in h = (h ^ UInt64(x.bitPattern)) &* 1099511628211 }
            let digests = c.allGather([Int64(bitPattern: digest)])
            expect(Set(digests).count == 1, "\(name): all-reduce of \(count) fractions differs between ranks in its bits")
        }

        // reduce-scatter: element j of rank i's input is i + j; block r of the sum comes back.
        // (Small and large: two ranks reduce-scatter by one exchange of blocks.)
        for per in [3, 17_000] {
            let send: [Float] = (0..<(per * n)).map { Float(r + $0 % 4096) }
            var recv = [Float](repeating: -1, count: per)
            send.withUnsafeBufferPointer { sp in
                recv.withUnsafeMutableBufferPointer { rp in c.reduceScatter(sp.baseAddress!, rp.baseAddress!, countPerRank: per) }
            }
            let wantRS = (0..<per).map { Float(n * (n - 1) / 2 + n * ((r * per + $0) % 4096)) }
            expect(recv == wantRS, "\(name): reduce-scatter of \(per) per rank wrong at element \(recv.indices.first { recv[$0] != wantRS[$0] } ?? -1)")

            let mine = (0..<per).map { Float(r * 1000 + $0 % 1000) }
            let gathered = c.allGather(mine)
            let wantAG = (0..<n).flatMap { i in (0..<per).map { Float(i * 1000 + $0 % 1000) } }
            expect(gathered == wantAG, "\(name): all-gather of \(per) per rank wrong at element \(gathered.indices.first { gathered[$0] != wantAG[$0] } ?? -1)")
        }

        // all-to-all-v: rank r sends (j + 1) copies of (100 r + j) to rank j; counts exchanged first.
        let sendCounts = (0..<n).map { $0 + 1 }
        let recvCounts = c.allToAll(sendCounts.map { Int32($0) }, countPerRank: 1).map(Int.init)
        expect(recvCounts == Array(repeating: r + 1, count: n), "\(name): count exchange gave \(recvCounts)")
        let sendDispls = prefixSums(sendCounts), recvDispls = prefixSums(recvCounts)
        let payload: [Float] = (0..<n).flatMap { j in Array(repeating: Float(100 * r + j), count: j + 1) }
        var got = [Float](repeating: -1, count: recvCounts.reduce(0, +))
        payload.withUnsafeBufferPointer { sp in
            got.withUnsafeMutableBufferPointer { rp in
                c.allToAllV(sp.baseAddress!, sendCounts: sendCounts, sendDispls: sendDispls,
                            rp.baseAddress!, recvCounts: recvCounts, recvDispls: recvDispls)
            }
        }
        let wantA2A: [Float] = (0..<n).flatMap { i in Array(repeating: Float(100 * i + r), count: r + 1) }
        expect(got == wantA2A, "\(name): all-to-all-v gave \(got), want \(wantA2A)")

        // ring send/recv, non-blocking both ways (no deadlock whatever the order)
        if n > 1 {
            let next = (r + 1) % n, prev = (r + n - 1) % n
            var out: [Float] = [Float(r), 0.5]
            var inbox: [Float] = [-1, -1]
            out.withUnsafeMutableBufferPointer { op in
                inbox.withUnsafeMutableBufferPointer { ip in
                    let rq = c.irecv(ip.baseAddress!, count: 2, from: prev, tag: 7)
                    let sq = c.isend(UnsafePointer(op.baseAddress!), count: 2, to: next, tag: 7)
                    c.wait(sq); c.wait(rq)
                }
            }
            expect(inbox == [Float(prev), 0.5], "\(name): ring isend/irecv gave \(inbox)")
            // blocking pair exchange, ordered by rank parity to avoid a cycle
            var v: [Int64] = [Int64(r)]
            var w: [Int64] = [-1]
            v.withUnsafeMutableBufferPointer { vp in
                w.withUnsafeMutableBufferPointer { wp in
                    if r % 2 == 0 {
                        c.send(UnsafePointer(vp.baseAddress!), count: 1, to: next, tag: 9)
                        c.recv(wp.baseAddress!, count: 1, from: prev, tag: 9)
                    } else {
                        c.recv(wp.baseAddress!, count: 1, from: prev, tag: 9)
                        c.send(UnsafePointer(vp.baseAddress!), count: 1, to: next, tag: 9)
                    }
                }
            }
            expect(w == [Int64(prev)], "\(name): blocking send/recv gave \(w)")
        }
        c.barrier()
    }

    static func prefixSums(_ a: [Int]) -> [Int] {
        var out = [Int](), acc = 0
        for x in a { out.append(acc); acc += x }
        return out
    }
}
