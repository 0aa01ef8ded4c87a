import Foundation
import XCTest
import TestSupport

/// Resharding on resume: a checkpoint written under one layout continues under another.
/// For each pair, a run of layout A writes a checkpoint at step 4 and goes on to step 8;
/// layout B resumes from that checkpoint. B's parameters right after loading are exactly the
/// checkpoint's, as `export` consolidates it into the single-rank layout (same checksum), and
/// B's steps 5-8 equal A's own steps 5-8 within float reduction order (which also checks
/// the Adam moments and step counts B re-sliced: wrong ones would change the updates).
final class ReshardTests: XCTestCase {
    static let base = ["--config", "configs/tiny.json", "--layers", "4"]

    struct Layout {
        let np: Int
        let flags: [String]
        var text: String { "-np \(np) " + (flags.isEmpty ? "(one rank)" : flags.joined(separator: " ")) }
    }

    func summary(_ np: Int, _ flags: [String], _ file: String) throws -> [String: Any] {
        let r = try Subprocess.mpirun(np: np, Self.base + flags + ["--summary-json", file])
        XCTAssertEqual(r.status, 0, r.output)
        return try Subprocess.readJSON(file)
    }

    func check(from a: Layout, to b: Layout, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Subprocess.tempDir()
        let run = dir + "/run"
        let written = try summary(a.np, a.flags + ["--steps", "8", "--checkpoint-every", "4", "--checkpoint-dir", run], dir + "/a.json")
        let reference = try XCTUnwrap(written["losses"] as? [Double])
        try FileManager.default.removeItem(atPath: run + "/step-000008")
        // The checkpoint in the single-rank layout, consolidated by export.
        let export = try Subprocess.run(try Subprocess.binary, ["export", "--checkpoint", run + "/step-000004", "--out", dir + "/m.safetensors"])
        XCTAssertEqual(export.status, 0, export.output, file: file, line: line)
        let exported = try XCTUnwrap(export.stdout.range(of: "param checksum ").map { String(export.stdout[$0.upperBound...].prefix(64)) })
        // B continues; as loaded (before its first step) it holds the very parameters of the checkpoint.
        let r = try Subprocess.mpirun(np: b.np, Self.base + b.flags + ["--steps", "8", "--checkpoint-dir", run, "--summary-json", dir + "/b.json"])
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        XCTAssertTrue(r.stdout.contains("resharded from"), "\(a.text) -> \(b.text): \(r.stdout)", file: file, line: line)
        let continued = try Subprocess.readJSON(dir + "/b.json")
        let resume = try XCTUnwrap(continued["resume"] as? [String: Any], file: file, line: line)
        XCTAssertEqual(resume["step"] as? Int, 4, file: file, line: line)
        XCTAssertEqual(resume["loaded_param_checksum"] as? String, exported,
                       "\(a.text) -> \(b.text): the resharded parameters differ from the checkpoint's", file: file, line: line)
        // Steps 5-8 as A's own.
        let losses = try XCTUnwrap(continued["losses"] as? [Double])
        XCTAssertEqual(losses.count, 4, file: file, line: line)
        let worst = zip(losses, reference.suffix(4)).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
        print(String(format: "%@ -> %@: worst relative loss difference over steps 5-8 %.2e", a.text, b.text, worst))
        XCTAssertLessThan(worst, 1e-5, "\(a.text) -> \(b.text)", file: file, line: line)
    }

    func testTensorAndPipelineToDataAndExpertParallel() throws {
        try check(from: Layout(np: 4, flags: ["--tp", "2", "--pp", "2"]), to: Layout(np: 2, flags: ["--ep", "2"]))
    }

    func testFourExpertRanksToOne() throws {
        try check(from: Layout(np: 4, flags: ["--ep", "4"]), to: Layout(np: 1, flags: []))
    }

    func testFourStagesToTwoWithAnotherSplit() throws {
        try check(from: Layout(np: 4, flags: ["--pp", "4"]), to: Layout(np: 2, flags: ["--pp", "2", "--pp-layers", "1,3"]))
    }

    func testZeroOneOverFourReplicasToTwo() throws {
        try check(from: Layout(np: 4, flags: ["--zero", "1"]), to: Layout(np: 2, flags: ["--zero", "1"]))
    }

