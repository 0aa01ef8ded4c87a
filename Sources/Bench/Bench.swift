import Foundation
import Train
import Plan
import Comm
import Emulation
import Model
import Parallel
import Tensor

/// `moe-train bench`: the single-process measurements of `make bench` (the GEMM path
/// against bare sgemm, the step's CPU time by kernel category, the emulator's own overhead,
/// and how step time scales with the model). Benchmarks measure and report; nothing here
/// is asserted.
public enum Bench {
    /// Attributes thread CPU time to the category of the code that runs, from the source
    /// file named at each kernel boundary.
    final class Profiler: KernelProfiler {
        var totals: [String: Double] = [:]
        var current = "other"
        var mark = DeviceClock.threadCPUSeconds()
        func boundary(file: StaticString) {
            let now = DeviceClock.threadCPUSeconds()
            totals[current, default: 0] += now - mark
            mark = now
            current = Self.category("\(file)")
        }
        func finish() { boundary(file: "other") }
        static func category(_ file: String) -> String {
            if file == "GEMM" { return "GEMM" }
            if file.hasSuffix("Attention.swift") { return "attention softmax" }
            if file.hasSuffix("RMSNorm.swift") { return "norms" }
            if file.hasSuffix("Router.swift") { return "router/top-k" }
            if file.hasSuffix("MoE.swift") { return "expert gather/scatter" }
            if file.hasSuffix("Trainer.swift") || file.hasSuffix("DataParallel.swift") || file.hasSuffix("AdamW.swift") { return "optimizer" }
            if file.hasSuffix("FeedForward.swift") { return "GELU" }
            if file.hasSuffix("Rotary.swift") { return "rotary" }
            if file.hasSuffix("CrossEntropy.swift") { return "cross-entropy" }
            if file.hasSuffix("Transformer.swift") { return "residuals and copies" }
            if file.hasSuffix("Embedding.swift") { return "embedding" }
            return "other"
        }
    }

    /// `base` as the benchmarks run it: the emulator's own speed on the executed model (no
    /// timed model), on one rank, with as many steps as asked for and nothing written or resumed.
    static func benchConfig(_ base: RunConfig) -> RunConfig {
        var config = base
        config.timeAs = nil
        config.steps = 1000
        config.checkpointEvery = 0
        config.resume = "never"
        return config
    }

    /// Two identical trainers: one with the emulated clock costing every kernel and recording
    /// spans, one without either (the same steps; their difference is the emulator's bookkeeping).
    static func clockedPair(_ config: RunConfig, world: Communicator) throws -> (withClock: Trainer, without: Trainer) {
        let withClock = try trainer(config, world: world), without = try trainer(config, world: world)
        without.kernels.accountant = nil
        without.clock.recording = false
        return (withClock, without)
    }

    static func trainer(_ config: RunConfig, world: Communicator) throws -> Trainer {
        let env = LaunchEnvironment(rank: 0, worldSize: 1)
        let prepared = try Launcher.prepare(config, env: env)
        return try Trainer(plan: prepared.plan, groups: ProcessGroups(world: world, topology: prepared.plan.topology),
                           data: prepared.data, log: { _ in })
    }

    /// `moe-train bench --instructions`, for counting instructions under callgrind (`make
    /// bench`): the same `steps` training steps on two identical trainers, one with the emulated
    /// clock's accountant and recording, and one without them (as the wall-time overhead figure
    /// of `run` does), alternating: callgrind collects and dumps each call of the trainer's step
    /// function, so dumps 1, 3, 5 are steps with and 2, 4, 6 the same steps without. The
    /// difference of a pair is what costing every kernel and recording spans adds, exactly; the
    /// clock's region marks and span texts, which run in both, are not in it.
    public static func instructionSteps(base: RunConfig, steps: Int) throws {
        Launcher.prepareBLAS(rank: 0, log: { _ in })
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        let (withClock, without) = try clockedPair(benchConfig(base), world: world)
        for s in 1...steps {
            _ = try withClock.trainStep(s)
            _ = try without.trainStep(s)
        }
    }

