import Tensor

/// The mixture-of-experts feed-forward layer on one rank holding every expert:
/// route, gather each expert's tokens, run the expert MLP, and combine
/// y_t = sum_j kept_{t,j} * g_{t,j} * Expert_{e_{t,j}}(x_t).
///
/// Expert parallelism (a later issue) replaces the gather/combine here with an
/// all-to-all exchange; the routing and the expert MLP stay the same code.
public enum MoE {
    public struct Weights {
        public let router: Tensor  // (E, C)
        public let wUp: Tensor     // (E, F, C)
        public let wDown: Tensor   // (E, C, F)
        public init(router: Tensor, wUp: Tensor, wDown: Tensor) { self.router = router; self.wUp = wUp; self.wDown = wDown }

        func up(_ e: Int) -> Tensor {
            let f = wUp.shape[1], c = wUp.shape[2]
            return Tensor(view: wUp.storage, offset: wUp.offset + e * f * c, shape: [f, c])
        }
        func down(_ e: Int) -> Tensor {
            let c = wDown.shape[1], f = wDown.shape[2]
            return Tensor(view: wDown.storage, offset: wDown.offset + e * c * f, shape: [c, f])
        }
    }

    /// The tokens one expert processed: `slots[r]` is the assignment index t*K + j of row r.
    struct ExpertBatch {
        let slots: [Int]
        let ff: FeedForward.Cache
        let y: Tensor  // (n_e, C) expert output before gating
    }

    public struct Cache {
        let x: Tensor
        public let routing: Routing
        let batches: [ExpertBatch?]
        /// Floats this cache holds beyond its input (which belongs to the caller): router
        /// probabilities and, per expert, its gathered tokens, hidden activations and output.
        public var floatCount: Int {
            batches.reduce(routing.probs.count) { $0 + ($1.map { $0.ff.x.count + $0.ff.floatCount + $0.y.count } ?? 0) }
        }
    }

    public struct Options {
        public let topK: Int
        public let seqLen: Int
        public let capacity: Int?
        public let auxCoef: Float
        public let zCoef: Float
        public init(config c: ModelConfig) {
            topK = c.topK; seqLen = c.seqLen; capacity = c.expertCapacity
            auxCoef = Float(c.auxLossCoef); zCoef = Float(c.zLossCoef)
        }
    }

    /// x (N, C) -> y (N, C).
    public static func forward(_ x: Tensor, _ w: Weights, options o: Options, y: Tensor) -> Cache {
        let n = x.rows, c = x.cols, E = w.router.shape[0], K = o.topK
        let routing = Router.route(x, router: w.router, topK: K, seqLen: o.seqLen, capacity: o.capacity)
        var slotsPerExpert = [[Int]](repeating: [], count: E)
        for slot in 0..<(n * K) where routing.kept[slot] { slotsPerExpert[Int(routing.choice[slot])].append(slot) }
        y.zero()
        let kept = slotsPerExpert.reduce(0) { $0 + $1.count }
        // Gather (read token rows, write expert rows) and combine (read expert rows, read-modify-write outputs).
        Kernels.account(flops: 0, elements: Double(2 * kept * c))
        Kernels.account(flops: Double(2 * kept * c), elements: Double(2 * kept * c + n * c))
        var batches = [ExpertBatch?](repeating: nil, count: E)
        for e in 0..<E where !slotsPerExpert[e].isEmpty {
            let slots = slotsPerExpert[e]
            let xe = Tensor(zeros: [slots.count, c])
            for (r, slot) in slots.enumerated() { (xe.ptr + r * c).update(from: x.ptr + (slot / K) * c, count: c) }
            let ye = Tensor(zeros: [slots.count, c])
            let ff = FeedForward.forward(xe, wUp: w.up(e), wDown: w.down(e), y: ye)
            for (r, slot) in slots.enumerated() {
                Kernels.axpy(c, routing.gate[slot], ye.ptr + r * c, y.ptr + (slot / K) * c)
            }
            batches[e] = ExpertBatch(slots: slots, ff: ff, y: ye)
        }
        return Cache(x: x, routing: routing, batches: batches)
    }

    /// dy (N, C) -> dx (N, C) (added when `accumulate`), weight gradients accumulated into `dw`.
    public static func backward(_ cache: Cache, _ w: Weights, options o: Options, scale: LossScale,
                                dy: Tensor, dw: Weights, dx: Tensor, accumulate: Bool) {
        let r = cache.routing
        let n = cache.x.rows, c = cache.x.cols, K = o.topK
        if !accumulate { dx.zero() }
        var dGate = [Float](repeating: 0, count: n * K)
        let kept = cache.batches.reduce(0) { $0 + ($1?.slots.count ?? 0) }
        // Gate gradients and expert-output gradients, then the scatter-add back to tokens.
        Kernels.account(flops: Double(4 * kept * c), elements: Double(3 * kept * c))
        Kernels.account(flops: Double(kept * c), elements: Double(3 * kept * c))
        for (e, batch) in cache.batches.enumerated() {
            guard let batch else { continue }
            let m = batch.slots.count
            let dye = Tensor(zeros: [m, c])
            for (row, slot) in batch.slots.enumerated() {
                let g = dy.ptr + (slot / K) * c
                dGate[slot] = Kernels.dot(c, g, batch.y.ptr + row * c)
                Kernels.axpy(c, r.gate[slot], g, dye.ptr + row * c)
            }
            let dxe = Tensor(zeros: [m, c])
            FeedForward.backward(batch.ff, wUp: w.up(e), wDown: w.down(e), dy: dye,
                                 dwUp: dw.up(e), dwDown: dw.down(e), dx: dxe, accumulate: false)
            for (row, slot) in batch.slots.enumerated() {
                Kernels.axpy(c, 1, dxe.ptr + row * c, dx.ptr + (slot / K) * c)
            }
        }
        Router.backward(r, dGate: dGate, x: cache.x, router: w.router, dRouter: dw.router, seqLen: o.seqLen,
                        auxCoef: o.auxCoef, zCoef: o.zCoef, scale: scale, dx: dx)
    }
}
