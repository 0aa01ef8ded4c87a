import Tensor

/// The mixture-of-experts feed-forward layer:
/// y_t = sum_j kept_{t,j} * g_{t,j} * Expert_{e_{t,j}}(x_t).
///
/// Every rank of a tensor-parallel group routes all tokens of its replica (the router is
/// replicated), then handles the assignments of its own 1/tp slice of the tokens: their
/// rows travel to the expert-parallel rank that owns the expert (all-to-all-v, counts
/// first), are processed there, come back by the inverse exchange and are combined with
/// their gates; the partial outputs are summed over the TP group. Under sequence parallelism
/// the layer starts from the rank's block of tokens, which is exactly that slice: it scores
/// its own tokens, gathers the scores (N x E floats, so that every rank routes the whole
/// micro-batch and capacity and the load-balancing loss see every sequence whole), and its
/// output is its block's rows, complete: no TP collective on the activations in either
/// direction. On one rank the exchanges are the identity and this is the plain gather /
/// expert MLP / combine.
public enum MoE {
    public struct Weights {
        public let router: Tensor  // (E, C), replicated
        public let wUp: Tensor     // (E_local, F, C): this rank's experts
        public let wDown: Tensor   // (E_local, C, F)
        public let wGate: Tensor?  // (E_local, F, C): SwiGLU experts' gate projections
        public init(router: Tensor, wUp: Tensor, wDown: Tensor, wGate: Tensor? = nil) {
            self.router = router; self.wUp = wUp; self.wDown = wDown; self.wGate = wGate
        }

        var localExperts: Int { wUp.shape[0] }

        func up(_ e: Int) -> Tensor {
            let f = wUp.shape[1], c = wUp.shape[2]
            return Tensor(view: wUp.storage, offset: wUp.offset + e * f * c, shape: [f, c])
        }
        func gate(_ e: Int) -> Tensor? {
            guard let wGate else { return nil }
            let f = wGate.shape[1], c = wGate.shape[2]
            return Tensor(view: wGate.storage, offset: wGate.offset + e * f * c, shape: [f, c])
        }
        func down(_ e: Int) -> Tensor {
            let c = wDown.shape[1], f = wDown.shape[2]
            return Tensor(view: wDown.storage, offset: wDown.offset + e * c * f, shape: [c, f])
        }
    }

    /// The rows one local expert processed: `rows[r]` is the index of row r in the
    /// received buffer.
    struct ExpertBatch {
        let rows: [Int]
        let ff: FeedForward.Cache
        let y: Tensor  // (n_e, C) expert output before gating
    }

    /// Who sends what to whom, fixed by the routing: the same plan serves the forward,
    /// the return trip and both exchanges of the backward.
    struct Dispatch {
        let sendSlots: [Int]      // assignment slots t*K+j of this rank's tokens, ordered by (destination, expert, slot)
        let sendRows: [Int]       // rows per destination EP rank
        let recvRows: [Int]       // rows per source EP rank
        let perExpert: [[Int]]    // for each local expert, indices of its rows in the received buffer
    }

    public struct Cache {
        let x: Tensor
        public let routing: Routing
        let tokens: Range<Int>
        let dispatch: Dispatch
        let batches: [ExpertBatch?]
        let returned: [Float]     // expert outputs back at the sender, in sendSlots order
        /// Floats this cache holds beyond its input (which belongs to the caller): the
        /// routing's, the exchanged rows, per expert its hidden activations and output.
        public var floatCount: Int {
            batches.reduce(routing.floatCount + returned.count) { $0 + ($1.map { $0.ff.x.count + $0.ff.floatCount + $0.y.count } ?? 0) }
        }
    }

    public struct Options {
        public let topK: Int
        public let seqLen: Int
        public let capacity: Int?
        public let auxCoef: Float
        public let zCoef: Float
        public let experts: Int
        public init(config c: ModelConfig) {
            topK = c.topK; seqLen = c.seqLen; capacity = c.expertCapacity
            auxCoef = Float(c.auxLossCoef); zCoef = Float(c.zLossCoef); experts = c.experts
        }
    }

    /// The token rows x holds (all N; under sequence parallelism this rank's block) and the
    /// first one's index in the micro-batch.
    static func heldRows(_ x: Tensor, _ shard: ShardSpec) -> (tokens: Int, base: Int) {
        shard.sequenceParallel ? (x.rows * shard.tp, shard.tpRank * x.rows) : (x.rows, 0)
    }

