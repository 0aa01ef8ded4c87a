import Model
import Tensor
import TestSupport
import XCTest

/// `KernelInventory` (what `project` charges) and `Transformer.activationFloats` (what the
/// memory plan reserves) are tied to the layers: the real layers run one forward and backward
/// of a chunk under a `WorkRecorder` (their accountant) and a `StandInParallelism` (their TP
/// and EP groups), and the inventory must list exactly the same kernels and messages, with
/// the same FLOPs and element counts, in the same order; the activation count must equal what
/// the forward keeps.
///
/// The inventory assumes balanced routing: every expert receives exactly its share of the
/// assignments (N/tp * K / E from each rank's tokens) and nothing is dropped. The real
/// expert kernels depend on the routing, so the test makes the routing balanced rather than
/// loosening the comparison: each token's residual stream is dominated by a large embedding
/// (or input) along axis t % E, and the router scores expert e for axis i by
/// 1 - ((e - i) mod E) / E, so token t picks experts t, t+1, ..., t+K-1 (mod E); with T and
/// N/tp multiples of E every sequence and every TP rank's slice of tokens sends each expert
/// exactly its share. The test checks that the routing came out that way before comparing.
final class KernelInventoryTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var name: String
        var config: ModelConfig
        var shard: ShardSpec
        var layers: Range<Int>
        var description: String { name }
    }

    static func config(moeEvery: Int, kvHeads: Int, experts: Int = 4, tied: Bool = false, ffn: FFNKind = .gelu) -> ModelConfig {
        var c = ModelConfig()
        c.ffn = ffn
        c.vocab = 32; c.dModel = 32; c.heads = 4; c.kvHeads = kvHeads; c.ffnHidden = 16
        c.layers = 3; c.moeEvery = moeEvery; c.experts = experts; c.topK = 2; c.seqLen = 8
        c.tieEmbeddings = tied
        return c   // capacity factor 1.25: balanced routing drops nothing
    }

    static let sequences = 2

    static func whole(_ name: String, _ c: ModelConfig, tp: Int = 1, tpRank: Int = 0, ep: Int = 1, epRank: Int = 0, sp: Bool = false) -> Case {
        Case(name: name, config: c, shard: ShardSpec(tp: tp, tpRank: tpRank, ep: ep, epRank: epRank, sequenceParallel: sp), layers: 0..<c.layers)
    }

    /// One pipeline chunk: its layers, the embedding when it starts at layer 0, the head when it ends at the last.
    static func chunk(_ name: String, _ c: ModelConfig, _ layers: Range<Int>, tp: Int, tpRank: Int, ep: Int, epRank: Int,
                      sp: Bool = false) -> Case {
        Case(name: name, config: c, shard: ShardSpec(tp: tp, tpRank: tpRank, ep: ep, epRank: epRank, layers: Array(layers),
                                                     embedding: layers.lowerBound == 0, head: layers.upperBound == c.layers,
                                                     sequenceParallel: sp),
             layers: layers)
    }

    static var cases: [Case] {
        let moeMQA = config(moeEvery: 1, kvHeads: 1), moeGQA = config(moeEvery: 1, kvHeads: 2)
        let mixedGQA = config(moeEvery: 2, kvHeads: 2), denseMQA = config(moeEvery: 0, kvHeads: 1)
        return [
            whole("MoE, MQA, tp 1, ep 1", moeMQA),
            whole("MoE, MQA, tied embeddings", config(moeEvery: 1, kvHeads: 1, tied: true)),
            whole("dense + MoE, GQA, tp 2 (rank 1), ep 1", mixedGQA, tp: 2, tpRank: 1),
            whole("MoE, GQA, tp 2, ep 2 (rank 1)", moeGQA, tp: 2, ep: 2, epRank: 1),
            whole("MoE, MQA (KV replicated), tp 2 (rank 1), ep 2 (rank 1)", moeMQA, tp: 2, tpRank: 1, ep: 2, epRank: 1),
            whole("MoE, 8 experts, MQA, tp 1, ep 2", config(moeEvery: 1, kvHeads: 1, experts: 8), ep: 2),
            whole("dense, MQA, tp 2", denseMQA, tp: 2),
            whole("dense, GQA, tp 1", config(moeEvery: 0, kvHeads: 2)),
            chunk("first chunk (embedding), dense + MoE, tp 2, ep 2", mixedGQA, 0..<2, tp: 2, tpRank: 0, ep: 2, epRank: 0),
            chunk("middle chunk, dense + MoE, tp 2, ep 2", mixedGQA, 1..<2, tp: 2, tpRank: 1, ep: 2, epRank: 1),
            chunk("last chunk (head), MoE, MQA, tp 2, ep 2", moeMQA, 2..<3, tp: 2, tpRank: 0, ep: 2, epRank: 1),
            // Sequence parallelism: all-gathers and reduce-scatters instead of all-reduces, norms on blocks of rows.
            whole("dense + MoE, GQA, tp 2 (rank 1), sequence parallel", mixedGQA, tp: 2, tpRank: 1, sp: true),
            whole("MoE, MQA (KV replicated), tp 2 (rank 1), ep 2 (rank 1), sequence parallel", moeMQA, tp: 2, tpRank: 1, ep: 2, epRank: 1, sp: true),
            whole("dense, MQA, tp 2, tied embeddings, sequence parallel", config(moeEvery: 0, kvHeads: 1, tied: true), tp: 2, sp: true),
            chunk("middle chunk, dense + MoE, tp 2, ep 2, sequence parallel", mixedGQA, 1..<2, tp: 2, tpRank: 1, ep: 2, epRank: 1, sp: true),
            // SwiGLU in dense layers and experts.
            whole("dense + MoE, GQA, SwiGLU, tp 2 (rank 1), ep 2", config(moeEvery: 2, kvHeads: 2, ffn: .swiglu), tp: 2, tpRank: 1, ep: 2),
            whole("dense, MQA, SwiGLU", config(moeEvery: 0, kvHeads: 1, ffn: .swiglu)),
        ]
    }

    /// A model of `shard` whose routing is balanced for the inputs of `input(for:)`.
    func makeModel(_ k: Case) -> Transformer {
        let c = k.config
        let params = Parameters(layout: ParameterLayout(config: c, shard: k.shard))
        params.layout.initialize(params.values, seed: 7)
        let E = c.experts
        if k.shard.embedding {
            let table = params.value("tok_emb")   // local rows of this rank's vocabulary
            table.zero()
            for r in 0..<table.rows { table[r * c.dModel + r % E] = 10 }
        }
        for l in k.layers where c.isMoE(layer: l) {
            let router = params.value("layers.\(l).moe.router")   // (E, C)
            router.zero()
            for e in 0..<E { for i in 0..<E { router[e * c.dModel + i] = 1 - Float((e - i + E) % E) / Float(E) } }
        }
        return Transformer(config: c, params: params, parallel: StandInParallelism(shard: k.shard))
    }

    /// Token t is of type t % E: tokens from this rank's vocabulary (so that its embedding
    /// lookup finds them), or an activation along axis t % E.
    /// Under sequence parallelism the activation is this rank's block of rows (a multiple of E
    /// of them, so that row r is of type r % E too).
    func input(for k: Case) -> Transformer.ChunkInput {
        let c = k.config, n = Self.sequences * c.seqLen
        if k.shard.embedding {
            let first = k.shard.vocabRange(c).lowerBound
            return .tokens((0..<n).map { Int32(first + $0 % c.experts) })
        }
        let rows = k.shard.residualRows(tokens: n)
        let x = randomTensor([rows, c.dModel], seed: 3, std: 0.1)
        for t in 0..<rows { x[t * c.dModel + t % c.experts] = 10 }
        return .activation(x)
    }

    func forward(_ model: Transformer, _ k: Case) -> Transformer.ChunkPass {
        let n = Self.sequences * k.config.seqLen
        let targets = k.shard.head ? randomTokens(count: n, vocab: k.config.vocab, seed: 5) : nil
        return model.forwardChunk(layers: k.layers, input: input(for: k), targets: targets, scale: scale(k))
    }

    func backward(_ model: Transformer, _ pass: Transformer.ChunkPass, _ k: Case) {
        let grad = pass.isLast ? nil : randomTensor(pass.output.shape, seed: 9, std: 0.01)
        model.backwardChunk(pass, outputGradient: grad, scale: scale(k))
    }

    func scale(_ k: Case) -> LossScale { LossScale(tokens: Self.sequences * k.config.seqLen, sequences: Self.sequences) }

    func inventory(_ k: Case, attention: AttentionKernel = .naive) -> (forward: [KernelInventory.Work], backward: [KernelInventory.Work]) {
        let args = (c: k.config, s: k.shard, b: Self.sequences, l: k.layers, e: k.shard.embedding, h: k.shard.head)
        return (KernelInventory.forward(config: args.c, shard: args.s, sequences: args.b, layers: args.l, embedding: args.e, head: args.h,
                                        attention: attention),
                KernelInventory.backward(config: args.c, shard: args.s, sequences: args.b, layers: args.l, embedding: args.e, head: args.h,
                                         attention: attention))
    }

    /// The routing the inventory assumes: every expert holds N * K / E assignments of the
    /// micro-batch (the router is replicated over TP, so this is the whole micro-batch's load), none dropped.
    func assertBalanced(_ pass: Transformer.ChunkPass, _ k: Case, file: StaticString = #filePath, line: UInt = #line) {
        let c = k.config, n = Self.sequences * c.seqLen
        XCTAssertEqual(pass.stats.dropped, 0, "\(k): dropped assignments", file: file, line: line)
        for l in k.layers where c.isMoE(layer: l) {
            XCTAssertEqual(pass.stats.load[l], Array(repeating: n * c.topK / c.experts, count: c.experts),
                           "\(k): layer \(l) routing is not balanced", file: file, line: line)
        }
    }

    /// Same list, entry by entry; on a difference, prints both lists from the first one.
    func assertSameWork(_ real: [KernelInventory.Work], _ listed: [KernelInventory.Work], _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        guard real != listed else { return }
        let first = (0..<min(real.count, listed.count)).first { real[$0] != listed[$0] } ?? min(real.count, listed.count)
        let show = { (w: [KernelInventory.Work]) in w[first...].prefix(6).map { "    \($0)" }.joined(separator: "\n") }
        XCTFail("\(what): the layers ran \(real.count) entries, the inventory lists \(listed.count); first difference at \(first):\n"
                + "  layers:\n\(show(real))\n  inventory:\n\(show(listed))", file: file, line: line)
    }

    // MARK: - Kernels

    func testInventoryListsTheKernelsTheLayersRun() {
        for k in Self.cases {
            let recorder = WorkRecorder()
            let model = makeModel(k)
            let listed = inventory(k)
            let pass = Kernels.with(recorder.context) { forward(model, k) }
            assertBalanced(pass, k)
            assertSameWork(recorder.work, listed.forward, "\(k): forward")
            let forwardWork = recorder.work
            recorder.reset()
            Kernels.with(recorder.context) { backward(model, pass, k) }
            assertSameWork(recorder.work, listed.backward, "\(k): backward")
            if k.shard.sequenceParallel {
                // No activation all-reduce is left: each became an all-gather and a reduce-scatter.
                let all = forwardWork + recorder.work
                let activation = Double(Self.sequences * k.config.seqLen * k.config.dModel)
                XCTAssertFalse(all.contains(.tpAllReduce(floats: activation)), "\(k): an activation all-reduce under sequence parallelism")
                XCTAssertTrue(all.contains(.tpAllGather(floats: activation)), "\(k): no all-gather")
                XCTAssertTrue(all.contains(.tpReduceScatter(floats: activation)), "\(k): no reduce-scatter")
            }
        }
    }

    /// Recomputation and the attention kernel: under each recomputation mode with each
    /// attention kernel, the real layers' forward and backward run exactly what the inventory
    /// lists for them (selective: the attention probabilities again before each naive
    /// attention backward; full: each layer's forward, messages included, again before its
    /// backward; fused: FlashAttention-2's forward, and its backward that recomputes the
    /// probabilities itself), the pass keeps what `Transformer.activationFloats` counts (and
    /// holds it: every float buffer it references; the fused kernel keeps one softmax
    /// statistic per row instead of the probabilities), full recomputation's working set is
    /// `transientFloats`, and the gradients are the ones without either, bit for bit.
    func testRecomputationAndAttentionKernelsRunWhatTheInventoryLists() {
        for k in Self.cases {
            let reference = makeModel(k)
            let refPass = forward(reference, k)
            backward(reference, refPass, k)
            for attention in AttentionKernel.allCases {
                for mode in Recompute.allCases where !(attention == .naive && mode == .none) {
                    let what = "\(k), recompute \(mode), attention \(attention)"
                    let recorder = WorkRecorder()
                    let plain = makeModel(k)
                    let model = Transformer(config: plain.config, params: plain.params, parallel: plain.parallel, recompute: mode,
                                            attention: attention)
                    let pass = Kernels.with(recorder.context) { forward(model, k) }
                    assertBalanced(pass, k)
                    let args = (c: k.config, s: k.shard, b: Self.sequences, l: k.layers, e: k.shard.embedding, h: k.shard.head)
                    assertSameWork(recorder.work, inventory(k, attention: attention).forward, "\(what): forward")
                    XCTAssertEqual(pass.activationFloats, Transformer.activationFloats(config: args.c, sequences: args.b, shard: args.s,
                                                                                       recompute: mode, attention: attention), "\(what): activation floats")
                    XCTAssertEqual(pass.transientFloats, Transformer.transientFloats(config: args.c, sequences: args.b, shard: args.s,
                                                                                     recompute: mode, attention: attention), "\(what): transient floats")
                    var seen: Set<UnsafeMutableRawPointer> = [UnsafeMutableRawPointer(model.params.values.base),
                                                              UnsafeMutableRawPointer(model.params.grads.base)]
                    XCTAssertEqual(floatsReachable(from: pass, seen: &seen), pass.activationFloats, "\(what): floats held by the pass")
                    recorder.reset()
                    Kernels.with(recorder.context) { backward(model, pass, k) }
                    let listed = KernelInventory.backward(config: args.c, shard: args.s, sequences: args.b, layers: args.l,
                                                          embedding: args.e, head: args.h, recompute: mode, attention: attention)
                    assertSameWork(recorder.work, listed, "\(what): backward")
                    let grads = { (m: Transformer) in Array(UnsafeBufferPointer(start: m.params.grads.base, count: m.params.grads.count)) }
                    XCTAssertEqual(grads(model), grads(reference), "\(what): gradients")
                }
            }
        }
    }

    /// Zero-bubble split: the input-gradient pass (B) with weight gradients deferred, and the
    /// deferred weight gradients (W) run later, together run exactly the inventory's backward.
    func testSplitBackwardRunsTheSameKernels() {
        for k in Self.cases {
            let recorder = WorkRecorder()
            let model = makeModel(k)
            let pass = forward(model, k)
            let queue = WeightGradQueue()
            var deferring = recorder.context
            deferring.deferredWeightGrads = queue
            Kernels.with(deferring) { backward(model, pass, k) }
            let inputPass = recorder.work
            recorder.reset()
            Kernels.with(recorder.context) { queue.run() }
            XCTAssertFalse(recorder.work.isEmpty, "\(k): no weight gradient was deferred")
            let sorted = { (w: [KernelInventory.Work]) in w.map { "\($0)" }.sorted() }
            XCTAssertEqual(sorted(inputPass + recorder.work), sorted(inventory(k).backward), "\(k): split backward")
        }
    }

    /// Real routing (`--time-as` charges the inventory built from it): with the model's own
    /// random router and inputs, experts get uneven rows, some none, and assignments are
    /// dropped at capacity; the layers report each MoE layer's routing before it matters, and
    /// the inventory built from those reports lists exactly what the layers ran, forward and
    /// backward (full recomputation included, which routes again).
    func testInventoryFollowsTheRealRouting() {
        var unevenSeen = false, droppedSeen = false
        for k in Self.cases where k.shard.ep == 1 {
            for recompute in [Recompute.none, .full] {
                var c = k.config
                c.routerInitScale = 30   // peaked: uneven loads and drops
                c.capacityFactor = 1
                let params = Parameters(layout: ParameterLayout(config: c, shard: k.shard))
                params.layout.initialize(params.values, seed: 11)
                let model = Transformer(config: c, params: params, parallel: StandInParallelism(shard: k.shard), recompute: recompute)
                let n = Self.sequences * c.seqLen
                let input: Transformer.ChunkInput = k.shard.embedding
                    ? .tokens(randomTokens(count: n, vocab: c.vocab, seed: 13).map { Int32(k.shard.vocabRange(c).lowerBound) + $0 % Int32(k.shard.vocabRange(c).count) })
                    : .activation(randomTensor([k.shard.residualRows(tokens: n), c.dModel], seed: 17, std: 1))
                let targets = k.shard.head ? randomTokens(count: n, vocab: c.vocab, seed: 5) : nil
                let recorder = WorkRecorder()
                let pass = Kernels.with(recorder.context) {
                    model.forwardChunk(layers: k.layers, input: input, targets: targets, scale: scale(k))
                }
                let moe = k.layers.filter { c.isMoE(layer: $0) }
                XCTAssertEqual(recorder.routings.count, moe.count, "\(k): one routing report per MoE layer")
                let routing = Dictionary(uniqueKeysWithValues: zip(moe, recorder.routings))
                for r in routing.values {
                    if Set(r.received).count > 1 { unevenSeen = true }
                }
                if pass.stats.dropped > 0 { droppedSeen = true }
                let args = (s: k.shard, b: Self.sequences, l: k.layers, e: k.shard.embedding, h: k.shard.head)
                assertSameWork(recorder.work, KernelInventory.forward(config: c, shard: args.s, sequences: args.b, layers: args.l,
                                                                      embedding: args.e, head: args.h, routing: routing),
                               "\(k), real routing: forward")
                recorder.reset()
                let grad = pass.isLast ? nil : randomTensor(pass.output.shape, seed: 9, std: 0.01)
                Kernels.with(recorder.context) { model.backwardChunk(pass, outputGradient: grad, scale: scale(k)) }
                assertSameWork(recorder.work, KernelInventory.backward(config: c, shard: args.s, sequences: args.b, layers: args.l,
                                                                       embedding: args.e, head: args.h, recompute: recompute, routing: routing),
                               "\(k), real routing, recompute \(recompute): backward")
            }
        }
        XCTAssertTrue(unevenSeen, "no case routed unevenly: the test would not tell balanced from real routing")
        XCTAssertTrue(droppedSeen, "no case dropped an assignment")
    }

    // MARK: - Activations

    func testActivationFloatsAreWhatTheForwardKeeps() {
        for k in Self.cases {
            let model = makeModel(k)
            let pass = forward(model, k)
            // What the trainer records: the executor holds `activationFloats` of every pass in flight.
            XCTAssertEqual(pass.activationFloats, Transformer.activationFloats(config: k.config, sequences: Self.sequences, shard: k.shard),
                           "\(k): activation floats")
            // And that count is what the pass really holds: every float buffer it references.
            var seen: Set<UnsafeMutableRawPointer> = [UnsafeMutableRawPointer(model.params.values.base),
                                                      UnsafeMutableRawPointer(model.params.grads.base)]
            XCTAssertEqual(floatsReachable(from: pass, seen: &seen), pass.activationFloats, "\(k): floats held by the pass")
        }
    }

    /// Floats of every distinct buffer (tensor storage or Float array) reachable from `value`.
    /// Integer bookkeeping (routing choices, dispatch indices) is not activation memory here.
    func floatsReachable(from value: Any, seen: inout Set<UnsafeMutableRawPointer>) -> Int {
        switch value {
        case let t as Tensor:
            return seen.insert(UnsafeMutableRawPointer(t.storage.base)).inserted ? t.storage.count : 0
        case let a as [Float]:
            guard let base = a.withUnsafeBufferPointer({ $0.baseAddress }) else { return 0 }
            return seen.insert(UnsafeMutableRawPointer(mutating: base)).inserted ? a.count : 0
        case is [Int], is [Int32], is [Bool], is [[Int]], is MicroBatchStats, is Range<Int>:
            return 0
        default:
            return Mirror(reflecting: value).children.reduce(0) { $0 + floatsReachable(from: $1.value, seen: &seen) }
        }
    }
}
