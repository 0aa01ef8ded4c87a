import Foundation
import XCTest
import TestSupport

/// Tensor, expert and data parallelism (with ZeRO-1) compute the same training run as one
/// rank: the same gradients at a step, the same losses over many steps.
final class ParallelEquivalenceTests: XCTestCase {
    /// The layouts of the acceptance list: (ranks, flags).
    static let layouts: [(np: Int, flags: [String])] = [
        (2, ["--tp", "2"]),
        (2, ["--ep", "2"]),
        (2, ["--zero", "1"]),
        (4, ["--tp", "2", "--ep", "4"]),
        // Sequence parallelism: blocks of rows between layers and between pipeline stages, MoE from the block.
        (2, ["--tp", "2", "--sequence-parallel"]),
        (4, ["--tp", "2", "--pp", "2", "--ep", "2", "--sequence-parallel"]),
        // Overlapped gradient reduction: buckets reduce-scattered into the same ZeRO-1 shards, or all-reduced.
        (4, ["--ep", "2", "--overlap-grad-reduce", "--overlap-param-gather"]),
        (4, ["--pp", "2", "--zero", "0", "--overlap-grad-reduce"]),
        // ZeRO-2: each unit's gradients reduce-scattered into the shards every micro-batch, and freed.
        (2, ["--zero", "2"]),
        (4, ["--tp", "2", "--zero", "2", "--overlap-grad-reduce"]),
        (4, ["--ep", "2", "--zero", "2", "--overlap-param-gather"]),
        // ZeRO-3: each unit's parameters gathered from the shards before its forward and backward, and freed.
        (2, ["--zero", "3"]),
        (4, ["--pp", "2", "--zero", "3", "--overlap-param-gather", "--overlap-grad-reduce", "--recompute", "full"]),
        (4, ["--tp", "2", "--ep", "2", "--zero", "3", "--sequence-parallel"]),
        // Hybrid sharding: ZeRO over groups of data-parallel ranks, each shard all-reduced over its replicas.
        (4, ["--zero", "1", "--zero-group", "2"]),
        (4, ["--zero", "3", "--zero-group", "2", "--overlap-param-gather", "--overlap-grad-reduce"]),
        (4, ["--tp", "2", "--ep", "2", "--zero", "2", "--zero-group", "1"]),
        (4, ["--tp", "2", "--zero", "3", "--zero-group", "1"]),   // the experts' shard groups are 2 ranks, with replicas
    ]