    public static func run(base: RunConfig, quick: Bool, log: (String) -> Void) throws -> [String: Any] {
        Launcher.prepareBLAS(rank: 0, log: log)
        let world = Communicator.initWorld()
        defer { Communicator.finalize() }
        var out: [String: Any] = [:]
        let config = benchConfig(base)
        let steps = quick ? 1 : 3

        // 1. GEMM shapes of one step, then each through the model's path and bare sgemm.
        let t = try trainer(config, world: world)
        var shapes: [GemmShape: Int] = [:]
        t.kernels.profiler = Profiler()   // GEMM shapes are reported where a profiler listens
        t.kernels.gemmShapes = { shapes[$0, default: 0] += 1 }
        _ = try t.trainStep(1)
        var gemm: [[String: Any]] = []
        for (shape, count) in shapes.sorted(by: { $0.key.flops * Double($0.value) > $1.key.flops * Double($1.value) }).prefix(quick ? 3 : 40) {
            let (model, bare) = timeGemm(shape, minSeconds: quick ? 0.002 : 0.02)
            gemm.append(["shape": shape.description, "calls_per_step": count, "gflops_model": shape.flops / model / 1e9,
                         "gflops_bare": shape.flops / bare / 1e9, "ratio": bare / model])
        }
        let big = GemmShape(transA: false, transB: false, m: 1024, n: 1024, k: 1024, lda: 1024, ldb: 1024, ldc: 1024, beta: 0)
        out["gemm"] = ["shapes": gemm, "bare_sgemm_gflops_1024": big.flops / timeGemm(big, minSeconds: quick ? 0.01 : 0.2).1 / 1e9]
        out["gemm_ratio_min"] = gemm.compactMap { $0["ratio"] as? Double }.min() ?? 0
        log("bench: \(gemm.count) GEMM shapes measured")

        // 2. The step's CPU time by category; 5. the emulator's overhead.
        let profiled = try trainer(config, world: world)
        let prof = Profiler()
        profiled.kernels.profiler = prof
        var stepCPU: [Double] = []
        for s in 1...steps {
            let c0 = DeviceClock.threadCPUSeconds()
            _ = try profiled.trainStep(s)
            stepCPU.append(DeviceClock.threadCPUSeconds() - c0)
        }
        prof.finish()
        let total = prof.totals.values.reduce(0, +)
        out["step_breakdown_s"] = prof.totals.mapValues { $0 / Double(steps) }
        out["non_gemm_fraction"] = total > 0 ? 1 - (prof.totals["GEMM"] ?? 0) / total : 0
        out["dominant_non_gemm"] = prof.totals.filter { $0.key != "GEMM" }.max { $0.value < $1.value }?.key ?? ""
        // Overhead: the same steps with the clock attached and recording, and without it.
        let (withClock, without) = try clockedPair(config, world: world)
        var on: [Double] = [], off: [Double] = []
        for s in 1...(quick ? 1 : 10) {
            var c0 = DeviceClock.threadCPUSeconds(); _ = try withClock.trainStep(s); on.append(DeviceClock.threadCPUSeconds() - c0)
            c0 = DeviceClock.threadCPUSeconds(); _ = try without.trainStep(s); off.append(DeviceClock.threadCPUSeconds() - c0)
        }
        let a = on.min()!, b = off.min()!
        out["emulator_overhead_fraction"] = max(0, (a - b) / a)
        out["emulator_overhead"] = ["step_cpu_s_with_clock": a, "step_cpu_s_without": b]
        log("bench: step breakdown and emulator overhead measured")

        // 7. Scaling with width (FLOPs grow) and with experts (FLOPs per token do not).
        var widths: [[String: Any]] = []
        for d in quick ? [64, 128] : [64, 128, 256] {
            var c = config
            c.model.dModel = d; c.model.ffnHidden = 2 * d
            widths.append(try measureStep(c, world: world, steps: quick ? 1 : 2).merging(["d_model": d]) { $1 })
        }
        var experts: [[String: Any]] = []
        for e in quick ? [4] : [4, 8, 16] {
            var c = config
            c.model.experts = e
            experts.append(try measureStep(c, world: world, steps: quick ? 1 : 2).merging(["experts": e]) { $1 })
        }
        let xs = widths.map { log10($0["flops"] as! Double) }, ys = widths.map { log10($0["cpu_s"] as! Double) }
        out["scaling"] = ["d_model": widths, "experts": experts]
        out["scaling_exponent_d_model"] = slope(xs, ys)
        return out
    }

    static func measureStep(_ c: RunConfig, world: Communicator, steps: Int) throws -> [String: Any] {
        let t = try trainer(c, world: world)
        var best = Double.infinity, flops = 0.0
        for s in 1...steps {
            let f0 = t.clock.executedFLOPs, c0 = DeviceClock.threadCPUSeconds()
            _ = try t.trainStep(s)
            best = min(best, DeviceClock.threadCPUSeconds() - c0)
            flops = t.clock.executedFLOPs - f0
        }
        return ["cpu_s": best, "flops": flops, "params": t.params.layout.globalCount]
    }

    /// Seconds per call of `shape` through `Kernels.gemm` and through bare sgemm (best of 3).
    static func timeGemm(_ s: GemmShape, minSeconds: Double) -> (Double, Double) {
        let aCount = (s.transA ? s.k : s.m) * s.lda, bCount = (s.transB ? s.n : s.k) * s.ldb
        let a = Tensor(zeros: [max(aCount, 1)]), b = Tensor(zeros: [max(bCount, 1)]), c = Tensor(zeros: [max(s.m * s.ldc, 1)])
        a.fill(0.5); b.fill(0.25)
        func measure(_ f: () -> Void) -> Double {
            var best = Double.infinity
            for _ in 0..<3 {
                var n = 0
                let t0 = DeviceClock.threadCPUSeconds()
                var t1 = t0
                repeat { f(); n += 1; t1 = DeviceClock.threadCPUSeconds() } while t1 - t0 < minSeconds
                best = min(best, (t1 - t0) / Double(n))
            }
            return best
        }
        let model = measure {
            Kernels.gemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, a: a.ptr, lda: s.lda, b: b.ptr, ldb: s.ldb,
                         beta: s.beta, c: c.ptr, ldc: s.ldc)
        }
        let bare = measure { Kernels.bareSgemm(s, a: a.ptr, b: b.ptr, c: c.ptr) }
        return (model, bare)
    }

    static func slope(_ x: [Double], _ y: [Double]) -> Double {
        let n = Double(x.count), mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        let sxy = zip(x, y).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) }, sxx = x.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }
        return sxx > 0 ? sxy / sxx : 0
    }
}
