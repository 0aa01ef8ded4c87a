import Foundation
import Formats
import Plan
import Schedule
import Model

/// One measured training run from a paper, `configs/published/NAME.json`: the model, the
/// layout, the cluster and one measured figure (per-GPU throughput, iteration time or MFU),
/// with the source's way of counting model FLOPs. `moe-train validate` projects each through
/// the same cost model, inventory and schedule simulator as `project` and reports the error.
public struct PublishedMeasurement: Decodable, Sendable {
    public struct Model: Decodable, Sendable {
        public let layers, dModel, heads, kvHeads, ffnHidden: Int
        /// `gelu` or `swiglu` (`FFNKind`).
        public let ffn: String
        /// 0 experts (or `moe_every` 0): a dense model.
        public let experts, topK, moeEvery, vocab, seqLen: Int
        enum CodingKeys: String, CodingKey {
            case layers, dModel = "d_model", heads, kvHeads = "kv_heads", ffnHidden = "ffn_hidden", ffn, experts, topK = "top_k"
            case moeEvery = "moe_every", vocab, seqLen = "seq_len"
        }
    }

    public struct Layout: Decodable, Sendable {
        public let tp, pp, dp, ep, virtualStages: Int
        public let schedule: String
        public let microBatchSize, globalBatch: Int
        /// `none`, `selective` (the attention core only, Korthikanti et al. 2022) or `full`.
        public let recompute: Recompute
        /// `naive` (runs before FlashAttention: the probabilities through HBM) or `fused`.
        public let attention: AttentionKernel
        public let sequenceParallel: Bool
        public let zero: Int
        public let overlapGradReduce: Bool
        enum CodingKeys: String, CodingKey {
            case tp, pp, dp, ep, virtualStages = "virtual_stages", schedule, microBatchSize = "micro_batch_size"
            case globalBatch = "global_batch", recompute, attention, sequenceParallel = "sequence_parallel", zero
            case overlapGradReduce = "overlap_grad_reduce"
        }
    }

    public struct Cluster: Decodable, Sendable {
        public let device: String
        public let gpusPerNode: Int
        enum CodingKeys: String, CodingKey { case device, gpusPerNode = "gpus_per_node" }
    }

    /// Exactly one of these.
    public struct Measured: Decodable, Sendable {
        public let tflopsPerGPU: Double?
        public let iterationTimeS: Double?
        public let mfu: Double?
        enum CodingKeys: String, CodingKey { case tflopsPerGPU = "tflops_per_gpu", iterationTimeS = "iteration_time_s", mfu }
    }

    public let name, source: String
    public let model: Model
    public let layout: Layout
    public let cluster: Cluster
    public let measured: Measured
    /// How the source counts model FLOPs: `narayanan2021-eq3` (Narayanan et al. 2021,
    /// equation 3: 96 B s l h^2 (1 + s/6h + V/16lh) per iteration, full recomputation
    /// included) or `6nd-attention` (moe-train's model FLOPs: 6 x parameters x tokens plus
    /// attention, no recomputation).
    public let flopsCounting: String
    enum CodingKeys: String, CodingKey {
        case name, source, model, layout, cluster, measured, flopsCounting = "flops_counting"
    }

    public static let countings = ["narayanan2021-eq3", "6nd-attention"]