    /// x (N, C) -> y (N, C), complete on every TP rank; under sequence parallelism x and y
    /// are this rank's block of rows.
    public static func forward(_ x: Tensor, _ w: Weights, options o: Options, parallel: ModelParallelism, y: Tensor) -> Cache {
        let c = x.cols, K = o.topK
        let shard = parallel.shard
        let (n, base) = heldRows(x, shard)
        let routing: Routing
        if shard.sequenceParallel {
            let mine = Router.logits(x, router: w.router)
            let all = Tensor(zeros: [n, mine.cols])
            parallel.tpAllGather(mine.ptr, all.ptr, countPerRank: mine.count)
            routing = Router.route(logits: all, topK: K, seqLen: o.seqLen, capacity: o.capacity)
        } else {
            routing = Router.route(x, router: w.router, topK: K, seqLen: o.seqLen, capacity: o.capacity)
        }
        let tokens = (shard.tpRank * n / shard.tp)..<((shard.tpRank + 1) * n / shard.tp)
        let dispatch = plan(routing, tokens: tokens, localExperts: w.localExperts, parallel: parallel)
        Kernels.routed(sent: dispatch.sendSlots.count, received: dispatch.perExpert.map(\.count))
        // Send the token rows, process them, send the outputs back.
        var rows = [Float](repeating: 0, count: dispatch.sendSlots.count * c)
        rows.withUnsafeMutableBufferPointer { r in
            for (i, slot) in dispatch.sendSlots.enumerated() { (r.baseAddress! + i * c).update(from: x.ptr + (slot / K - base) * c, count: c) }
        }
        Kernels.account(flops: 0, elements: Double(2 * rows.count))
        let received = parallel.epExchange(rows, sendRows: dispatch.sendRows, recvRows: dispatch.recvRows, width: c).rows
        var outRows = [Float](repeating: 0, count: received.count)
        var batches = [ExpertBatch?](repeating: nil, count: w.localExperts)
        Kernels.expertSection(rows: dispatch.perExpert.map(\.count))
        for (e, idx) in dispatch.perExpert.enumerated() where !idx.isEmpty {
            let xe = gather(received, idx, width: c)
            let ye = Tensor(zeros: [idx.count, c])
            let ff = FeedForward.forward(xe, wUp: w.up(e), wDown: w.down(e), wGate: w.gate(e), y: ye)
            scatter(ye, idx, into: &outRows, width: c)
            batches[e] = ExpertBatch(rows: idx, ff: ff, y: ye)
        }
        Kernels.expertSection(rows: nil)
        let returned = parallel.epExchange(outRows, sendRows: dispatch.recvRows, recvRows: dispatch.sendRows, width: c).rows
        // Combine: y_t += g * expert output, for this rank's tokens; then sum over TP (under
        // sequence parallelism y holds only these tokens, and is complete).
        y.zero()
        Kernels.account(flops: Double(2 * returned.count), elements: Double(2 * returned.count + tokens.count * c))
        returned.withUnsafeBufferPointer { r in
            for (i, slot) in dispatch.sendSlots.enumerated() {
                Kernels.axpy(c, routing.gate[slot], r.baseAddress! + i * c, y.ptr + (slot / K - base) * c)
            }
        }
        if !shard.sequenceParallel { parallel.tpAllReduce(y) }
        return Cache(x: x, routing: routing, tokens: tokens, dispatch: dispatch, batches: batches, returned: returned)
    }

