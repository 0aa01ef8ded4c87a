import Foundation

/// The training run of the background account (configs/gpt4-account.json) and the
/// arithmetic that follows from its figures: parameter counts, FLOPs, days at a given
/// utilization, GPU-hours and cost. The first step of `moe-train project`; the emulator's
/// own prediction of the same run builds on it.
public struct PublishedRun: Sendable {
    public var layers = 0.0, dModel = 0.0, heads = 0.0, kvHeads = 0.0, experts = 0.0, topK = 0.0
    public var expertParams = 0.0, sharedParams = 0.0, seqLen = 0.0, vocab = 0.0
    public var tokens = 0.0, batchTokens = 0.0, tp = 0.0, pp = 0.0, gpus = 0.0
    public var device = "", daysLow = 0.0, daysHigh = 0.0, mfuLow = 0.0, mfuHigh = 0.0
    public var accountTotalFLOPs = 0.0, accountCostUSD = 0.0, usdPerGPUHour = 0.0
    public var altGPUs = 0.0, altDevice = "", altDays = 0.0, altUSDPerGPUHour = 0.0, altCostUSD = 0.0
    public var fp16ParamsGBPerGPU = 0.0

    public struct Invalid: Error, CustomStringConvertible { public let description: String }

    public static func load(_ path: String) throws -> PublishedRun {
        guard let data = FileManager.default.contents(atPath: path) else { throw Invalid(description: "cannot read \(path)") }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let m = o["model"] as? [String: Any], let t = o["training"] as? [String: Any] else {
            throw Invalid(description: "\(path) must hold the objects \"model\" and \"training\"")
        }
        func num(_ d: [String: Any], _ k: String) throws -> Double {
            guard let v = d[k] as? NSNumber else { throw Invalid(description: "\(path): \(k) must be a number") }
            return v.doubleValue
        }
        func str(_ d: [String: Any], _ k: String) throws -> String {
            guard let v = d[k] as? String else { throw Invalid(description: "\(path): \(k) must be a string") }
            return v
        }
        var a = PublishedRun()
        a.layers = try num(m, "layers"); a.dModel = try num(m, "d_model"); a.heads = try num(m, "heads")
        a.kvHeads = try num(m, "kv_heads"); a.experts = try num(m, "experts"); a.topK = try num(m, "top_k")
        a.expertParams = try num(m, "expert_params"); a.sharedParams = try num(m, "shared_params")
        a.seqLen = try num(m, "seq_len"); a.vocab = try num(m, "vocab")
        a.tokens = try num(t, "tokens"); a.batchTokens = try num(t, "batch_tokens"); a.tp = try num(t, "tp"); a.pp = try num(t, "pp")
        a.gpus = try num(t, "gpus"); a.device = try str(t, "device"); a.daysLow = try num(t, "days_low"); a.daysHigh = try num(t, "days_high")
        a.mfuLow = try num(t, "mfu_low"); a.mfuHigh = try num(t, "mfu_high"); a.accountTotalFLOPs = try num(t, "total_flops")
        a.accountCostUSD = try num(t, "cost_usd"); a.usdPerGPUHour = try num(t, "usd_per_gpu_hour")
        a.altGPUs = try num(t, "alt_gpus"); a.altDevice = try str(t, "alt_device"); a.altDays = try num(t, "alt_days")
        a.altUSDPerGPUHour = try num(t, "alt_usd_per_gpu_hour"); a.altCostUSD = try num(t, "alt_cost_usd")
        a.fp16ParamsGBPerGPU = try num(t, "fp16_params_gb_per_gpu")
        return a
    }

    /// All experts plus the shared (attention and embedding) parameters.
    public var totalParams: Double { experts * expertParams + sharedParams }
    /// What one token uses: its top-k experts plus the shared parameters.
    public var activeParams: Double { topK * expertParams + sharedParams }
    /// Forward FLOPs per token, 2 x active parameters. (The account writes "560 TFLOPs" for
    /// this: 2 x 280e9 is 5.6e11 FLOP, 560 GFLOP; a unit slip of 1000.)
    public var forwardFLOPsPerToken: Double { 2 * activeParams }
    /// Training FLOPs, 6 x active parameters x tokens (forward 2, backward 4).
    public var trainingFLOPs: Double { 6 * activeParams * tokens }

