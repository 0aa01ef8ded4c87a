import Foundation
import XCTest
import TestSupport

/// Failures, sharded checkpoints and restarts under the supervisor (acceptance list of the
/// failures issue): the job ends where an uninterrupted run ends.
final class FaultToleranceTests: XCTestCase {
    static let layout = ["--config", "configs/tiny.json", "--tp", "2", "--pp", "2", "--steps", "24", "--checkpoint-every", "5"]

    /// The uninterrupted 4-rank run the supervised ones must reproduce.
    func reference() throws -> (checksum: String, losses: [Double]) {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 4, Self.layout + ["--checkpoint-dir", dir + "/run", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let s = try Subprocess.readJSON(dir + "/s.json")
        return (try XCTUnwrap(s["param_checksum"] as? String), try XCTUnwrap(s["losses"] as? [Double]))
    }

    func supervise(_ flags: [String], hangTimeout: Double = 60, maxRestarts: Int = 2) throws -> (Subprocess.Result, [String: Any], String) {
        let dir = try Subprocess.tempDir()
        let bin = try Subprocess.binary
        let r = try Subprocess.run(bin, ["supervise", "--np", "4", "--max-restarts", String(maxRestarts), "--hang-timeout", String(hangTimeout),
                                         "--summary-json", dir + "/job.json", "--"] + flags + ["--checkpoint-dir", dir + "/run"],
                                   cwd: Subprocess.repoRoot, timeout: 600)
        return (r, try Subprocess.readJSON(dir + "/job.json"), dir + "/run")
    }

    func events(_ run: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: run + "/events.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }

    /// Acceptance 1: crash at step 13 on rank 3; one failure, one restart from step 10, and the
    /// same parameters and per-step losses as the uninterrupted run.
    func testCrashRecovery() throws {
        let ref = try reference()
        let (r, job, run) = try supervise(Self.layout + ["--fail-at-step", "13", "--fail-rank", "3", "--fail-mode", "crash"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(job["param_checksum"] as? String, ref.checksum)
        XCTAssertEqual(job["losses"] as? [Double], ref.losses)
        XCTAssertEqual(job["restarts"] as? Int, 1)
        XCTAssertEqual(job["attempts"] as? Int, 2)
        let ev = events(run)
        XCTAssertEqual(ev.filter { $0["event"] as? String == "failure" }.count, 1)
        XCTAssertEqual(ev.filter { $0["event"] as? String == "restart" }.count, 1)
        XCTAssertEqual(ev.first { $0["event"] as? String == "checkpoint_loaded" }?["step"] as? Int, 10)
        // Goodput: the parts add up; the rolled-back steps 11 and 12 are lost work; one restart.
        let g = try XCTUnwrap(job["goodput"] as? [String: Any])
        let e = try XCTUnwrap(g["emulated_s"] as? [String: Double])
        let parts = ["useful_compute", "bubble_and_idle", "exposed_communication", "checkpoint_save", "lost_work", "restart"]
        XCTAssertEqual(parts.map { e[$0]! }.reduce(0, +), e["total"]!, accuracy: 0.01 * e["total"]!)
        XCTAssertEqual(g["lost_steps"] as? Int, 2)
        XCTAssertGreaterThan(e["lost_work"]!, 0)
        XCTAssertEqual(e["restart"]!, 2.0, accuracy: 1e-12)
        let w = try XCTUnwrap(g["wall_s"] as? [String: Double])
        XCTAssertEqual(w["surviving_steps"]! + w["lost_steps"]! + w["startup_detection_relaunch_load"]!, w["total"]!, accuracy: 0.01 * w["total"]!)
    }

    /// Acceptance 2: a crash while saving step 15 leaves it torn; it is detected and skipped,
    /// step 10 is used, and the result equals the uninterrupted run.
    func testCrashDuringCheckpoint() throws {
        let ref = try reference()
        let (r, job, run) = try supervise(Self.layout + ["--fail-at-step", "13", "--fail-rank", "1", "--fail-mode", "crash-during-checkpoint"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("step-000015 is incomplete"), r.stdout)
        XCTAssertEqual(events(run).first { $0["event"] as? String == "checkpoint_loaded" }?["step"] as? Int, 10)
        XCTAssertEqual(job["param_checksum"] as? String, ref.checksum)
        XCTAssertEqual(job["losses"] as? [Double], ref.losses)
        // The torn directory was kept aside, not overwritten.
        let names = try FileManager.default.contentsOfDirectory(atPath: run)
        XCTAssertTrue(names.contains { $0.hasPrefix("step-000015.stale-") }, "\(names)")
    }

    /// Acceptance 3: a hang is detected within the timeout (+5 s), the attempt is killed
    /// with nothing left running, and the job resumes and finishes.
    func testHangIsDetectedAndKilled() throws {
        let timeout = 6.0
        let (r, job, run) = try supervise(Self.layout + ["--fail-at-step", "8", "--fail-rank", "2", "--fail-mode", "hang"], hangTimeout: timeout)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(job["restarts"] as? Int, 1)
        let ev = events(run)
        let start = try XCTUnwrap(ev.first { $0["event"] as? String == "attempt_start" }?["time"] as? Double)
        let kill = try XCTUnwrap(ev.first { $0["event"] as? String == "kill" }?["time"] as? Double)
        let lastBeat = ev.filter { $0["event"] as? String == "checkpoint_saved" }.compactMap { $0["time"] as? Double }.first ?? start
        XCTAssertLessThan(kill - max(start, lastBeat), timeout + 5, "hang detected too late")
        // No process of the killed attempt survives: no rank runs with this run directory any more.
        let ps = try Subprocess.run("/usr/bin/pgrep", ["-f", run], timeout: 30)
        XCTAssertEqual(ps.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "", "orphans: \(ps.stdout)")
        XCTAssertEqual((job["losses"] as? [Double])?.count, 24)
    }

    /// Acceptance 4: a shard with one flipped byte is reported by name and skipped.
    func testCorruptShardIsSkipped() throws {
        let dir = try Subprocess.tempDir()
        let flags = Self.layout + ["--checkpoint-dir", dir + "/run"]
        XCTAssertEqual(try Subprocess.mpirun(np: 4, flags).status, 0)
        let shard = dir + "/run/step-000020/rank-00001.safetensors"
        var bytes = try XCTUnwrap(FileManager.default.contents(atPath: shard))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: shard))
        // Named explicitly, the corrupt checkpoint is an error (exit 2), not skipped.
        let explicit = try Subprocess.mpirun(np: 4, flags + ["--resume", dir + "/run/step-000020"])
        XCTAssertEqual(explicit.status, 2, explicit.output)
        XCTAssertTrue(explicit.stderr.contains("--resume \(dir)/run/step-000020: step-000020: shard rank-00001.safetensors is corrupt"),
                      explicit.output)
        XCTAssertFalse(explicit.output.contains("MPI_ABORT"), explicit.output)
        let (sizes20, sizes15) = (try shardSizes(dir + "/run/step-000020"), try shardSizes(dir + "/run/step-000015"))
        let again = try Subprocess.mpirun(np: 4, flags + ["--summary-json", dir + "/s.json"])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.stdout.contains("step-000020: shard rank-00001.safetensors is corrupt"), again.stdout)
        XCTAssertTrue(again.stdout.contains("resumed from \(dir)/run/step-000015"), again.stdout)
        let s = try Subprocess.readJSON(dir + "/s.json")
        XCTAssertEqual((s["losses"] as? [Double])?.count, 9)  // steps 16...24
        // Both candidates were hashed, each byte once in the job.
        let resume = try XCTUnwrap(s["resume"] as? [String: Any])
        XCTAssertEqual(resume["candidates_hashed"] as? Int, 2)
        XCTAssertEqual(resume["bytes_hashed_all_ranks"] as? Int, sizes20.reduce(0, +) + sizes15.reduce(0, +))
    }

    /// Sizes of the four shards of a checkpoint, as on disk.
    func shardSizes(_ checkpoint: String) throws -> [Int] {
        try (0..<4).map { rank in
            let attributes = try FileManager.default.attributesOfItem(atPath: checkpoint + String(format: "/rank-%05d.safetensors", rank))
            return try XCTUnwrap(attributes[.size] as? NSNumber).intValue
        }
    }

    /// Resuming a 4-rank checkpoint hashes each of its bytes once in the job (each rank its
    /// own shard), not once per rank: the ranks' bytes hashed add up to the shards' bytes.
    func testResumeHashesEachShardOnce() throws {
        let dir = try Subprocess.tempDir()
        let flags = Self.layout + ["--checkpoint-dir", dir + "/run"]
        let first = try Subprocess.mpirun(np: 4, flags + ["--summary-json", dir + "/first.json"])
        XCTAssertEqual(first.status, 0, first.output)
        let fresh = try XCTUnwrap(try Subprocess.readJSON(dir + "/first.json")["resume"] as? [String: Any])
        XCTAssertEqual(fresh["bytes_hashed_all_ranks"] as? Int, 0)
        let sizes = try shardSizes(dir + "/run/step-000020")
        let again = try Subprocess.mpirun(np: 4, flags + ["--summary-json", dir + "/s.json"])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.stdout.contains("resumed from \(dir)/run/step-000020"), again.stdout)
        let resume = try XCTUnwrap(try Subprocess.readJSON(dir + "/s.json")["resume"] as? [String: Any])
        XCTAssertEqual(resume["step"] as? Int, 20)
        XCTAssertEqual(resume["candidates_hashed"] as? Int, 1)
        XCTAssertEqual(resume["shard_bytes"] as? Int, sizes.reduce(0, +))
        XCTAssertEqual(resume["bytes_hashed_all_ranks"] as? Int, sizes.reduce(0, +), "not world x bytes")
        XCTAssertEqual(resume["bytes_hashed"] as? Int, sizes[0], "rank 0 hashes its own shard only")
    }

    /// Acceptance 5: a poisoned gradient never reaches the parameters: the step is skipped
    /// and training goes on with finite losses.
    func testNaNStepIsSkipped() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 2, ["--config", "configs/tiny.json", "--tp", "2", "--steps", "10", "--fail-at-step", "5",
                                              "--fail-rank", "1", "--fail-mode", "nan", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let s = try Subprocess.readJSON(dir + "/s.json")
        XCTAssertEqual(s["skipped_steps"] as? [Int], [5])
        let losses = try XCTUnwrap(s["losses"] as? [Double])
        XCTAssertEqual(losses.count, 10)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
        XCTAssertLessThan(losses.last!, losses.first!)
        XCTAssertTrue(r.stdout.contains("step 5 has a non-finite"), r.stdout)
    }

    /// Acceptance 6: without failures, no lost work and no restart time, and the parts add up.
    func testGoodputWithoutFailures() throws {
        let (r, job, _) = try supervise(Self.layout)
        XCTAssertEqual(r.status, 0, r.output)
        let g = try XCTUnwrap(job["goodput"] as? [String: Any])
        let e = try XCTUnwrap(g["emulated_s"] as? [String: Double])
        XCTAssertEqual(e["lost_work"], 0)
        XCTAssertEqual(e["restart"], 0)
        let parts = ["useful_compute", "bubble_and_idle", "exposed_communication", "checkpoint_save", "lost_work", "restart"]
        XCTAssertEqual(parts.map { e[$0]! }.reduce(0, +), e["total"]!, accuracy: 0.01 * e["total"]!)
        XCTAssertGreaterThan(e["checkpoint_save"]!, 0)
        XCTAssertGreaterThan(try XCTUnwrap(g["effective_utilization"] as? Double), 0)
        XCTAssertEqual(job["restarts"] as? Int, 0)
    }

    /// A checkpoint of another model (here: another width) stops the run, naming both config
    /// hashes (another layout of the same model is resharded: ReshardTests).
    func testResumeOfAnotherModelIsRefused() throws {
        let dir = try Subprocess.tempDir()
        let base = ["--config", "configs/tiny.json", "--steps", "6", "--checkpoint-every", "3", "--checkpoint-dir", dir + "/run"]
        XCTAssertEqual(try Subprocess.mpirun(np: 2, base + ["--tp", "2"]).status, 0)
        let r = try Subprocess.mpirun(np: 1, base + ["--d-model", "32"])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("another model, batch, optimizer, data or seed (d_model 64 in the checkpoint, 32 here)"), r.output)
    }