    /// EP = 1 <-> EP > 1 with ZeRO-1 optimizer state, both ways.
    func testExpertParallelWithZeroOneStateBothWays() throws {
        try check(from: Layout(np: 2, flags: ["--zero", "1"]), to: Layout(np: 2, flags: ["--zero", "1", "--ep", "2"]))
        try check(from: Layout(np: 4, flags: ["--zero", "1", "--ep", "2"]), to: Layout(np: 2, flags: ["--zero", "1"]))
    }

    func testInterleavedStagesToTensorParallel() throws {
        try check(from: Layout(np: 2, flags: ["--pp", "2", "--schedule", "interleaved", "--virtual-stages", "2"]),
                  to: Layout(np: 2, flags: ["--tp", "2"]))
    }

    /// ZeRO-2 ranks save what ZeRO-1 ranks save (the parameters of their stage and the Adam
    /// state of their shard): its checkpoints reshard to ZeRO-1 and back.
    func testZeroTwoToZeroOneAndBack() throws {
        try check(from: Layout(np: 4, flags: ["--zero", "2", "--pp", "2"]), to: Layout(np: 2, flags: ["--zero", "1"]))
        try check(from: Layout(np: 2, flags: ["--zero", "1"]), to: Layout(np: 4, flags: ["--zero", "2", "--tp", "2"]))
    }

    /// ZeRO-3 ranks save their shard of the parameters: another layout reads each element
    /// from the shard that holds it (and `export` consolidates them).
    func testZeroThreeToZeroOneAndBack() throws {
        try check(from: Layout(np: 4, flags: ["--zero", "3", "--tp", "2"]), to: Layout(np: 2, flags: ["--zero", "1"]))
        try check(from: Layout(np: 2, flags: ["--zero", "1", "--pp", "2"]), to: Layout(np: 4, flags: ["--zero", "3"]))
    }

    /// Hybrid sharding: ZeRO's state over groups of data-parallel ranks, replicated across them.
    func testHybridShardingToZeroOneAndBack() throws {
        try check(from: Layout(np: 4, flags: ["--zero", "3", "--zero-group", "2"]), to: Layout(np: 2, flags: ["--zero", "1"]))
        try check(from: Layout(np: 2, flags: ["--zero", "1"]), to: Layout(np: 4, flags: ["--zero", "2", "--zero-group", "2"]))
    }

    /// The same layout resumes bit for bit: a ZeRO-3 run with asynchronous checkpoints and the
    /// prefetch, stopped after step 4's checkpoint, ends where the uninterrupted run ends.
    func testZeroThreeResumesToTheSameBits() throws {
        let dir = try Subprocess.tempDir()
        let run = dir + "/run"
        let flags = ["--zero", "3", "--overlap-param-gather", "--steps", "8", "--checkpoint-dir", run]
        let whole = try summary(2, flags + ["--checkpoint-every", "4", "--checkpoint-mode", "async"], dir + "/a.json")
        try FileManager.default.removeItem(atPath: run + "/step-000008")
        let resumed = try summary(2, flags, dir + "/b.json")
        XCTAssertEqual((resumed["resume"] as? [String: Any])?["step"] as? Int, 4)
        XCTAssertEqual(resumed["param_checksum"] as? String, whole["param_checksum"] as? String)
        XCTAssertEqual(resumed["losses"] as? [Double], (whole["losses"] as? [Double]).map { Array($0.suffix(4)) })
    }

    func testZeroZeroToZeroOneWithTensorParallel() throws {
        try check(from: Layout(np: 2, flags: ["--zero", "0"]), to: Layout(np: 4, flags: ["--zero", "1", "--tp", "2"]))
    }

    /// A global batch derived from the layout (micro-batches x size x replicas) that comes out
    /// different would continue another data stream: refused, naming both and the fix.
    func testAnotherDerivedGlobalBatchIsRefused() throws {
        let dir = try Subprocess.tempDir()
        let run = dir + "/run"
        let batch = ["--micro-batch-size", "4", "--micro-batches", "2"]
        let first = try Subprocess.mpirun(np: 2, Self.base + batch + ["--steps", "8", "--checkpoint-every", "4", "--checkpoint-dir", run])
        XCTAssertEqual(first.status, 0, first.output)
        try FileManager.default.removeItem(atPath: run + "/step-000008")
        let r = try Subprocess.mpirun(np: 1, Self.base + batch + ["--steps", "8", "--checkpoint-dir", run])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("a global batch of 16 sequences") && r.stderr.contains("this run's is 8")
                      && r.stderr.contains("pass --global-batch 16"), r.output)
    }
}