    /// Days to train `trainingFLOPs` on `gpus` devices of `peak` FLOP/s at utilization `mfu`.
    public func days(gpus n: Double, peak: Double, mfu: Double, flops: Double? = nil) -> Double {
        (flops ?? trainingFLOPs) / (n * peak * mfu) / 86400
    }

    public func cost(gpus n: Double, days d: Double, usdPerGPUHour price: Double) -> Double { n * d * 24 * price }

    /// The utilization the alternative scenario needs to fit the run into its days.
    public func impliedMFU(gpus n: Double, days d: Double, peak: Double) -> Double { trainingFLOPs / (n * peak * d * 86400) }

    /// Parameter bytes per GPU in fp16 at the account's TP x PP (experts and shared split evenly).
    public var fp16ParamBytesPerGPU: Double { 2 * totalParams / (tp * pp) }

    /// The account's figures and what follows from them, as lines of a table.
    public func report(peak: Double, altPeakBF16: Double, altPeakFP8: Double) -> [String] {
        func e(_ x: Double) -> String { String(format: "%.3g", x) }
        let dLow = days(gpus: gpus, peak: peak, mfu: mfuHigh), dHigh = days(gpus: gpus, peak: peak, mfu: mfuLow)
        var out: [String] = []
        out.append("the account's arithmetic, recomputed:")
        out.append("  total parameters       \(experts) x \(e(expertParams)) + \(e(sharedParams)) = \(e(totalParams))")
        out.append("  active per token       \(topK) x \(e(expertParams)) + \(e(sharedParams)) = \(e(activeParams))")
        out.append("  forward FLOPs/token    2 x active = \(e(forwardFLOPsPerToken)) (the account's \"560 TFLOPs\" is 1000x too large: 560 GFLOP)")
        out.append("  training FLOPs         6 x active x \(e(tokens)) tokens = \(e(trainingFLOPs)) (account: \(e(accountTotalFLOPs)), "
                   + String(format: "%+.1f%%)", 100 * (trainingFLOPs / accountTotalFLOPs - 1)))
        out.append(String(format: "  days on %.0f %@ at %.0f%%-%.0f%% MFU   %.1f to %.1f days (account: %.0f to %.0f)",
                          gpus, device, 100 * mfuLow, 100 * mfuHigh, dLow, dHigh, daysLow, daysHigh))
        let cLow = cost(gpus: gpus, days: dLow, usdPerGPUHour: usdPerGPUHour), cHigh = cost(gpus: gpus, days: dHigh, usdPerGPUHour: usdPerGPUHour)
        out.append(String(format: "  cost at $%.2f per GPU-hour   $%.1fM to $%.1fM; the account's $%.0fM corresponds to %.0f days",
                          usdPerGPUHour, cLow / 1e6, cHigh / 1e6, accountCostUSD / 1e6, accountCostUSD / (gpus * 24 * usdPerGPUHour)))
        let alt = cost(gpus: altGPUs, days: altDays, usdPerGPUHour: altUSDPerGPUHour)
        out.append(String(format: "  alternative: %.0f %@ x %.0f days x $%.2f = $%.1fM (account $%.1fM); fitting the run needs %.0f%% of the bf16 peak or %.0f%% of the fp8 peak",
                          altGPUs, altDevice, altDays, altUSDPerGPUHour, alt / 1e6, altCostUSD / 1e6,
                          100 * impliedMFU(gpus: altGPUs, days: altDays, peak: altPeakBF16),
                          100 * impliedMFU(gpus: altGPUs, days: altDays, peak: altPeakFP8)))
        out.append(String(format: "  fp16 parameters per GPU at TP%.0f x PP%.0f   %.1f GB (account: about %.0f GB)",
                          tp, pp, fp16ParamBytesPerGPU / 1e9, fp16ParamsGBPerGPU))
        return out
    }
}