    /// export consolidates a sharded checkpoint into the single-rank layout: its checksum is
    /// the run's.
    func testExportMatchesTheRunsChecksum() throws {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 4, ["--config", "configs/tiny.json", "--tp", "2", "--ep", "4", "--steps", "6",
                                              "--checkpoint-every", "6", "--checkpoint-dir", dir + "/run", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let checksum = try XCTUnwrap(try Subprocess.readJSON(dir + "/s.json")["param_checksum"] as? String)
        let e = try Subprocess.run(try Subprocess.binary, ["export", "--checkpoint", dir + "/run", "--out", dir + "/m.safetensors"])
        XCTAssertEqual(e.status, 0, e.output)
        XCTAssertTrue(e.stdout.contains(checksum), e.output)
    }
}

extension FaultToleranceTests {
    /// --keep-checkpoints prunes only this run's own older checkpoints: never the one just
    /// written, never another run's (an earlier, longer run in the same directory).
    func testPruningKeepsOtherRunsAndTheNewCheckpoint() throws {
        let dir = try Subprocess.tempDir()
        let base = ["--config", "configs/tiny.json", "--checkpoint-dir", dir + "/run", "--checkpoint-every", "5"]
        XCTAssertEqual(try Subprocess.mpirun(np: 1, base + ["--steps", "10"]).status, 0)
        let r = try Subprocess.mpirun(np: 1, base + ["--steps", "15", "--resume", "never", "--keep-checkpoints", "1"])
        XCTAssertEqual(r.status, 0, r.output)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/run")
        XCTAssertTrue(names.contains("step-000015"), "\(names)")       // the new one
        XCTAssertTrue(names.contains { $0.hasPrefix("step-000010.stale-") }, "\(names)")  // the other run's, moved aside
        XCTAssertTrue(names.contains { $0.hasPrefix("step-000005.stale-") }, "\(names)")
        XCTAssertFalse(names.contains("step-000005"), "this run's older checkpoint is pruned: \(names)")
    }