    /// Whether `path` holds a published run (a JSON object with `measured`) rather than an account.
    public static func isMeasurement(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return false }
        return o["measured"] != nil
    }

    /// Reads and checks a file: a missing key or a value out of range is an error naming the
    /// file and the key.
    public static func load(_ path: String) throws -> PublishedMeasurement {
        let m = try JSONText.read(PublishedMeasurement.self, from: path)
        func bad(_ key: String, _ value: Any, _ why: String) -> UsageError { UsageError("\(path): \(key) \(value): \(why)") }
        let metrics = [m.measured.tflopsPerGPU, m.measured.iterationTimeS, m.measured.mfu].compactMap { $0 }
        guard metrics.count == 1 else {
            throw UsageError("\(path): measured must hold exactly one of tflops_per_gpu, iteration_time_s, mfu (it holds \(metrics.count))")
        }
        guard metrics[0].isFinite && metrics[0] > 0 else { throw bad("measured", metrics[0], "must be positive") }
        if let mfu = m.measured.mfu, mfu > 1 { throw bad("measured.mfu", mfu, "is a fraction of the peak, at most 1") }
        let md = m.model, l = m.layout
        for (key, value, least) in [("model.layers", md.layers, 1), ("model.d_model", md.dModel, 1), ("model.heads", md.heads, 1),
                                    ("model.kv_heads", md.kvHeads, 1), ("model.ffn_hidden", md.ffnHidden, 1), ("model.experts", md.experts, 0),
                                    ("model.top_k", md.topK, 1), ("model.moe_every", md.moeEvery, 0), ("model.vocab", md.vocab, 2),
                                    ("model.seq_len", md.seqLen, 2), ("layout.virtual_stages", l.virtualStages, 1),
                                    ("layout.micro_batch_size", l.microBatchSize, 1), ("layout.global_batch", l.globalBatch, 1),
                                    ("layout.zero", l.zero, 0)] {
            guard (least...1_000_000_000).contains(value) else { throw bad(key, value, "must be from \(least) to 1000000000") }
        }
        if md.experts > 0 && md.topK > md.experts { throw bad("model.top_k", md.topK, "is more than model.experts \(md.experts)") }
        guard countings.contains(m.flopsCounting) else { throw bad("flops_counting", m.flopsCounting, "expected one of \(countings.joined(separator: ", "))") }
        guard FFNKind(rawValue: m.model.ffn) != nil else {
            throw bad("model.ffn", m.model.ffn, "expected one of \(FFNKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let schedule = ScheduleKind(rawValue: m.layout.schedule), schedule != .zbH1 else {
            throw bad("layout.schedule", m.layout.schedule, "expected one of \(ScheduleKind.allCases.filter { $0 != .zbH1 }.map(\.rawValue).joined(separator: ", ")) (zb-h1 is not projected)")
        }
        for (key, value) in [("layout.tp", m.layout.tp), ("layout.pp", m.layout.pp), ("layout.dp", m.layout.dp), ("layout.ep", m.layout.ep)] {
            guard (1...1_000_000).contains(value) else { throw bad(key, value, "must be from 1 to 1000000") }
        }
        return m
    }

    /// The training configuration and world size the projection runs.
    public func configuration() throws -> (RunConfig, world: Int) {
        var c = RunConfig()
        let m = model, l = layout
        c.model.layers = m.layers; c.model.dModel = m.dModel; c.model.heads = m.heads; c.model.kvHeads = m.kvHeads
        c.model.ffnHidden = m.ffnHidden; c.model.vocab = m.vocab; c.model.seqLen = m.seqLen
        c.model.ffn = FFNKind(rawValue: m.ffn)!
        let dense = m.experts == 0 || m.moeEvery == 0
        c.model.experts = max(m.experts, 1); c.model.topK = max(m.topK, 1); c.model.moeEvery = dense ? 0 : m.moeEvery
        if dense { c.model.capacityFactor = 0 }
        c.tp = l.tp; c.pp = l.pp; c.ep = l.ep; c.virtualStages = l.virtualStages
        c.schedule = ScheduleKind(rawValue: l.schedule)!
        c.microBatchSize = l.microBatchSize; c.globalBatch = l.globalBatch; c.microBatches = nil
        c.zero = l.zero
        c.recompute = l.recompute
        c.attention = l.attention
        c.sequenceParallel = l.sequenceParallel
        c.overlapGradReduce = l.overlapGradReduce
        c.device = cluster.device; c.gpusPerNode = cluster.gpusPerNode
        // Each factor is at most 10^6 (`load`), so the product fits an Int; the plan bounds it.
        return (c, l.tp * l.pp * l.dp)
    }

    public enum Metric: String, Sendable { case tflopsPerGPU = "tflops_per_gpu", iterationTimeS = "iteration_time_s", mfu }

    public var metric: (Metric, Double) {
        if let t = measured.tflopsPerGPU { return (.tflopsPerGPU, t) }
        if let t = measured.iterationTimeS { return (.iterationTimeS, t) }
        return (.mfu, measured.mfu!)
    }

    /// Model FLOPs of one iteration as the source counts them.
    public func modelFLOPsPerIteration(projection p: Projection) -> Double {
        switch flopsCounting {
        case "narayanan2021-eq3":
            let (B, s, l, h, V) = (Double(layout.globalBatch), Double(model.seqLen), Double(model.layers), Double(model.dModel), Double(model.vocab))
            return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
        default:
            return p.mfu * p.stepTime * p.plan.emulator.profile.peakFLOPS * Double(p.plan.topology.world)
        }
    }

    /// The projected value of the measured metric.
    public func predicted(by p: Projection) -> Double {
        switch metric.0 {
        case .iterationTimeS: return p.stepTime
        case .mfu: return p.mfu
        case .tflopsPerGPU: return modelFLOPsPerIteration(projection: p) / (p.stepTime * Double(p.plan.topology.world)) / 1e12
        }
    }
}

