import Foundation
import XCTest
import Formats
import TestSupport

/// Damaged checkpoints that hashing alone cannot catch are refused by name, and the whole job
/// falls back to the next older checkpoint and ends exactly where the uninterrupted run ends.
final class CheckpointIntegrityTests: XCTestCase {
    static let layout = ["--config", "configs/tiny.json", "--tp", "2", "--pp", "2", "--steps", "24", "--checkpoint-every", "5"]

    /// A finished 4-rank run (checkpoints at steps 5, 10, 15, 20) and its result.
    func finishedRun() throws -> (run: String, checksum: String, losses: [Double]) {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 4, Self.layout + ["--checkpoint-dir", dir + "/run", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let s = try Subprocess.readJSON(dir + "/s.json")
        return (dir + "/run", try XCTUnwrap(s["param_checksum"] as? String), try XCTUnwrap(s["losses"] as? [Double]))
    }

    /// The same command again: it resumes from the newest checkpoint it can load and runs to step 24.
    func rerun(_ run: String) throws -> (Subprocess.Result, [String: Any]) {
        let summary = run + "/../again.json"
        let r = try Subprocess.mpirun(np: 4, Self.layout + ["--checkpoint-dir", run, "--summary-json", summary])
        XCTAssertEqual(r.status, 0, r.output)
        return (r, try Subprocess.readJSON(summary))
    }

    /// A shard's bytes and the length of its JSON header (the 8-byte little-endian prefix).
    func shard(_ checkpoint: String, _ file: String) throws -> (bytes: [UInt8], headerLength: Int) {
        let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: checkpoint + "/" + file)))
        return (bytes, bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) })
    }

    /// Rewrites a checkpoint's manifest entry for `file` to the file's present size and SHA-256,
    /// as a tool that "repairs" checksums would: hashing then passes.
    func rehash(_ checkpoint: String, _ file: String) throws {
        let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: checkpoint + "/" + file)))
        var manifest = try Subprocess.readJSON(checkpoint + "/manifest.json")
        var shards = try XCTUnwrap(manifest["shards"] as? [[String: Any]])
        let i = try XCTUnwrap(shards.firstIndex { $0["file"] as? String == file })
        shards[i]["sha256"] = SHA256Hex.of(bytes)
        shards[i]["bytes"] = bytes.count
        manifest["shards"] = shards
        try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: checkpoint + "/manifest.json"))
    }

    /// Puts `bytes` in place of a shard and re-hashes the manifest to them: the damage passes
    /// the checksum, and only loading can refuse it.
    func replace(_ checkpoint: String, _ file: String, with bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: checkpoint + "/" + file))
        try rehash(checkpoint, file)
    }

    /// The same command again refuses step 20 saying `message`, and the whole job falls back to step 15.
    func assertRefusedAndFellBack(_ ref: (run: String, checksum: String, losses: [Double]), saying message: String,
                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let (r, s) = try rerun(ref.run)
        XCTAssertTrue(r.stdout.contains(message), r.stdout, file: file, line: line)
        assertFellBack(to: 15, r, s, ref, file: file, line: line)
    }

    func assertFellBack(to step: Int, _ r: Subprocess.Result, _ s: [String: Any], _ ref: (run: String, checksum: String, losses: [Double]),
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(r.stdout.contains("resumed from \(ref.run)/step-\(String(format: "%06d", step))"), r.stdout, file: file, line: line)
        XCTAssertEqual((s["resume"] as? [String: Any])?["step"] as? Int, step, file: file, line: line)
        XCTAssertEqual(s["param_checksum"] as? String, ref.checksum, "the fallen-back run must end where the uninterrupted one did", file: file, line: line)
        XCTAssertEqual(s["losses"] as? [Double], Array(ref.losses.suffix(24 - step)), file: file, line: line)
    }

    /// `step-000020` holding step 15's manifest (a renamed directory) is refused, not resumed
    /// "after step 20".
    func testManifestOfAnotherStepIsRefused() throws {
        let ref = try finishedRun()
        try FileManager.default.removeItem(atPath: ref.run + "/step-000020")
        try FileManager.default.copyItem(atPath: ref.run + "/step-000015", toPath: ref.run + "/step-000020")
        try assertRefusedAndFellBack(ref, saying: "step-000020/manifest.json is step 15's, not step 20's")
    }

    /// A shard holding a NaN whose manifest was re-hashed passes the checksum; loading refuses
    /// it, and every rank falls back together (three of the four loaded their shards fine).
    func testNonFiniteShardIsRefused() throws {
        let ref = try finishedRun()
        let checkpoint = ref.run + "/step-000020", file = "rank-00002.safetensors"
        var (bytes, headerLength) = try shard(checkpoint, file)
        // The parameters are the first tensor: element 3 becomes NaN.
        let at = 8 + headerLength + 3 * 4
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for (k, b) in $0.enumerated() { bytes[at + k] = b } }
        try replace(checkpoint, file, with: bytes)
        try assertRefusedAndFellBack(ref, saying: "rank 2: step-000020/rank-00002.safetensors: the parameter shard holds a non-finite value (nan at element 3)")
    }

    /// A shard whose header is broken but whose manifest was re-hashed: one rank cannot read
    /// it, and the whole job falls back instead of that rank stopping the job.
    func testUnreadableShardHeaderFallsBackForTheWholeJob() throws {
        let ref = try finishedRun()
        let checkpoint = ref.run + "/step-000020", file = "rank-00001.safetensors"
        var bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: checkpoint + "/" + file)))
        XCTAssertEqual(bytes[8], UInt8(ascii: "{"))
        bytes[8] = UInt8(ascii: "X")
        try replace(checkpoint, file, with: bytes)
        try assertRefusedAndFellBack(ref, saying: "rank 1: step-000020/rank-00001.safetensors: is not a readable safetensors file")
    }

    /// Rank 0's shard copied over rank 1's (the same shape under --tp 2) and re-hashed: the
    /// header names another rank, so the whole job falls back.
    func testShardOfAnotherRankIsRefused() throws {
        let ref = try finishedRun()
        let checkpoint = ref.run + "/step-000020"
        try FileManager.default.removeItem(atPath: checkpoint + "/rank-00001.safetensors")
        try FileManager.default.copyItem(atPath: checkpoint + "/rank-00000.safetensors", toPath: checkpoint + "/rank-00001.safetensors")
        try rehash(checkpoint, "rank-00001.safetensors")
        try assertRefusedAndFellBack(ref, saying: "rank 1: step-000020/rank-00001.safetensors: its header says rank 0")
    }

    /// Resharding reads optimizer ranges from shard headers: a crafted one (a range starting
    /// at -2^63 + 1, re-hashed into the manifest) is refused by name and the job falls back,
    /// never trapping on the arithmetic.
    func testCraftedOptimizerRangeIsRefusedWhenResharding() throws {
        let ref = try finishedRun()
        let checkpoint = ref.run + "/step-000020", file = "rank-00002.safetensors"
        let (bytes, headerLength) = try shard(checkpoint, file)
        var header = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        var meta = try XCTUnwrap(header["__metadata__"] as? [String: String])
        meta["adam.0.range"] = "-9223372036854775807..<10"
        header["__metadata__"] = meta
        let text = [UInt8](try JSONSerialization.data(withJSONObject: header))
        var out = (0..<8).map { UInt8(truncatingIfNeeded: text.count >> (8 * $0)) } + text
        out += bytes[(8 + headerLength)...]
        try replace(checkpoint, file, with: out)
        let summary = ref.run + "/../resharded.json"
        let r = try Subprocess.mpirun(np: 2, ["--config", "configs/tiny.json", "--tp", "2", "--steps", "24", "--checkpoint-every", "5",
                                              "--checkpoint-dir", ref.run, "--summary-json", summary])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("step-000020: rank-00002.safetensors: optimizer shard 0 (-9223372036854775807..<10) does not fit the writer's layout"),
                      r.stdout)
        XCTAssertTrue(r.stdout.contains("resumed from \(ref.run)/step-000015"), r.stdout)
        XCTAssertEqual((try Subprocess.readJSON(summary)["resume"] as? [String: Any])?["step"] as? Int, 15)
    }

    /// `latest` is only a hint: a directory in its place never stops a save.
    func testLatestThatIsADirectoryDoesNotStopSaves() throws {
        let dir = try Subprocess.tempDir()
        try FileManager.default.createDirectory(atPath: dir + "/run/latest", withIntermediateDirectories: true)
        let r = try Subprocess.mpirun(np: 2, ["--config", "configs/tiny.json", "--tp", "2", "--steps", "6", "--checkpoint-every", "3",
                                              "--checkpoint-dir", dir + "/run"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("latest is only a hint, step-000006 is saved"), r.stdout)
        for step in ["step-000003", "step-000006"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/run/\(step)/manifest.json"), step)
        }
    }
}