    /// A plain run (no --checkpoint-every, no --checkpoint-dir) neither resumes nor writes.
    func testPlainRunLeavesTheRunDirectoryAlone() throws {
        let dir = try Subprocess.tempDir()
        let s = dir + "/s.json"
        XCTAssertEqual(try Subprocess.mpirun(np: 1, ["--config", "configs/tiny.json", "--steps", "3", "--seed", "18446744073709551615",
                                                     "--summary-json", s]).status, 0)
        XCTAssertEqual((try Subprocess.readJSON(s)["losses"] as? [Double])?.count, 3)
    }

    /// --checkpoint-mode async: the step pays the snapshot to host memory, not the write to
    /// storage; a crash before the shards are durable (here at step 11, while step 10's
    /// checkpoint is still being persisted at 1e8 bytes/s) loses that checkpoint, so the job
    /// resumes from step 5 where sync resumes from 10. --checkpoint-mode memory keeps step 10
    /// in the hosts' memory (two hosts of two ranks, each shard copied to the other host) from
    /// the moment the copy is made, so it resumes from step 10 without waiting for storage, and
    /// loads it at host speed. All end with the uninterrupted run's checksum; goodput shows the
    /// trade: less checkpoint time, more lost work for async, neither for memory.
    func testAsyncCheckpointsCostLessAndAreLostBeforeTheyAreDurable() throws {
        let ref = try reference()
        var jobs: [String: [String: Any]] = [:]
        for mode in ["sync", "async", "memory"] {
            let (r, job, _) = try supervise(Self.layout + ["--checkpoint-mode", mode, "--checkpoint-bandwidth", "1e8", "--gpus-per-node", "2",
                                                           "--fail-at-step", "11", "--fail-rank", "3", "--fail-mode", "crash"])
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertEqual(job["param_checksum"] as? String, ref.checksum, mode)
            XCTAssertEqual(job["losses"] as? [Double], ref.losses, mode)
            let resumed = ["sync": "/step-000010: continuing after step 10", "async": "/step-000005: continuing after step 5",
                           "memory": "/step-000010): continuing after step 10"][mode]!
            XCTAssertTrue(r.stdout.contains(resumed), "\(mode): \(r.stdout)")
            if mode == "memory" {
                XCTAssertTrue(r.stdout.contains("resumed from host memory ("), r.stdout)
                // The job is over: its hosts' memory is released.
                let root = try XCTUnwrap(r.stdout.components(separatedBy: "host memory in ").dropFirst().first?.components(separatedBy: ",").first)
                XCTAssertFalse(FileManager.default.fileExists(atPath: root), root)
            }
            jobs[mode] = job
        }
        func goodput(_ mode: String, _ key: String) throws -> Double {
            try XCTUnwrap(((jobs[mode]?["goodput"] as? [String: Any])?["emulated_s"] as? [String: Double])?[key])
        }
        XCTAssertLessThan(try goodput("async", "checkpoint_save"), try goodput("sync", "checkpoint_save") / 10)
        XCTAssertGreaterThan(try goodput("async", "lost_work"), try goodput("sync", "lost_work"))
        XCTAssertEqual((jobs["async"]?["goodput"] as? [String: Any])?["lost_steps"] as? Int, 5)
        XCTAssertLessThan(try goodput("memory", "checkpoint_save"), try goodput("sync", "checkpoint_save") / 10)
        XCTAssertEqual(try goodput("memory", "lost_work"), try goodput("sync", "lost_work"))
        XCTAssertEqual((jobs["memory"]?["goodput"] as? [String: Any])?["lost_steps"] as? Int, 0)
        // Loads: storage at 1e8 bytes/s for sync and async, host memory at 25 GB/s.
        XCTAssertGreaterThan(try goodput("sync", "checkpoint_load"), 0)
        XCTAssertEqual(try goodput("memory", "checkpoint_load") / goodput("sync", "checkpoint_load"), 1e8 / 25e9, accuracy: 1e-6)
    }