/// `moe-train validate`: every published run projected, its error, and the mean and max
/// absolute error over them.
public enum Validate {
    public struct Row: Encodable, Sendable {
        public let name, metric, source: String
        public let published, predicted, error: Double
    }

    public struct Report: Encodable, Sendable {
        public let rows: [Row]
        public let meanAbsError, maxAbsError: Double
        enum CodingKeys: String, CodingKey { case rows, meanAbsError = "mean_abs_error", maxAbsError = "max_abs_error" }
    }

    /// A projection whose failure names the published run.
    static func projection(_ plan: JobPlan, of m: PublishedMeasurement) throws -> Projection {
        do { return try Projection(plan: plan) } catch { throw UsageError("\(m.name): \(error)") }
    }

    /// Reads and plans every file before printing anything: a bad file stops the command
    /// with its name and the key at fault.
    static func plans(_ files: [String]) throws -> [(PublishedMeasurement, JobPlan)] {
        try files.map { file in
            let m = try PublishedMeasurement.load(file)
            let (config, world) = try m.configuration()
            do { return (m, try JobPlan(config: config, world: world, purpose: .projection)) } catch {
                throw UsageError("\(file): \(error)")
            }
        }
    }

    public static func run(files: [String], log: (String) -> Void) throws -> Report {
        let report = try rows(plans(files).map { m, plan in (m, try projection(plan, of: m)) })
        print(report, log: log)
        return report
    }

    static func rows(_ projected: [(PublishedMeasurement, Projection)]) -> Report {
        var rows: [Row] = []
        for (m, p) in projected {
            let (metric, published) = m.metric
            let predicted = m.predicted(by: p)
            rows.append(Row(name: m.name, metric: metric.rawValue, source: m.source, published: published, predicted: predicted,
                            error: predicted / published - 1))
        }
        let errors = rows.map { abs($0.error) }
        return Report(rows: rows, meanAbsError: errors.isEmpty ? 0 : errors.reduce(0, +) / Double(errors.count),
                      maxAbsError: errors.max() ?? 0)
    }

    static func print(_ report: Report, log: (String) -> Void) {
        let rows = report.rows
        log("  " + "run".padding(toLength: 34, withPad: " ", startingAt: 0) + "metric              published   predicted    error")
        for r in rows {
            log("  " + r.name.padding(toLength: 34, withPad: " ", startingAt: 0) + r.metric.padding(toLength: 18, withPad: " ", startingAt: 0)
                + String(format: "%11.4g %11.4g %+7.1f%%", r.published, r.predicted, 100 * r.error))
        }
        log(String(format: "%ld runs: mean absolute error %.1f%%, max %.1f%%", rows.count, 100 * report.meanAbsError, 100 * report.maxAbsError))
    }

    /// `validate --fit PREFIX`: the two constants of the device of the runs whose names start
    /// with PREFIX that these runs can pin down, fit to them for the least mean absolute error:
    /// the GEMM efficiency (`flops_efficiency`) and the share of NVLink bandwidth collectives
    /// reach inside a node (`intra_node.efficiency`); then every run projected with them: the
    /// error on the fit set and on the runs held out. One set of constants for the device,
    /// never one per run. (The published runs' attention is unfused and their inter-node
    /// traffic is a small share of the step, so the attention kernel's and InfiniBand's
    /// efficiencies stay as the profile has them.)
    public struct Fit: Encodable, Sendable {
        public let device: String
        public let before, after: Double
        public let linkBefore, linkAfter: Double
        /// Whether a constant stopped at an end of its search range (then the constants are not
        /// what limits the error: the runs need something the model does not have).
        public let atRangeEnd: Bool
        public let fitSet: Report
        /// Nil when the prefix names every run.
        public let heldOut: Report?
        enum CodingKeys: String, CodingKey {
            case device, before = "flops_efficiency_before", after = "flops_efficiency"
            case linkBefore = "intra_node_efficiency_before", linkAfter = "intra_node_efficiency"
            case atRangeEnd = "at_range_end", fitSet = "fit_set", heldOut = "held_out"
        }
    }

    /// Search ranges of the two constants.
    static let flopsRange = (0.3, 1.0), linkRange = (0.3, 1.0)