    /// dy (N, C), complete on every TP rank -> dx (N, C) (added when `accumulate`; under
    /// sequence parallelism both are this rank's block of rows);
    /// expert weight gradients accumulated into `dw`, the router's partial (this rank's
    /// tokens) into `dw.router`.
    public static func backward(_ cache: Cache, _ w: Weights, options o: Options, parallel: ModelParallelism,
                                scale: LossScale, dy: Tensor, dw: Weights, dx: Tensor, accumulate: Bool) {
        let r = cache.routing, d = cache.dispatch
        let held = cache.x.rows, c = cache.x.cols, K = o.topK
        let (n, base) = heldRows(cache.x, parallel.shard)
        let partial = Tensor(zeros: [held, c])
        var dGate = [Float](repeating: 0, count: n * K)
        Kernels.routed(sent: d.sendSlots.count, received: d.perExpert.map(\.count))
        // Gate gradients and the gradients of the expert outputs, in send order.
        var dRows = [Float](repeating: 0, count: d.sendSlots.count * c)
        Kernels.account(flops: Double(4 * dRows.count), elements: Double(3 * dRows.count))
        cache.returned.withUnsafeBufferPointer { ret in
            dRows.withUnsafeMutableBufferPointer { dr in
                for (i, slot) in d.sendSlots.enumerated() {
                    let g = dy.ptr + (slot / K - base) * c
                    dGate[slot] = Kernels.dot(c, g, ret.baseAddress! + i * c)
                    Kernels.axpy(c, r.gate[slot], g, dr.baseAddress! + i * c)
                }
            }
        }
        let received = parallel.epExchange(dRows, sendRows: d.sendRows, recvRows: d.recvRows, width: c).rows
        var dxRows = [Float](repeating: 0, count: received.count)
        Kernels.expertSection(rows: d.perExpert.map(\.count))
        for (e, batch) in cache.batches.enumerated() {
            guard let batch else { continue }
            let dye = gather(received, batch.rows, width: c)
            let dxe = Tensor(zeros: [batch.rows.count, c])
            FeedForward.backward(batch.ff, wUp: w.up(e), wDown: w.down(e), wGate: w.gate(e), dy: dye,
                                 dwUp: dw.up(e), dwDown: dw.down(e), dwGate: dw.gate(e), dx: dxe, accumulate: false)
            scatter(dxe, batch.rows, into: &dxRows, width: c)
        }
        Kernels.expertSection(rows: nil)
        let back = parallel.epExchange(dxRows, sendRows: d.recvRows, recvRows: d.sendRows, width: c).rows
        Kernels.account(flops: Double(back.count), elements: Double(3 * back.count))
        back.withUnsafeBufferPointer { b in
            for (i, slot) in d.sendSlots.enumerated() { Kernels.axpy(c, 1, b.baseAddress! + i * c, partial.ptr + (slot / K - base) * c) }
        }
        Router.backward(r, dGate: dGate, tokens: cache.tokens, x: cache.x, router: w.router, dRouter: dw.router,
                        seqLen: o.seqLen, auxCoef: o.auxCoef, zCoef: o.zCoef, scale: scale, dx: partial, rowBase: base)
        if !parallel.shard.sequenceParallel { parallel.tpAllReduce(partial) }
        if accumulate { Kernels.axpy(held * c, 1, partial.ptr, dx.ptr) } else { dx.ptr.update(from: partial.ptr, count: held * c) }
    }

    /// Orders this rank's kept assignments by (destination EP rank, expert, slot), exchanges
    /// the per-expert counts, and lays out which received rows belong to which local expert.
    static func plan(_ r: Routing, tokens: Range<Int>, localExperts El: Int, parallel: ModelParallelism) -> Dispatch {
        let K = r.k, ep = parallel.shard.ep
        var perGlobalExpert = [[Int]](repeating: [], count: r.experts)
        for t in tokens { for j in 0..<K where r.kept[t * K + j] { perGlobalExpert[Int(r.choice[t * K + j])].append(t * K + j) } }
        let sendSlots = perGlobalExpert.flatMap { $0 }
        let counts = perGlobalExpert.map { Int32($0.count) }        // dest-major: expert e goes to rank e / El
        let received = parallel.epExchangeCounts(counts, perRank: El).map(Int.init)  // source-major: (source, local expert)
        var sendRows = [Int](repeating: 0, count: ep), recvRows = [Int](repeating: 0, count: ep)
        for e in 0..<r.experts { sendRows[e / El] += Int(counts[e]) }
        var perExpert = [[Int]](repeating: [], count: El)
        var row = 0
        for s in 0..<ep {
            for le in 0..<El {
                let k = received[s * El + le]
                recvRows[s] += k
                perExpert[le] += Array(row..<(row + k))
                row += k
            }
        }
        return Dispatch(sendSlots: sendSlots, sendRows: sendRows, recvRows: recvRows, perExpert: perExpert)
    }

    static func gather(_ rows: [Float], _ idx: [Int], width c: Int) -> Tensor {
        let t = Tensor(zeros: [idx.count, c])
        rows.withUnsafeBufferPointer { src in
            for (r, i) in idx.enumerated() { (t.ptr + r * c).update(from: src.baseAddress! + i * c, count: c) }
        }
        Kernels.account(flops: 0, elements: Double(2 * idx.count * c))
        return t
    }

    static func scatter(_ t: Tensor, _ idx: [Int], into rows: inout [Float], width c: Int) {
        rows.withUnsafeMutableBufferPointer { dst in
            for (r, i) in idx.enumerated() { (dst.baseAddress! + i * c).update(from: t.ptr + r * c, count: c) }
        }
        Kernels.account(flops: 0, elements: Double(2 * idx.count * c))
    }
}