    /// --checkpoint-mode memory on two hosts of one rank: after a process crash each rank
    /// loads its own host's copy; a host that is lost (`lose-slot`) takes its memory with it,
    /// and its rank's shard comes from the copy on the other host, over the inter-node link
    /// (slower by the link's latency at least); when both hosts' memory is gone (deleted here
    /// by the test) the job falls back to storage. Each continuation equals the uninterrupted
    /// run, and a finished run (no supervisor) releases its hosts' memory itself.
    func testLostHostRestoresFromItsPeerAndBothLostFallBackToStorage() throws {
        let flags = ["--config", "configs/tiny.json", "--pp", "2", "--gpus-per-node", "1", "--steps", "16", "--checkpoint-every", "5",
                     "--checkpoint-mode", "memory"]
        let ref = try Subprocess.tempDir()
        XCTAssertEqual(try Subprocess.mpirun(np: 2, flags + ["--checkpoint-dir", ref + "/run", "--summary-json", ref + "/s.json"],
                                             environment: ["MOE_TRAIN_HOST_MEMORY": ref + "/memory"]).status, 0)
        let reference = try Subprocess.readJSON(ref + "/s.json")
        let referenceLosses = try XCTUnwrap(reference["losses"] as? [Double])
        var loads: [String: Double] = [:]
        for (label, fault, lost) in [("crash", "crash", [String]()), ("lost host", "lose-slot", ["host-001"]),
                                     ("both lost", "crash", ["host-000", "host-001"])] {
            let dir = try Subprocess.tempDir()
            let env = ["MOE_TRAIN_HOST_MEMORY": dir + "/memory"]
            let base = flags + ["--checkpoint-dir", dir + "/run"]
            let first = try Subprocess.mpirun(np: 2, base + ["--fail-at-step", "12", "--fail-rank", "1", "--fail-mode", fault], environment: env)
            XCTAssertNotEqual(first.status, 0, first.output)
            let roots = try FileManager.default.contentsOfDirectory(atPath: dir + "/memory")
            XCTAssertEqual(roots.count, 1, "\(roots)")
            let root = dir + "/memory/" + roots[0]
            if label == "both lost" {
                for host in lost { try FileManager.default.removeItem(atPath: root + "/" + host) }
            }
            for host in ["host-000", "host-001"] {
                XCTAssertEqual(FileManager.default.fileExists(atPath: root + "/" + host), !lost.contains(host), "\(label): \(host)")
            }
            let second = try Subprocess.mpirun(np: 2, base + ["--attempt", "2", "--summary-json", dir + "/s.json"], environment: env)
            XCTAssertEqual(second.status, 0, second.output)
            let summary = try Subprocess.readJSON(dir + "/s.json")
            let resume = try XCTUnwrap(summary["resume"] as? [String: Any])
            XCTAssertEqual(resume["step"] as? Int, 10, label)
            XCTAssertEqual(resume["source"] as? String, label == "both lost" ? "storage" : "host memory", label)
            if label != "both lost" {
                XCTAssertEqual(resume["checkpoint"] as? String, root + "/host-000/step-000010", label)
            }
            loads[label] = try XCTUnwrap(resume["load_seconds"] as? Double)
            XCTAssertEqual(summary["param_checksum"] as? String, reference["param_checksum"] as? String, label)
            XCTAssertEqual(summary["losses"] as? [Double], Array(referenceLosses.suffix(6)), label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: root), "a finished run releases its hosts' memory")
        }
        // Own host at 25 GB/s; the lost host's shard over the link (8 us + 25 GB/s); storage at 2 GB/s.
        let local = try XCTUnwrap(loads["crash"]), peer = try XCTUnwrap(loads["lost host"]), storage = try XCTUnwrap(loads["both lost"])
        XCTAssertEqual(peer, local + 8e-6, accuracy: 1e-9)
        XCTAssertEqual(storage / local, 25e9 / 2e9, accuracy: 1e-6)
    }
}