    public static func fit(files: [String], prefix: String, log: (String) -> Void) throws -> Fit {
        let all = try plans(files)
        let inFit = all.filter { $0.0.name.hasPrefix(prefix) }, outOfFit = all.filter { !$0.0.name.hasPrefix(prefix) }
        guard !inFit.isEmpty else { throw UsageError("--fit \(prefix): no run's name starts with it") }
        let devices = Set(inFit.map { $0.1.emulator.profile.name })
        guard devices.count == 1, let base = inFit.first?.1.emulator.profile else {
            throw UsageError("--fit \(prefix): the runs it names use \(devices.sorted().joined(separator: ", ")); fit one device at a time")
        }
        func projected(_ set: [(PublishedMeasurement, JobPlan)], _ e: (flops: Double, link: Double)) throws -> [(PublishedMeasurement, Projection)] {
            var profile = base.withIntraNodeEfficiency(e.link)
            profile.flopsEfficiency = e.flops
            return try set.map { m, plan in
                (m, try projection(plan.emulator.profile.name == base.name ? plan.costed(on: profile) : plan, of: m))
            }
        }
        var memo: [String: Double] = [:]
        func error(_ e: (flops: Double, link: Double)) throws -> Double {
            let key = String(format: "%.6f %.6f", e.flops, e.link)
            if let v = memo[key] { return v }
            let v = rows(try projected(inFit, e)).meanAbsError
            memo[key] = v
            return v
        }
        // A coarse grid first (the mean of absolute errors need not be unimodal), then
        // golden-section searches along each constant in turn, in brackets around the best point.
        let flopsGrid = stride(from: flopsRange.0, through: flopsRange.1 + 1e-9, by: 0.05).map { $0 }
        let linkGrid = stride(from: linkRange.0, through: linkRange.1 + 1e-9, by: 0.1).map { $0 }
        var best = (flops: base.flopsEfficiency, link: base.intraNodeEfficiency), bestError = Double.infinity
        for f in flopsGrid {
            for l in linkGrid {
                let e = try error((f, l))
                if e < bestError { bestError = e; best = (f, l) }
            }
        }
        func golden(_ lo0: Double, _ hi0: Double, _ f: (Double) throws -> Double) rethrows -> Double {
            var (lo, hi) = (lo0, hi0)
            let g = (5.0.squareRoot() - 1) / 2
            var a = hi - g * (hi - lo), b = lo + g * (hi - lo)
            var fa = try f(a), fb = try f(b)
            while hi - lo > 1e-3 {
                if fa < fb { hi = b; b = a; fb = fa; a = hi - g * (hi - lo); fa = try f(a) }
                else { lo = a; a = b; fa = fb; b = lo + g * (hi - lo); fb = try f(b) }
            }
            return (lo + hi) / 2
        }
        for _ in 0..<2 {
            let link = best.link
            best.flops = try golden(max(best.flops - 0.05, flopsRange.0), min(best.flops + 0.05, flopsRange.1)) { try error(($0, link)) }
            let flops = best.flops
            best.link = try golden(max(best.link - 0.1, linkRange.0), min(best.link + 0.1, linkRange.1)) { try error((flops, $0)) }
        }
        func atEdge(_ v: Double, _ r: (Double, Double)) -> Bool { v - r.0 < 2e-3 || r.1 - v < 2e-3 }
        let atEnd = atEdge(best.flops, flopsRange) || atEdge(best.link, linkRange)
        let fitSet = rows(try projected(inFit, best))
        let heldOut = outOfFit.isEmpty ? nil : rows(try projected(outOfFit, best))
        log(String(format: "fit: %@ flops_efficiency %.3f (the profile has %.3f), intra_node efficiency %.3f (the profile has %.3f), fit to the %ld run(s) named %@*%@",
                   base.name, best.flops, base.flopsEfficiency, best.link, base.intraNodeEfficiency, inFit.count, prefix,
                   atEnd ? "; a constant stopped at the end of its search range: the constants alone cannot fit these runs" : ""))
        log("fit set:")
        print(fitSet, log: log)
        if let heldOut {
            log("held out:")
            print(heldOut, log: log)
        }
        return Fit(device: base.name, before: base.flopsEfficiency, after: best.flops, linkBefore: base.intraNodeEfficiency,
                   linkAfter: best.link, atRangeEnd: atEnd, fitSet: fitSet, heldOut: heldOut)
    }
}
