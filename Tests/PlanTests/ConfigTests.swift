import Foundation
import XCTest
import Plan

final class ConfigTests: XCTestCase {
    func parse(_ s: String) throws -> RunConfig { try ConfigFile.parse(Data(s.utf8), name: "test.json") }

    func message(_ f: () throws -> Any) -> String {
        do { _ = try f(); return "" } catch { return String(describing: error) }
    }

    func testShippedConfigsLoadAndValidate() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["tiny", "default"] {
            let c = try ConfigFile.load(root.appendingPathComponent("configs/\(name).json").path)
            XCTAssertNoThrow(try c.validate(), name)
        }
        let d = try ConfigFile.load(root.appendingPathComponent("configs/default.json").path)
        XCTAssertEqual(d.model.experts, 16)
        XCTAssertEqual(d.model.topK, 2)
        XCTAssertEqual(d.model.kvHeads, 1)
        XCTAssertEqual(d.model.layers, 8)
    }

    func testKeysTypesAndErrors() throws {
        let c = try parse(#"{"layers": 3, "lr": 1, "tie_embeddings": true, "comment": "x", "data": "f.txt"}"#)
        XCTAssertEqual(c.model.layers, 3)
        XCTAssertEqual(c.lr, 1)
        XCTAssertTrue(c.model.tieEmbeddings)
        XCTAssertEqual(c.data, "f.txt")
        XCTAssertTrue(message { try self.parse(#"{"layers": 2.5}"#) }.contains("integer"))
        XCTAssertTrue(message { try self.parse(#"{"layers": true}"#) }.contains("integer"))
        XCTAssertTrue(message { try self.parse(#"{"tie_embeddings": 1}"#) }.contains("true or false"))
        XCTAssertTrue(message { try self.parse(#"{"lr": "fast"}"#) }.contains("number"))
        XCTAssertTrue(message { try self.parse(#"{"nope": 1}"#) }.contains("unknown key \"nope\""))
        XCTAssertTrue(message { try self.parse("[1, 2]") }.contains("JSON object"))
        XCTAssertTrue(message { try self.parse("{") }.contains("not valid JSON"))
    }

    func testEnumsAndValuesNamedInMessages() throws {
        let c = try parse(#"{"schedule": "zb-h1", "clock": "measured", "link": "ideal", "precision": "fp32", "fail_mode": "crash-during-checkpoint"}"#)
        XCTAssertEqual(c.schedule, .zbH1)
        XCTAssertEqual(c.clock, .measured)
        XCTAssertEqual(c.link, .ideal)
        XCTAssertEqual(c.precision, .fp32)
        XCTAssertEqual(c.failMode, .crashDuringCheckpoint)
        let bad = message { try self.parse(#"{"schedule": "2f2b"}"#) }
        XCTAssertTrue(bad.contains("test.json") && bad.contains("\"schedule\"") && bad.contains("\"2f2b\"") && bad.contains("\"1f1b\""), bad)
        let big = message { try self.parse(#"{"steps": 1e300}"#) }
        XCTAssertTrue(big.contains("\"steps\"") && big.contains("integer"), big)
        let negativeSeed = message { try self.parse(#"{"seed": -1}"#) }
        XCTAssertTrue(negativeSeed.contains("\"seed\"") && negativeSeed.contains("-1"), negativeSeed)
        XCTAssertEqual(try parse(#"{"dp": null}"#).dp, nil)
    }

    /// A configuration with every key set away from its default, as JSON: each key once.
    func everyKeyChanged() throws -> (json: String, config: RunConfig) {
        let json = #"""
        {"vocab": 512, "d_model": 96, "layers": 6, "heads": 6, "kv_heads": 2, "ffn_hidden": 192, "experts": 8, "top_k": 1,
         "moe_every": 2, "capacity_factor": 2.5, "aux_loss_coef": 0.02, "z_loss_coef": 0.001, "tie_embeddings": true,
         "seq_len": 32, "rope_theta": 5000, "norm_eps": 1e-6, "init_std": 0.01, "router_init_scale": 3,
         "tp": 2, "pp": 3, "dp": 4, "ep": 2, "zero": 2, "zero_group": 2, "schedule": "interleaved", "virtual_stages": 2, "recompute": "selective", "attention": "naive", "pp_layers": [1, 1, 1, 1, 1, 1],
         "sequence_parallel": true, "overlap_grad_reduce": true, "overlap_param_gather": true, "ffn": "swiglu",
         "global_batch": 24, "micro_batch_size": 3, "micro_batches": 2,
         "steps": 77, "lr": 0.0005, "min_lr_ratio": 0.2, "warmup_steps": 3, "weight_decay": 0.05, "beta1": 0.8, "beta2": 0.99,
         "adam_eps": 1e-7, "grad_clip": 0.5, "max_skipped_steps": 7, "checkpoint_mode": "async", "seed": 18446744073709551615,
         "data": "corpus.txt", "markov_order": 3, "markov_alphabet": 10, "markov_branching": 2, "markov_seed": 9,
         "device": "h100-sxm", "clock": "measured", "clock_scale": 0.5, "gpus_per_node": 4, "link": "ideal", "precision": "fp32",
         "ignore_oom": true,
         "checkpoint_dir": "runs/x", "checkpoint_every": 5, "keep_checkpoints": 2, "resume": "never", "attempt": 3,
         "fail_at_step": 4, "fail_rank": 1, "fail_mode": "slow", "slow_factor": 2, "mtbf_hours": 0.5, "restart_cost_s": 7,
         "checkpoint_bandwidth": 1e9,
         "time_as": {"d_model": 1024, "heads": 8, "seq_len": 2048, "name": "t"},
         "log_every": 3, "trace": "t.json", "trace_wall": true, "summary_json": "s.json", "dump_step": 2, "dump_dir": "d"}
        """#
        return (json, try parse(json))
    }

    /// Every key survives file -> config -> manifest (canonical JSON) -> config, and the
    /// file above really sets every key (none keeps its default).
    /// Checkpoints written before `ffn` existed still resume: a GELU model's numerics (what a
    /// checkpoint's config hash covers) leave the key out, as they did then; SwiGLU's name it.
    func testNumericsOfEarlierCheckpointsAreUnchanged() throws {
        var c = RunConfig()
        let gelu = String(decoding: try c.numericsJSON(), as: UTF8.self)
        XCTAssertFalse(gelu.contains("\"ffn\""), gelu)
        XCTAssertTrue(gelu.contains("\"ffn_hidden\""), gelu)
        c.model.ffn = .swiglu
        XCTAssertTrue(String(decoding: try c.numericsJSON(), as: UTF8.self).contains("\"ffn\":\"swiglu\""))
        XCTAssertEqual(c.numericsDifferences(from: RunConfig()), ["ffn \"gelu\" in the checkpoint, \"swiglu\" here"])
    }

    func testEveryKeyRoundTripsThroughTheManifest() throws {
        let (json, c) = try everyKeyChanged()
        let fileKeys = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]).keys.sorted()
        XCTAssertEqual(fileKeys, RunConfig.keys, "the test file must set every key")
        let manifest = try c.canonicalJSON()
        let back = try ConfigFile.parse(manifest, name: "test.json")
        XCTAssertEqual(back, c)
        let defaults = try JSONSerialization.jsonObject(with: RunConfig().canonicalJSON()) as! [String: Any]
        let changed = try JSONSerialization.jsonObject(with: manifest) as! [String: Any]
        for key in RunConfig.keys {
            let before = defaults[key] as? NSObject ?? NSNull(), after = changed[key] as? NSObject ?? NSNull()
            XCTAssertNotEqual(before, after, "key \(key) keeps its default in the round-trip test")
        }
        // Canonical: the same configuration always encodes to the same bytes, keys sorted.
        XCTAssertEqual(try back.canonicalJSON(), manifest)
    }

    /// The config hash covers what changes the numbers and nothing else.
    func testNumericsFingerprint() throws {
        let base = RunConfig()
        var layout = base
        layout.tp = 4; layout.pp = 2; layout.schedule = .gpipe; layout.device = "h100-sxm"; layout.logEvery = 1
        XCTAssertEqual(try layout.numericsJSON(), try base.numericsJSON())
        var numerics = base
        numerics.model.seqLen = 32
        XCTAssertNotEqual(try numerics.numericsJSON(), try base.numericsJSON())
        var seed = base
        seed.seed = 99
        XCTAssertNotEqual(try seed.numericsJSON(), try base.numericsJSON())
    }

    func testValidationMessages() {
        var c = RunConfig()
        c.model.topK = 0
        XCTAssertTrue(message { try c.validate() }.contains("--top-k"))
        c = RunConfig(); c.model.topK = 5; c.model.experts = 4
        XCTAssertTrue(message { try c.validate() }.contains("--top-k must be between 1 and 4 (got 5)"))
        c = RunConfig(); c.model.heads = 3
        XCTAssertTrue(message { try c.validate() }.contains("not divisible by --heads 3"))
        c = RunConfig(); c.dumpStep = 3
        XCTAssertTrue(message { try c.validate() }.contains("--dump-dir"))
    }

    func testBatchPlanDerivesTheMissingNumber() throws {
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: 4, microBatches: nil, dp: 1).microBatches, 4)
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: 4, microBatches: nil, dp: 2).microBatches, 2)
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: nil, microBatches: 8, dp: 2).microBatchSize, 1)
        XCTAssertEqual(try BatchPlan(globalBatch: nil, microBatchSize: 2, microBatches: 3, dp: 2).globalBatch, 12)
        XCTAssertTrue(message { try BatchPlan(globalBatch: 10, microBatchSize: 4, microBatches: nil, dp: 1) }.contains("10"))
        XCTAssertTrue(message { try BatchPlan(globalBatch: 8, microBatchSize: 2, microBatches: 2, dp: 1) }.contains("differs"))
    }
}
