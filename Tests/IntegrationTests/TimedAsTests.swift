import Foundation
import XCTest
import TestSupport

/// `--time-as`: the executed run timed as a model of other dimensions.
final class TimedAsTests: XCTestCase {
    /// A target of production-like shape for the tiny config (4 layers' worth of ranks at most).
    static let target = """
    {"name": "test target", "d_model": 2048, "ffn_hidden": 4096, "heads": 16, "kv_heads": 2, "seq_len": 1024, "micro_batch_size": 2, "vocab": 32000}
    """

    func targetFile(_ dir: String, _ text: String = TimedAsTests.target) throws -> String {
        let path = dir + "/target.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Acceptance: with balanced routing (top-k = experts: every expert gets every token, none
    /// dropped), `project-layout` given the same target predicts the emulated step time of the
    /// executed run within 2%, on layouts with tensor, pipeline, expert and data parallelism,
    /// sequence parallelism, full recomputation, overlapped reduction and gathers, and ZeRO-2 and 3.
    func testProjectionOfTheTimedModelMatchesTheTimedRun() throws {
        let bin = try Subprocess.binary
        let dir = try Subprocess.tempDir()
        let target = try targetFile(dir)
        for flags in [["--tp", "2", "--pp", "2"], ["--tp", "2", "--ep", "2"], ["--tp", "2", "--pp", "2", "--ep", "2", "--sequence-parallel"],
                      ["--tp", "2", "--pp", "2", "--recompute", "full"],
                      ["--pp", "2", "--virtual-stages", "2", "--schedule", "interleaved", "--layers", "4", "--gpus-per-node", "1",
                       "--overlap-grad-reduce", "--overlap-param-gather"],
                      // ZeRO-2 and 3 over two data-parallel replicas: per-unit reductions and gathers at the timed sizes.
                      ["--pp", "2", "--zero", "2", "--overlap-grad-reduce"],
                      ["--pp", "2", "--zero", "3", "--overlap-param-gather"]] {
            let common = ["--config", "configs/tiny.json", "--steps", "3", "--experts", "4", "--top-k", "4", "--time-as", target,
                          "--ignore-oom"] + flags
            let real = try Subprocess.mpirun(np: 4, common + ["--summary-json", dir + "/s.json"])
            XCTAssertEqual(real.status, 0, real.output)
            guard real.status == 0 else { continue }
            let s = try Subprocess.readJSON(dir + "/s.json")
            let measured = try XCTUnwrap((s["emulated_step_times_s"] as? [Double])?.last)
            let load = try XCTUnwrap(s["expert_load"] as? [String: Any])
            XCTAssertEqual(load["imbalance_per_step"] as? [Double], [1, 1, 1], "top-k = experts is balanced")
            let p = try Subprocess.run(bin, ["project-layout", "--world", "4", "--json", dir + "/p.json"] + common, cwd: Subprocess.repoRoot)
            XCTAssertEqual(p.status, 0, p.output)
            let predicted = try XCTUnwrap(try Subprocess.readJSON(dir + "/p.json")["step_time_s"] as? Double)
            print(String(format: "timed as the target, %@: measured %.6f ms, projected %.6f ms (%.4f%%)", flags.joined(separator: " "),
                         measured * 1e3, predicted * 1e3, 100 * (predicted / measured - 1)))
            XCTAssertEqual(predicted, measured, accuracy: 0.02 * measured, flags.joined(separator: " "))
            // The timed model is what the clock charged: a step of it is far longer than the tiny model's.
            XCTAssertGreaterThan(measured, 1e-3)
        }
    }

    /// Acceptance: the timing model changes no numerics (the same losses and param_checksum with
    /// and without it); it changes the clock, the MFU and the memory, and says so in the header,
    /// the summary and the footer. Expert imbalance is in the log line and the summary; the trace
    /// marks the expert GEMMs.
    func testTimingModelChangesNoNumerics() throws {
        let dir = try Subprocess.tempDir()
        let target = try targetFile(dir)
        let common = ["--config", "configs/tiny.json", "--tp", "2", "--pp", "2", "--steps", "4", "--log-every", "1"]
        let plain = try Subprocess.mpirun(np: 4, common + ["--summary-json", dir + "/plain.json"])
        XCTAssertEqual(plain.status, 0, plain.output)
        let timed = try Subprocess.mpirun(np: 4, common + ["--time-as", target, "--ignore-oom", "--summary-json", dir + "/timed.json",
                                                           "--trace", dir + "/trace.json"])
        XCTAssertEqual(timed.status, 0, timed.output)
        guard plain.status == 0, timed.status == 0 else { return }
        let a = try Subprocess.readJSON(dir + "/plain.json"), b = try Subprocess.readJSON(dir + "/timed.json")
        XCTAssertEqual(a["param_checksum"] as? String, b["param_checksum"] as? String)
        XCTAssertEqual(a["losses"] as? [Double], b["losses"] as? [Double])
        XCTAssertTrue(a["timed_as"] is NSNull, "no timing model: timed_as is null")
        let t = try XCTUnwrap(b["timed_as"] as? [String: Any])
        XCTAssertEqual(t["d_model"] as? Int, 2048)
        XCTAssertEqual(t["tokens_per_step"] as? Int, 2 * 4 * 1024)   // 2 per micro-batch x 4 micro-batches (16 / 4) x 1024
        let stepA = try XCTUnwrap(a["emulated_step_time_s"] as? Double), stepB = try XCTUnwrap(b["emulated_step_time_s"] as? Double)
        XCTAssertGreaterThan(stepB, 5 * stepA, "the timed model's step is far longer")
        let mfuA = try XCTUnwrap(a["mfu"] as? Double), mfuB = try XCTUnwrap(b["mfu"] as? Double)
        XCTAssertGreaterThan(mfuB, 50 * mfuA, "launch latency no longer dominates")
        XCTAssertTrue(timed.stdout.contains("executed: 2 layers, d_model 64"), timed.stdout)
        XCTAssertTrue(timed.stdout.contains("timed as: 2 layers, d_model 2048"), timed.stdout)
        XCTAssertTrue(timed.stdout.contains("(test target)"), timed.stdout)
        XCTAssertTrue(timed.stdout.contains("max/mean"), "the log line shows the expert imbalance:\n\(timed.stdout)")
        // Imbalance per step, per MoE layer (the busiest expert over the mean, at least 1) and
        // overall (the most imbalanced layer's); the tiny model's router is not balanced yet.
        let load = try XCTUnwrap(b["expert_load"] as? [String: Any])
        let overall = try XCTUnwrap(load["imbalance_per_step"] as? [Double])
        let perLayer = try XCTUnwrap(load["imbalance_per_layer_per_step"] as? [[Double]])
        XCTAssertEqual(overall.count, 4)
        XCTAssertEqual(perLayer.count, 4)
        XCTAssertEqual(perLayer.first?.count, 2, "the tiny config's 2 MoE layers")
        XCTAssertTrue(overall.contains { $0 > 1 }, "some step is imbalanced")
        for (o, layers) in zip(overall, perLayer) {
            XCTAssertEqual(o, layers.max()!, "overall: the most imbalanced layer's")
            XCTAssertTrue(layers.allSatisfy { $0 >= 1 })
        }
        // The trace names the expert GEMMs with their rows (in the timed model: scaled by 2 x 1024 / (4 x 32) = 16).
        let trace = try String(contentsOfFile: dir + "/trace.json", encoding: .utf8)
        XCTAssertTrue(trace.contains("experts: "), "no expert span in the trace")
        XCTAssertTrue(trace.contains("busiest"), "expert spans name the busiest expert")
    }

    /// The memory figures are the timed model's, stage by stage: each stage's measured peak
    /// (executed buffers, counted in the timed model's micro-batches for that stage, the last
    /// one's logits included) bounds within 10% what the plan reserves; and a target without a
    /// micro-batch size keeps the executed one (also when only --micro-batches is given).
    func testTimedMemoryPerStageAndBatch() throws {
        let dir = try Subprocess.tempDir()
        let target = try targetFile(dir)
        let r = try Subprocess.mpirun(np: 4, ["--config", "configs/tiny.json", "--pp", "4", "--layers", "4", "--steps", "2",
                                              "--time-as", target, "--ignore-oom", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        guard r.status == 0 else { return }
        let roles = try XCTUnwrap(try Subprocess.readJSON(dir + "/s.json")["memory_bytes"] as? [[String: Any]])
        XCTAssertEqual(roles.count, 4)
        for role in roles {
            let planned = try XCTUnwrap(role["activations"] as? Double), measured = try XCTUnwrap(role["activations_measured"] as? Double)
            XCTAssertEqual(measured, planned, accuracy: 0.1 * planned, "\(role["role"] ?? "")")
        }
        let noBatch = try targetFile(dir, #"{"d_model": 256, "heads": 8}"#)
        let dry = try Subprocess.run(try Subprocess.binary, ["--config", "configs/tiny.json", "--micro-batches", "4", "--time-as", noBatch,
                                                             "--dry-run"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(dry.status, 0, dry.output)
        XCTAssertTrue(dry.stdout.contains("scaled to 4 x 32 tokens per micro-batch"), dry.stdout)
    }

    /// Acceptance: invalid targets are refused with one sentence naming the key, exit status 2, on every rank.
    func testInvalidTargetsAreRejected() throws {
        let dir = try Subprocess.tempDir()
        func reject(_ text: String?, _ layout: [String] = ["--tp", "2"], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            var args = ["--config", "configs/tiny.json", "--steps", "2"] + layout
            if let text { args += ["--time-as", try targetFile(dir, text)] }
            let r = try Subprocess.mpirun(np: 2, args, timeout: 60)
            XCTAssertEqual(r.status, 2, "\(text ?? "") \(layout):\n\(r.output)", file: file, line: line)
            let errors = r.output.components(separatedBy: "\n").filter { $0.hasPrefix("moe-train: error:") }
            XCTAssertEqual(errors.count, 1, r.output, file: file, line: line)
            for m in mentions { XCTAssertTrue(errors.first?.contains(m) ?? false, "should mention \(m): \(errors)", file: file, line: line) }
            XCTAssertFalse(r.output.contains("Fatal error"), r.output, file: file, line: line)
        }
        try reject(#"{"d_model": 1000, "heads": 7}"#, mentions: ["time_as", "d_model 1000", "heads 7"])
        try reject(#"{"heads": 3, "d_model": 384, "kv_heads": 3}"#, mentions: ["time_as", "heads 3", "--tp 2"])
        try reject(#"{"ffn_hidden": 1001}"#, mentions: ["time_as", "ffn_hidden 1001", "--tp 2"])
        try reject(#"{"d_model": 65536, "heads": 512, "ffn_hidden": 262144}"#, mentions: ["time_as", "does not fit", "out of memory"])
        try reject(#"{"d_model": 2048, "width": 3}"#, mentions: ["--time-as", "unknown key \"width\""])
        try reject(#"{"d_model": "wide"}"#, mentions: ["--time-as", "d_model", "integer"])
        try reject(#"{"d_model": 2048, "heads": 16}"#, ["--pp", "2", "--schedule", "zb-h1", "--micro-batches", "4"], mentions: ["time_as", "zb-h1"])
        try reject(nil, ["--tp", "2", "--time-as", dir + "/missing.json"], mentions: ["--time-as", dir + "/missing.json"])
        // And in a config file.
        let config = dir + "/c.json"
        try #"{"layers": 2, "time_as": {"seq_len": 0}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let r = try Subprocess.mpirun(np: 1, ["--config", config], timeout: 60)
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.output.contains("time_as") && r.output.contains("seq_len 0"), r.output)
    }
}
