import Foundation
import XCTest
import TestSupport

/// `moe-train project`: the background account's arithmetic from the command line.
final class ProjectionTests: XCTestCase {
    func testAccountArithmeticIsPrinted() throws {
        let bin = try Subprocess.binary
        let r = try Subprocess.run(bin, ["project", "--config", "configs/gpt4-account.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        for text in ["1.83e+12", "2.77e+11", "2.16e+25", "89.1 to 100.2 days", "105 days", "$21.6M", "56% of the bf16 peak", "30.5 GB"] {
            XCTAssertTrue(r.stdout.contains(text), "\(text) missing from:\n\(r.stdout)")
        }
        let bad = try Subprocess.run(bin, ["project", "--config", "/nonexistent.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(bad.status, 2, bad.output)
        XCTAssertTrue(bad.stderr.contains("cannot read /nonexistent.json"), bad.output)
    }
}

extension ProjectionTests {
    /// Acceptance 3: for layouts that also run for real (tiny config, modeled clock), the
    /// projection predicts the emulated step time the run measures, within 2%.
    func testProjectionMatchesRealRuns() throws {
        let bin = try Subprocess.binary
        for (np, flags) in [(4, ["--tp", "2", "--pp", "2"]), (4, ["--tp", "2", "--pp", "2", "--moe-every", "0"]),
                            (4, ["--pp", "4", "--layers", "4", "--micro-batches", "8", "--schedule", "gpipe"]),
                            (4, ["--tp", "2", "--ep", "4"]),
                            (4, ["--tp", "2", "--pp", "2", "--attention", "naive"]),
                            (4, ["--tp", "2", "--pp", "2", "--recompute", "selective", "--attention", "naive"]),
                            (4, ["--tp", "2", "--pp", "2", "--recompute", "full"]),
                            (4, ["--tp", "2", "--pp", "2", "--ep", "2", "--sequence-parallel"]),
                            (4, ["--pp", "2", "--zero", "2"]),
                            (4, ["--ep", "2", "--zero", "2", "--overlap-grad-reduce", "--overlap-param-gather"]),
                            (4, ["--pp", "2", "--zero", "3"]),
                            (4, ["--zero", "2", "--zero-group", "2"]),
                            (4, ["--pp", "2", "--zero", "1", "--zero-group", "1"]),
                            (4, ["--tp", "2", "--ep", "2", "--zero", "3", "--overlap-param-gather", "--recompute", "full"]),
                            (4, ["--pp", "2", "--virtual-stages", "2", "--schedule", "interleaved", "--layers", "4",
                                 "--gpus-per-node", "1", "--overlap-grad-reduce", "--overlap-param-gather"])] {
            let dir = try Subprocess.tempDir()
            let common = ["--config", "configs/tiny.json", "--steps", "4"] + flags
            let real = try Subprocess.mpirun(np: np, common + ["--summary-json", dir + "/s.json"])
            XCTAssertEqual(real.status, 0, real.output)
            let measured = try XCTUnwrap((try Subprocess.readJSON(dir + "/s.json")["emulated_step_times_s"] as? [Double])?.last)
            let p = try Subprocess.run(bin, ["project-layout", "--world", String(np), "--json", dir + "/p.json"] + common,
                                       cwd: Subprocess.repoRoot)
            XCTAssertEqual(p.status, 0, p.output)
            let predicted = try XCTUnwrap(try Subprocess.readJSON(dir + "/p.json")["step_time_s"] as? Double)
            print(String(format: "-np %d %@: measured %.6f ms, projected %.6f ms (%.4f%%)", np, flags.joined(separator: " "),
                         measured * 1e3, predicted * 1e3, 100 * (predicted / measured - 1)))
            XCTAssertEqual(predicted, measured, accuracy: 0.02 * measured)
        }
    }

    /// Acceptance 2 (first part): the emulator's own prediction of the account's run is printed.
    func testEmulatorPredictionOfTheAccountsRun() throws {
        let r = try Subprocess.run(try Subprocess.binary, ["project"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        for text in ["the emulator's prediction", "TP8 x PP15 x DP208", "pipeline bubble", "MFU", "memory per GPU", "days"] {
            XCTAssertTrue(r.stdout.contains(text), "\(text) missing:\n\(r.stdout)")
        }
    }
}

extension ProjectionTests {
    /// The JSON of a projection holds the keys the issue lists, and goodput when an MTBF is given.
    func testProjectionJSONAndGoodput() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.run(try Subprocess.binary,
                                   ["project", "--mtbf-hours", "50000", "--json", dir + "/p.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        let p = try Subprocess.readJSON(dir + "/p.json")
        for key in ["total_params", "active_params", "flops_per_token_forward", "total_flops", "step_time_s", "mfu", "bubble_fraction",
                    "exposed_comm_fraction", "memory_bytes_per_gpu", "days", "gpu_hours", "cost_usd", "goodput", "zero"] {
            XCTAssertNotNil(p[key], "missing \(key)")
        }
        XCTAssertEqual(p["zero"] as? Int, 1, "the account's ZeRO stage unless --zero says otherwise")
        let g = try XCTUnwrap(p["goodput"] as? [String: Any])
        let goodput = try XCTUnwrap(g["goodput"] as? Double)
        XCTAssertGreaterThan(goodput, 0)
        XCTAssertLessThan(goodput, 1)
        XCTAssertGreaterThan(try XCTUnwrap(g["expected_failures"] as? Double), 0)
        XCTAssertGreaterThan(try XCTUnwrap(g["days"] as? Double), try XCTUnwrap(p["days"] as? Double))
        // Async checkpoints: the step pays the snapshot at the host link's 25 GB/s instead of
        // storage's 2 GB/s, checkpoints can come more often, and each failure loses the persist
        // window more: here that wins.
        let a = try XCTUnwrap(p["goodput_async"] as? [String: Any])
        let storage = try XCTUnwrap(g["checkpoint_cost_s"] as? Double)
        let snapshot = try XCTUnwrap(a["checkpoint_cost_s"] as? Double), window = try XCTUnwrap(a["persist_window_s"] as? Double)
        XCTAssertEqual(window, storage, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(g["load_s"] as? Double), storage, accuracy: 1e-9)
        XCTAssertEqual(snapshot / window, 2e9 / 25e9, accuracy: 1e-9)
        XCTAssertLessThan(try XCTUnwrap(a["checkpoint_every_steps"] as? Int), try XCTUnwrap(g["checkpoint_every_steps"] as? Int))
        XCTAssertGreaterThan(try XCTUnwrap(a["goodput"] as? Double), goodput)
        // Memory checkpoints (Gemini): the snapshot plus the copy to the peer host, no persist
        // window, and a restart loads over the inter-node link (the A100 profile's 25 GB/s,
        // alpha aside) instead of from storage: better than sync; against async, the copy the
        // step pays outweighs the persist window and the faster load when a restart costs 10
        // minutes (the README gives both figures).
        let m = try XCTUnwrap(p["goodput_memory"] as? [String: Any])
        let load = try XCTUnwrap(m["load_s"] as? Double)
        XCTAssertEqual(try XCTUnwrap(m["persist_window_s"] as? Double), 0)
        XCTAssertEqual(load, storage * 2e9 / 25e9, accuracy: 1e-3 * load)
        XCTAssertEqual(try XCTUnwrap(m["checkpoint_cost_s"] as? Double), snapshot + load, accuracy: 1e-9)
        XCTAssertGreaterThan(try XCTUnwrap(m["goodput"] as? Double), goodput)
        XCTAssertLessThan(try XCTUnwrap(m["goodput"] as? Double), try XCTUnwrap(a["goodput"] as? Double))
        XCTAssertTrue(r.stdout.contains("with memory checkpoints: snapshot"), r.stdout)
        XCTAssertTrue(r.stdout.contains("with async checkpoints: snapshot"), r.stdout)
    }

    /// With sequence parallelism, ZeRO-2 and ZeRO-3 fit the account's TP8 x PP15 run on its
    /// 40 GB A100s, where ZeRO-1 does not; the projection says so with its MFU and days.
    func testZeroThreeFitsTheAccountsRunOnA100s() throws {
        let bin = try Subprocess.binary
        let flags = ["--sequence-parallel", "--overlap-param-gather", "--overlap-grad-reduce"]
        for zero in 1...3 {
            let r = try Subprocess.run(bin, ["project", "--zero", String(zero)] + flags, cwd: Subprocess.repoRoot)
            XCTAssertEqual(r.status, 0, r.output)
            let memory = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("memory per GPU") }, r.stdout)
            print("ZeRO-\(zero): \(memory.trimmingCharacters(in: .whitespaces))")
            XCTAssertTrue(r.stdout.contains("ZeRO-\(zero),"), r.stdout)
            XCTAssertEqual(memory.contains("does NOT fit"), zero == 1, String(memory))
            XCTAssertTrue(r.stdout.contains("MFU") && r.stdout.contains(" days,"), r.stdout)
        }
    }

    /// The sweep over a 25,000-GPU cluster prints its table and its rejections. (Its time is
    /// reported in the README, not asserted: tests never assert on wall-clock speed.) One ZeRO
    /// stage here: without `--zero` the sweep tries ZeRO-1, 2 and 3, three times the layouts.
    func testSweepReportsLayoutsAndRejections() throws {
        let r = try Subprocess.run(try Subprocess.binary, ["project", "--sweep", "--device", "a100-80gb", "--zero", "1"],
                                   cwd: Subprocess.repoRoot, timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("layouts tried"), r.stdout)
        XCTAssertTrue(r.stdout.contains("rejected:"), r.stdout)
        XCTAssertTrue(r.stdout.contains("   1  TP"), "no layout fits an A100-80GB:\n\(r.stdout)")
    }
}

extension ProjectionTests {
    /// Bad layouts for the projection: one message, exit 2, no trap.
    func testProjectRejectsBadLayouts() throws {
        let bin = try Subprocess.binary
        for args in [["--tp", "0"], ["--pp", "4000"], ["--dp", "0"], ["--tp", "3"]] {
            let r = try Subprocess.run(bin, ["project"] + args, cwd: Subprocess.repoRoot)
            XCTAssertEqual(r.status, 2, "\(args): \(r.output)")
            XCTAssertTrue(r.stderr.hasPrefix("moe-train: error: project:"), "\(args): \(r.output)")
            XCTAssertFalse(r.stdout.contains("arithmetic"), "nothing is printed before the error")
        }
    }
}

extension ProjectionTests {
    /// `moe-train validate`: every shipped published run by default, a table and the JSON the
    /// issue names; a malformed file or an unwritable --json is bad input (2), nothing written.
    func testValidateCommand() throws {
        let bin = try Subprocess.binary
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.run(bin, ["validate", "--json", dir + "/v.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("15 runs: mean absolute error"), r.stdout)
        XCTAssertTrue(r.stdout.contains("korthikanti2022-t5-175b-full") && r.stdout.contains("narayanan2021-t1-1008b"), r.stdout)
        let v = try Subprocess.readJSON(dir + "/v.json")
        let rows = try XCTUnwrap(v["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 15)
        for row in rows {
            for key in ["name", "metric", "published", "predicted", "error"] { XCTAssertNotNil(row[key], "\(key) in \(row)") }
        }
        let errors = rows.compactMap { ($0["error"] as? Double).map(abs) }
        XCTAssertEqual(try XCTUnwrap(v["max_abs_error"] as? Double), errors.max() ?? -1, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(v["mean_abs_error"] as? Double), errors.reduce(0, +) / 15, accuracy: 1e-12)
        // One named file; then bad input.
        let one = try Subprocess.run(bin, ["validate", "configs/published/narayanan2021-t1-18.4b.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(one.status, 0, one.output)
        XCTAssertTrue(one.stdout.contains("1 runs: mean absolute error"), one.stdout)
        try "{\"name\": \"x\"}".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        let bad = try Subprocess.run(bin, ["validate", dir + "/bad.json", "--json", dir + "/out.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(bad.status, 2, bad.output)
        XCTAssertTrue(bad.stderr.contains(dir + "/bad.json") && bad.stderr.contains("missing key"), bad.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out.json"))
        let nowhere = try Subprocess.run(bin, ["validate", "--json", dir + "/no/such/dir/v.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(nowhere.status, 2, nowhere.output)
        XCTAssertTrue(nowhere.stderr.contains("--json"), nowhere.output)
    }
}

extension ProjectionTests {
    /// `project --config` takes a published run as well as the account: its own layout
    /// projected and its measured figure beside the prediction (the same figure `validate`
    /// reports); layout flags with it, and a --dp the account's GPUs cannot hold, are bad input.
    func testProjectPublishedRunAndLayoutChecks() throws {
        let bin = try Subprocess.binary
        let dir = try Subprocess.tempDir()
        let file = "configs/published/korthikanti2022-t5-175b-full.json"
        let r = try Subprocess.run(bin, ["project", "--config", file, "--json", dir + "/p.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("published run korthikanti2022-t5-175b-full"), r.stdout)
        XCTAssertTrue(r.stdout.contains("64 GPUs = TP8 x PP8 x DP1, ZeRO-0, dense, 64 micro-batches of 1 x 2048 tokens"), r.stdout)
        XCTAssertTrue(r.stdout.contains("iteration_time_s: published 18.13, predicted"), r.stdout)
        let p = try Subprocess.readJSON(dir + "/p.json")
        let v = try Subprocess.run(bin, ["validate", file, "--json", dir + "/v.json"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(v.status, 0, v.output)
        let row = try XCTUnwrap((try Subprocess.readJSON(dir + "/v.json")["rows"] as? [[String: Any]])?.first)
        XCTAssertEqual(try XCTUnwrap(p["predicted"] as? Double), try XCTUnwrap(row["predicted"] as? Double))
        XCTAssertEqual(try XCTUnwrap(p["step_time_s"] as? Double), try XCTUnwrap(p["predicted"] as? Double))
        let flags = try Subprocess.run(bin, ["project", "--config", file, "--tp", "4"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(flags.status, 2, flags.output)
        XCTAssertTrue(flags.stderr.contains("--tp apply to an account"), flags.output)
        let tooMany = try Subprocess.run(bin, ["project", "--tp", "8", "--pp", "15", "--dp", "1000"], cwd: Subprocess.repoRoot)
        XCTAssertEqual(tooMany.status, 2, tooMany.output)
        XCTAssertTrue(tooMany.stderr.contains("--tp 8 x --pp 15 x --dp 1000 needs more GPUs than the account's 25000"), tooMany.output)
    }
}