    func run(np: Int, _ args: [String], extraMPIArgs: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: np, ["--config", "configs/tiny.json", "--summary-json", dir + "/s.json"] + args,
                                      extraMPIArgs: extraMPIArgs)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        return try Subprocess.readJSON(dir + "/s.json")
    }

    func compareDumps(_ reference: String, _ other: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let script = Subprocess.repoRoot + "/launch/compare_dumps.py"
        // Tolerances of the acceptance list: 1e-4 per tensor (max |a-b| / (max|b| + 1e-6)), 1e-5 on the loss.
        let r = try Subprocess.run("/usr/bin/env", ["python3", script, reference, other, "--tol", "1e-4", "--loss-tol", "1e-5", "--quiet"])
        print(r.stdout.split(separator: "\n").first { $0.hasPrefix("compare_dumps:") } ?? "")
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        XCTAssertTrue(r.stdout.contains(": OK"), r.output, file: file, line: line)
    }

    /// Acceptance 1: every layout's dump of step 3 matches the single-rank dump.
    func testGradientsMatchTheSingleRankRun() throws {
        let dir = try Subprocess.tempDir()
        let common = ["--config", "configs/tiny.json", "--steps", "3", "--dump-step", "3"]
        XCTAssertEqual(try Subprocess.mpirun(np: 1, common + ["--dump-dir", dir + "/ref"]).status, 0)
        for (i, layout) in Self.layouts.enumerated() {
            let r = try Subprocess.mpirun(np: layout.np, common + layout.flags + ["--dump-dir", dir + "/l\(i)"])
            XCTAssertEqual(r.status, 0, r.output)
            print("layout -np \(layout.np) \(layout.flags.joined(separator: " ")):")
            try compareDumps(dir + "/ref", dir + "/l\(i)")
        }
    }

    /// Acceptance 2: 30 steps of each layout track the single-rank losses within 1e-3
    /// relative; ZeRO-0 and ZeRO-1 agree within 1e-5.
    func testLossCurvesMatchTheSingleRankRun() throws {
        let reference = try XCTUnwrap(try run(np: 1, ["--steps", "30"])["losses"] as? [Double])
        XCTAssertEqual(reference.count, 30)
        for layout in Self.layouts {
            let s = try run(np: layout.np, ["--steps", "30"] + layout.flags)
            let losses = try XCTUnwrap(s["losses"] as? [Double])
            let worst = zip(losses, reference).map { abs($0 - $1) / abs($1) }.max()!
            print(String(format: "-np %d %@: worst relative loss difference over 30 steps %.2e", layout.np,
                         layout.flags.joined(separator: " "), worst))
            XCTAssertLessThan(worst, 1e-3, "\(layout.flags)")
        }
        let z0 = try XCTUnwrap(try run(np: 2, ["--steps", "30", "--zero", "0"])["losses"] as? [Double])
        let z1 = try XCTUnwrap(try run(np: 2, ["--steps", "30", "--zero", "1"])["losses"] as? [Double])
        let worst = zip(z0, z1).map { abs($0 - $1) / abs($1) }.max()!
        print(String(format: "zero 0 vs zero 1: worst relative loss difference %.2e", worst))
        XCTAssertLessThan(worst, 1e-5)
    }

    /// SwiGLU (dense layers and experts, every other layer MoE): sharded layouts equal the
    /// single-rank SwiGLU run, in the step-3 dump (w_gate's gradients included) and over 30 steps.
    func testSwiGLUMatchesTheSingleRankRun() throws {
        let dir = try Subprocess.tempDir()
        let model = ["--config", "configs/tiny.json", "--ffn", "swiglu", "--moe-every", "2"]
        let common = model + ["--steps", "3", "--dump-step", "3"]
        XCTAssertEqual(try Subprocess.mpirun(np: 1, common + ["--dump-dir", dir + "/ref"]).status, 0)
        let reference = try XCTUnwrap(try run(np: 1, Array(model.dropFirst(2)) + ["--steps", "30"])["losses"] as? [Double])
        for (i, layout) in [(4, ["--tp", "2", "--pp", "2", "--sequence-parallel"]), (2, ["--ep", "2", "--overlap-grad-reduce"])].enumerated() {
            let r = try Subprocess.mpirun(np: layout.0, common + layout.1 + ["--dump-dir", dir + "/l\(i)"])
            XCTAssertEqual(r.status, 0, r.output)
            try compareDumps(dir + "/ref", dir + "/l\(i)")
            let losses = try XCTUnwrap(try run(np: layout.0, Array(model.dropFirst(2)) + ["--steps", "30"] + layout.1)["losses"] as? [Double])
            let worst = zip(losses, reference).map { abs($0 - $1) / abs($1) }.max()!
            print(String(format: "SwiGLU -np %d %@: worst relative loss difference over 30 steps %.2e", layout.0, layout.1.joined(separator: " "), worst))
            XCTAssertLessThan(worst, 1e-3)
        }
        // The dump (safetensors: an 8-byte header length, then the JSON header) holds the gates.
        let dump = try Data(contentsOf: URL(fileURLWithPath: dir + "/ref/step-000003.safetensors"))
        let headerLength = dump.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = String(decoding: dump.dropFirst(8).prefix(headerLength), as: UTF8.self)
        XCTAssertTrue(header.contains("layers.0.ffn.w_gate") && header.contains("layers.1.moe.w_gate"), "the dump holds the gate weights")
    }

    /// The executed buffers are what the memory plan says (in fp32 at the executed sizes):
    /// under ZeRO-2 and 3 the gradient shards plus the buckets one backward holds at once,
    /// under ZeRO-0 and 1 the whole buffer; under ZeRO-3 the parameter shards plus the units
    /// gathered at once (one, or two with the prefetch), elsewhere the whole buffer.
    func testShardedBuffersMatchThePlan() throws {
        var peaks: [String: [Double]] = [:]
        for zero in 0...3 {
            for (np, flags) in [(2, [String]()), (4, ["--pp", "2"]), (4, ["--tp", "2", "--ep", "2"])]
                + (zero == 3 ? [(2, ["--overlap-param-gather"]), (4, ["--pp", "2", "--overlap-param-gather"])] : [])
                + (zero >= 1 ? [(4, ["--zero-group", "2"])] : []) {
                let s = try run(np: np, ["--steps", "2", "--precision", "fp32", "--zero", String(zero)] + flags)
                let resources = try XCTUnwrap(s["resources"] as? [String: [Double]])
                let gradients = try XCTUnwrap(resources["gradient_floats_peak_per_rank"]), parameters = try XCTUnwrap(resources["parameter_floats_per_rank"])
                let roles = try XCTUnwrap(s["memory_bytes"] as? [[String: Any]])
                for role in roles {
                    for rank in try XCTUnwrap(role["ranks"] as? [Int]) {
                        let plannedParameters = try XCTUnwrap(role["parameters"] as? Double) / 4
                        if zero == 3 {
                            XCTAssertEqual(parameters[rank], plannedParameters, "zero 3 \(flags) rank \(rank): executed parameter peak against the plan")
                        } else {
                            XCTAssertTrue((0..<Double(2 * np)).contains(parameters[rank] - plannedParameters), "zero \(zero) \(flags) rank \(rank)")
                        }
                        let planned = try XCTUnwrap(role["gradients"] as? Double) / 4
                        if zero < 2 {
                            // The whole buffer; the plan counts the parameters without the padding that
                            // splits each region evenly over the data-parallel ranks (under one element per rank and region).
                            XCTAssertEqual(gradients[rank], parameters[rank])
                            XCTAssertTrue((0..<Double(2 * np)).contains(gradients[rank] - planned), "zero \(zero) \(flags) rank \(rank): \(gradients[rank]) against \(planned) planned")
                        } else {
                            XCTAssertEqual(gradients[rank], planned, "zero \(zero) \(flags) rank \(rank): executed gradient peak against the plan")
                        }
                    }
                }
                if np == 2 && flags.isEmpty { peaks["gradients \(zero)"] = gradients; peaks["parameters \(zero)"] = parameters }
                print("zero \(zero) -np \(np) \(flags.joined(separator: " ")): gradient floats at peak per rank \(gradients.map { Int($0) }), parameters \(parameters.map { Int($0) })")
            }
        }
        let z1 = try XCTUnwrap(peaks["gradients 1"]), z2 = try XCTUnwrap(peaks["gradients 2"])
        for (a, b) in zip(z2, z1) { XCTAssertLessThan(a, b, "two data-parallel ranks: ZeRO-2 holds less gradient than ZeRO-1") }
        let p2 = try XCTUnwrap(peaks["parameters 2"]), p3 = try XCTUnwrap(peaks["parameters 3"])
        for (a, b) in zip(p3, p2) { XCTAssertLessThan(a, b, "two data-parallel ranks: ZeRO-3 holds fewer parameters at once than ZeRO-2") }
    }

    /// Hybrid sharding counts each shard once in the gradient norm, yet a NaN in the shard of
    /// a replica that does not count it still makes the norm non-finite: the step is skipped.
    func testHybridShardingSkipsANaNOnAnyReplica() throws {
        for zero in ["1", "2"] {
            let s = try run(np: 4, ["--steps", "4", "--zero", zero, "--zero-group", "2", "--fail-at-step", "3", "--fail-mode", "nan", "--fail-rank", "2"])
            XCTAssertEqual(s["skipped_steps"] as? [Int], [3], "zero \(zero): rank 2 is the second replica of rank 0's shard")
        }
    }

    /// Acceptance 3: at dp = 2 each rank holds half the optimizer state (up to padding).
    func testZeroOneHalvesOptimizerState() throws {
        let one = try run(np: 1, ["--steps", "1"])
        let two = try run(np: 2, ["--steps", "1", "--zero", "1"])
        let zeroOff = try run(np: 2, ["--steps", "1", "--zero", "0"])
        let b1 = try XCTUnwrap(one["optimizer_state_bytes"] as? Double)
        let b2 = try XCTUnwrap(two["optimizer_state_bytes"] as? Double)
        print("optimizer state per rank: dp 1 \(b1) B, dp 2 with ZeRO-1 \(b2) B")
        XCTAssertEqual(b2, b1 / 2, accuracy: 12 * 2, "half, up to one padding element per region")
        XCTAssertEqual(zeroOff["optimizer_state_bytes"] as? Double, b1)
        // The memory table says the same.
        let mem = try XCTUnwrap((two["memory_bytes"] as? [[String: Any]])?.first)
        XCTAssertEqual(mem["optimizer_state"] as? Double, b2)
    }

    /// Acceptance 4: a deliberately peaked router and capacity factor 1 drop tokens, the
    /// drops are reported, and the layouts still agree (capacity is per sequence, so it does
    /// not depend on how the batch is split).
    func testCapacityDropsAreLayoutIndependent() throws {
        let flags = ["--steps", "12", "--capacity-factor", "1.0", "--router-init-scale", "40"]
        let reference = try run(np: 1, flags)
        let load = try XCTUnwrap(reference["expert_load"] as? [String: Any])
        let dropped = try XCTUnwrap(load["dropped_fraction"] as? Double)
        print("dropped fraction with capacity factor 1.0 and router init x40: \(dropped)")
        XCTAssertGreaterThan(dropped, 0)
        let refLosses = try XCTUnwrap(reference["losses"] as? [Double])
        for layout in [(2, ["--ep", "2"]), (4, ["--tp", "2", "--ep", "4"])] {
            let s = try run(np: layout.0, flags + layout.1)
            let losses = try XCTUnwrap(s["losses"] as? [Double])
            XCTAssertLessThan(zip(losses, refLosses).map { abs($0 - $1) / abs($1) }.max()!, 1e-3)
            let l = try XCTUnwrap(s["expert_load"] as? [String: Any])
            XCTAssertEqual(try XCTUnwrap(l["dropped_fraction"] as? Double), dropped, accuracy: 1e-9)
            XCTAssertEqual(l["per_layer_total"] as? [[Int]], load["per_layer_total"] as? [[Int]])
        }
    }

    /// Acceptance 5: the --tp 2 equivalence over TCP, the transport used between hosts.
    func testTensorParallelOverTCP() throws {
        let reference = try XCTUnwrap(try run(np: 1, ["--steps", "10"])["losses"] as? [Double])
        let s = try run(np: 2, ["--steps", "10", "--tp", "2"], extraMPIArgs: ["--mca", "btl", "self,tcp"])
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        XCTAssertLessThan(zip(losses, reference).map { abs($0 - $1) / abs($1) }.max()!, 1e-3)
    }

    /// comm_bytes against closed forms, for -np 2 --tp 2 --ep 2 (dp 1) and one step of the
    /// tiny config: per micro-batch of N = B*T tokens and width C,
    ///  - TP all-reduce of activations: forward embedding + 2 per layer (attention, MoE),
    ///    backward 2 per layer + head input gradient: (2 + 4L) x N x C floats, plus the
    ///    vocabulary-parallel cross-entropy: N (max) and 2N (sum-exp and target logit);
    ///    per step, plus the packed all-reduce of router and replicated-KV gradients;
    ///  - EP all-to-all: per MoE layer 4 exchanges (dispatch, return, and the two of the
    ///    backward) of this rank's kept assignments' rows, plus the count exchange.
    /// ZeRO-2 reduce-scatters each micro-batch's gradients (M = 2 per replica and step: 16
    /// sequences, 4 per micro-batch, 2 replicas) where ZeRO-1 reduce-scatters the step's once:
    /// M times the bytes, in one call per unit and micro-batch.
    func testZeroTwoReducesEveryMicroBatch() throws {
        let M = 2
        func reduceScatters(_ zero: Int) throws -> [String: [String: Int]] {
            let s = try run(np: 2, ["--steps", "1", "--zero", String(zero)])
            return try XCTUnwrap(s["comm_bytes"] as? [String: [String: Int]]).filter { $0.key.hasPrefix("reduce-scatter/") }
        }
        let one = try reduceScatters(1), two = try reduceScatters(2)
        XCTAssertEqual(Set(one.keys), ["reduce-scatter/dp", "reduce-scatter/edp"])
        XCTAssertEqual(Set(two.keys), Set(one.keys))
        for (key, z1) in one {
            let z2 = try XCTUnwrap(two[key])
            XCTAssertEqual(z2["bytes"], M * z1["bytes"]!, key)
            XCTAssertEqual(z1["calls"], 1, key)
            // The embedding, the head and each of the 2 layers hold dense parameters; the 2 MoE layers the experts.
            XCTAssertEqual(z2["calls"], M * (key.hasSuffix("/edp") ? 2 : 4), key)
        }
    }

    func testCommunicationBytesMatchClosedForms() throws {
        let s = try run(np: 2, ["--steps", "1", "--tp", "2", "--ep", "2", "--log-every", "1"])
        let comm = try XCTUnwrap(s["comm_bytes"] as? [String: [String: Int]])
        let L = 2, B = 4, T = 32, C = 64, M = 4, E = 4, K = 2, kvDim = 16
        let N = B * T
        let activationFloats = (2 + 4 * L) * N * C + N + 2 * N
        let partialGradFloats = L * (E * C + 2 * kvDim * C)   // router + wk + wv, replicated over TP
        let tpAllReduce = try XCTUnwrap(comm["all-reduce/tp"])
        XCTAssertEqual(tpAllReduce["bytes"], 4 * (M * activationFloats + partialGradFloats))
        XCTAssertEqual(tpAllReduce["calls"], M * (2 + 4 * L + 2) + 1)
        // All-to-all over both ranks: per MoE layer and micro-batch, 4 exchanges of rows (dispatch,
        // return, and both again in the backward) each moving every kept assignment once, plus
        // one count exchange of E counts per rank. The kept assignments are the expert load.
        let a2a = try XCTUnwrap(comm["all-to-all/ep"])
        let load = try XCTUnwrap((s["expert_load"] as? [String: Any])?["per_layer_total"] as? [[Int]])
        let kept = load.flatMap { $0 }.reduce(0, +)
        let ep = 2
        XCTAssertEqual(a2a["bytes_all_ranks"], 4 * kept * C * 4 + M * L * ep * E * 4)
        XCTAssertEqual(a2a["calls_all_ranks"], ep * M * L * 5)
        XCTAssertGreaterThan(kept, 0)
        XCTAssertLessThanOrEqual(kept, M * L * N * K)
        // Both TP ranks make the same TP all-reduces.
        XCTAssertEqual(tpAllReduce["bytes_all_ranks"], 2 * tpAllReduce["bytes"]!)
    }

    /// The same under sequence parallelism (-np 2 --tp 2 --sequence-parallel): no activation
    /// all-reduce is left. Per micro-batch, all-gathers of N x C: each layer's attention input
    /// (forward), its output gradient and input again (backward), the head's input (forward and
    /// backward) and the embedding's output gradient, plus each MoE layer's router scores
    /// (N x E); reduce-scatters of N x C: the embedding, each attention output (forward) and
    /// input gradient (backward), the head's input gradient. The MoE layers move no activation
    /// over TP (each rank dispatches and combines its own block of tokens). All-reduces: the
    /// cross-entropy's N maxima and 2N sums per micro-batch, and per step the packed partial
    /// gradients, now with every norm weight (each rank normalised only its rows).
    func testSequenceParallelCommunicationMatchesClosedForms() throws {
        let s = try run(np: 2, ["--steps", "1", "--tp", "2", "--sequence-parallel", "--log-every", "1"])
        let comm = try XCTUnwrap(s["comm_bytes"] as? [String: [String: Int]])
        let L = 2, B = 4, T = 32, C = 64, M = 4, E = 4, kvDim = 16
        let N = B * T
        let gather = try XCTUnwrap(comm["all-gather/tp"]), scatter = try XCTUnwrap(comm["reduce-scatter/tp"])
        XCTAssertEqual(gather["bytes"], 4 * M * ((3 * L + 3) * N * C + L * N * E))
        XCTAssertEqual(gather["calls"], M * (4 * L + 3))
        XCTAssertEqual(scatter["bytes"], 4 * M * (2 * L + 2) * N * C)
        XCTAssertEqual(scatter["calls"], M * (2 * L + 2))
        let partialGradFloats = L * (E * C + 2 * kvDim * C) + (2 * L + 1) * C   // router, wk, wv; attn_norm, ffn_norm, norm_f
        let allReduce = try XCTUnwrap(comm["all-reduce/tp"])
        XCTAssertEqual(allReduce["bytes"], 4 * (M * 3 * N + partialGradFloats))
        XCTAssertEqual(allReduce["calls"], M * 2 + 1)
    }
}
