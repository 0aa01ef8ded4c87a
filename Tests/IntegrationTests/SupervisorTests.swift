import Foundation
import XCTest
import TestSupport

/// `moe-train supervise` as a job manager: signals stop the whole job (exit 4), SIGKILL of
/// the supervisor leaves no rank behind, one job per run directory (exit 2 naming the
/// holder), distinct exit statuses (0, 2, 3, 4) and a retry policy by failure class.
final class SupervisorTests: XCTestCase {
    /// A supervised 2-rank job that runs until stopped, started in the background.
    struct Job {
        let process: Process
        let dir: String
        var run: String { dir + "/run" }
        var output: String { (try? String(contentsOfFile: dir + "/out.txt", encoding: .utf8)) ?? "" }
    }

    struct JobDidNotStart: Error, CustomStringConvertible {
        let output: String
        var description: String { "the supervised job did not start within 120 s: \(output)" }
    }

    /// `moe-train supervise ARGS` in the background from the checkout, its output (both
    /// streams) going to DIR/out.txt.
    func startSupervisor(_ args: [String], dir: String, nohup: Bool = false) throws -> Job {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: nohup ? "/usr/bin/nohup" : try Subprocess.binary)
        p.arguments = (nohup ? [try Subprocess.binary] : []) + ["supervise"] + args
        p.currentDirectoryURL = URL(fileURLWithPath: Subprocess.repoRoot)
        p.environment = Subprocess.mpiEnvironment
        _ = FileManager.default.createFile(atPath: dir + "/out.txt", contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out.txt"))
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return Job(process: p, dir: dir)
    }

    /// `nohup`: started through /usr/bin/nohup (SIGHUP ignored).
    func startLongJob(dir: String? = nil, nohup: Bool = false) throws -> Job {
        let dir = try dir ?? Subprocess.tempDir("moe-train-supervise")
        let job = try startSupervisor(["--np", "2", "--max-restarts", "0", "--summary-json", dir + "/job.json", "--",
                                       "--config", "configs/tiny.json", "--tp", "2", "--steps", "1000000", "--log-every", "1000000",
                                       "--checkpoint-dir", dir + "/run"], dir: dir, nohup: nohup)
        let p = job.process
        // Running for real: the ranks beat the heartbeat after every step.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: job.run + "/heartbeat") {
            guard Date() < deadline, p.isRunning else {
                p.terminate()
                throw JobDidNotStart(output: job.output)
            }
            usleep(100_000)
        }
        return job
    }

    /// Processes whose command line names `marker` (the job's unique directory): mpirun and ranks.
    func processes(naming marker: String) -> [String] {
        let me = getpid()
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init)
        return pids.filter { $0 != me }.compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
            let cmdline = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            guard cmdline.contains(marker) else { return nil }
            // A zombie has exited; only its parent's wait is missing.
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            if let close = stat.range(of: ")", options: .backwards), stat[close.upperBound...].hasPrefix(" Z") { return nil }
            return "\(pid): \(cmdline.prefix(160))"
        }
    }

    /// Waits until no process of the job is left; fails after `seconds`.
    func assertNothingLeft(_ job: Job, within seconds: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(seconds)
        var left = processes(naming: job.run)
        while !left.isEmpty && Date() < deadline {
            usleep(100_000)
            left = processes(naming: job.run)
        }
        XCTAssertEqual(left, [], "\(what): processes of the job still alive after \(seconds) s", file: file, line: line)
        // Never leave a stray job behind, whatever the assertion said.
        for entry in left { if let pid = Int32(entry.prefix { $0 != ":" }) { kill(pid, SIGKILL) } }
    }

    func wait(_ p: Process, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        return !p.isRunning
    }

    /// SIGTERM, SIGINT (Ctrl-C) and SIGHUP: the supervisor stops mpirun and every rank, writes
    /// its summary, and exits 4 naming the signal; nothing of the job is left after 10 s.
    func testSignalsStopTheWholeJobWithStatus4() throws {
        for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")] {
            let job = try startLongJob()
            kill(job.process.processIdentifier, sig)
            XCTAssertTrue(wait(job.process, seconds: 10), "\(name): the supervisor did not exit within 10 s")
            assertNothingLeft(job, within: 10, name)
            XCTAssertEqual(job.process.terminationReason, .exit, name)
            XCTAssertEqual(job.process.terminationStatus, 4, "\(name): \(job.output)")
            XCTAssertTrue(job.output.contains("moe-train: error: interrupted by \(name)"), job.output)
            let summary = try Subprocess.readJSON(job.dir + "/job.json")
            XCTAssertEqual(summary["exit_status"] as? Int, 4)
            XCTAssertEqual(summary["succeeded"] as? Bool, false)
            let events = try String(contentsOfFile: job.run + "/events.jsonl", encoding: .utf8)
            XCTAssertTrue(events.contains(#""event":"interrupted""#), events)
        }
    }

    /// Started under nohup, the supervisor keeps SIGHUP ignored (the job survives a closed
    /// terminal); SIGTERM still stops it.
    func testIgnoredSIGHUPStaysIgnored() throws {
        let job = try startLongJob(nohup: true)
        kill(job.process.processIdentifier, SIGHUP)
        usleep(1_500_000)
        XCTAssertTrue(job.process.isRunning, "SIGHUP stopped a supervisor started under nohup: \(job.output)")
        kill(job.process.processIdentifier, SIGTERM)
        XCTAssertTrue(wait(job.process, seconds: 10))
        assertNothingLeft(job, within: 10, "SIGTERM after an ignored SIGHUP")
        XCTAssertEqual(job.process.terminationStatus, 4, job.output)
    }

    /// SIGKILL gives the supervisor no chance to clean up: its ranks notice it is gone (their
    /// lifeline) and stop, and mpirun with them, within 10 s.
    func testSIGKILLOfTheSupervisorLeavesNoRank() throws {
        let job = try startLongJob()
        let supervisor = "\(job.process.processIdentifier):"
        XCTAssertFalse(processes(naming: job.run).filter { !$0.hasPrefix(supervisor) }.isEmpty, "mpirun and the ranks should be visible while the job runs")
        kill(job.process.processIdentifier, SIGKILL)
        XCTAssertTrue(wait(job.process, seconds: 10))
        assertNothingLeft(job, within: 10, "SIGKILL")
    }

    /// One job per run directory: a second supervisor is refused with exit 2 naming the holder;
    /// once the first has stopped the directory is free again, and a lock file left by a
    /// process that died is taken over with a message.
    func testSecondSupervisorOnALockedDirectoryIsRefused() throws {
        let job = try startLongJob()
        let bin = try Subprocess.binary
        let second = try Subprocess.run(bin, ["supervise", "--np", "1", "--", "--config", "configs/tiny.json", "--steps", "2",
                                              "--checkpoint-dir", job.run], cwd: Subprocess.repoRoot, timeout: 60)
        XCTAssertEqual(second.status, 2, second.output)
        XCTAssertTrue(second.stderr.contains("is in use by the supervisor pid \(job.process.processIdentifier)"), second.output)
        XCTAssertEqual(second.stderr.components(separatedBy: "moe-train: error:").count, 2, second.output)
        kill(job.process.processIdentifier, SIGTERM)
        XCTAssertTrue(wait(job.process, seconds: 10))
        assertNothingLeft(job, within: 10, "SIGTERM")
        // Released cleanly: the next job takes the directory without a word about the lock.
        let third = try Subprocess.run(bin, ["supervise", "--np", "1", "--", "--config", "configs/tiny.json", "--steps", "2",
                                             "--checkpoint-dir", job.run], cwd: Subprocess.repoRoot, timeout: 120)
        XCTAssertEqual(third.status, 0, third.output)
        XCTAssertFalse(third.output.contains("taking over"), third.output)
        // A lock file naming a process that no longer runs (pid 2^22 + 1 is above Linux's pid limit).
        try "\(ProcessInfo.processInfo.hostName) 4194305 12345\n".write(toFile: job.run + "/lock", atomically: true, encoding: .utf8)
        let fourth = try Subprocess.run(bin, ["supervise", "--np", "1", "--", "--config", "configs/tiny.json", "--steps", "2",
                                              "--checkpoint-dir", job.run], cwd: Subprocess.repoRoot, timeout: 120)
        XCTAssertEqual(fourth.status, 0, fourth.output)
        XCTAssertTrue(fourth.stdout.contains("taking over \(job.run)/lock from pid 4194305"), fourth.output)
    }

    func supervise(_ np: Int, _ flags: [String], maxRestarts: Int = 2) throws -> (Subprocess.Result, [String: Any]) {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.run(try Subprocess.binary, ["supervise", "--np", String(np), "--max-restarts", String(maxRestarts),
                                                           "--summary-json", dir + "/job.json", "--"] + flags + ["--checkpoint-dir", dir + "/run"],
                                   cwd: Subprocess.repoRoot, timeout: 300)
        return (r, try Subprocess.readJSON(dir + "/job.json"))
    }

    /// The error lines a result printed.
    func errors(_ r: Subprocess.Result) -> [String] { r.output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("moe-train: error:") } }

    /// Exit 3: the restarts are used up; the one message names the last failure.
    func testGivingUpExits3WithTheLastFailure() throws {
        let (r, job) = try supervise(2, ["--config", "configs/tiny.json", "--tp", "2", "--steps", "6", "--fail-at-step", "3",
                                         "--fail-rank", "1", "--fail-mode", "crash"], maxRestarts: 0)
        XCTAssertEqual(r.status, 3, r.output)
        XCTAssertEqual(errors(r).last, "moe-train: error: gave up after 0 restart(s) (--max-restarts 0): attempt 1: mpirun exited with status 137 (a rank died of SIGKILL)",
                       r.output)
        XCTAssertEqual(job["exit_status"] as? Int, 3)
        XCTAssertEqual(job["attempts"] as? Int, 1)
    }

    /// Exit 2 from an attempt (here: an explicit --resume that does not exist) is bad input:
    /// never retried, whatever --max-restarts allows.
    func testBadInputIsNotRetried() throws {
        let (r, job) = try supervise(1, ["--config", "configs/tiny.json", "--steps", "4", "--resume", "/nonexistent/step-000002"],
                                     maxRestarts: 3)
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertEqual(job["attempts"] as? Int, 1, "bad input must not be retried")
        let last = try XCTUnwrap(errors(r).last)
        XCTAssertTrue(last.contains("attempt 1 was refused as bad input") && last.contains("/nonexistent/step-000002"), r.output)
    }

    /// Out of disk space is not retried either: exit 3 at once, naming the file.
    func testOutOfSpaceIsNotRetried() throws {
        let (r, job) = try supervise(2, ["--config", "configs/tiny.json", "--tp", "2", "--steps", "6", "--checkpoint-every", "2",
                                         "--fail-at-step", "3", "--fail-rank", "1", "--fail-mode", "disk-full"], maxRestarts: 3)
        XCTAssertEqual(r.status, 3, r.output)
        XCTAssertEqual(job["attempts"] as? Int, 1, "no restart can make space")
        let last = try XCTUnwrap(errors(r).last)
        XCTAssertTrue(last.contains("ran out of disk space") && last.contains("rank-00001.safetensors: No space left on device"), r.output)
    }

    /// Training that goes non-finite (here a poisoned gradient with --max-skipped-steps 0) exits
    /// 6; the supervisor retries from the last checkpoint and the job ends exactly where an
    /// uninterrupted run ends.
    func testNonFiniteTrainingIsRetriedFromTheCheckpoint() throws {
        let flags = ["--config", "configs/tiny.json", "--tp", "2", "--steps", "12", "--checkpoint-every", "5", "--max-skipped-steps", "0"]
        let dir = try Subprocess.tempDir()
        let plain = try Subprocess.mpirun(np: 2, flags + ["--checkpoint-dir", dir + "/ref", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(plain.status, 0, plain.output)
        let reference = try Subprocess.readJSON(dir + "/s.json")
        // Unsupervised, the run stops with status 6 and says why.
        let alone = try Subprocess.mpirun(np: 2, flags + ["--fail-at-step", "7", "--fail-rank", "1", "--fail-mode", "nan",
                                                          "--checkpoint-dir", dir + "/alone"])
        XCTAssertEqual(alone.status, 6, alone.output)
        XCTAssertTrue(alone.stderr.contains("steps 7-7 had a non-finite loss or gradient norm"), alone.output)
        let (r, job) = try supervise(2, flags + ["--fail-at-step", "7", "--fail-rank", "1", "--fail-mode", "nan"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(job["attempts"] as? Int, 2)
        XCTAssertTrue((job["failures"] as? [String])?.first?.contains("status 6 (training went non-finite)") ?? false, "\(job)")
        XCTAssertEqual(job["param_checksum"] as? String, reference["param_checksum"] as? String)
        XCTAssertEqual(job["losses"] as? [Double], reference["losses"] as? [Double])
    }

    /// Elastic restart: 4 ranks (tp 2 x 2 replicas) lose one slot for good at step 10; the
    /// supervisor restarts on the largest world that fits, 2 ranks (one replica, the same
    /// global batch in more micro-batches), resharded from step 8, and finishes. Steps 1-8
    /// are the uninterrupted run's exactly; 9-16 equal it within float reduction order; the
    /// goodput counts the idle half of the allocation as reduced capacity.
    func testElasticRestartFinishesOnFewerReplicas() throws {
        let flags = ["--config", "configs/tiny.json", "--tp", "2", "--steps", "16", "--checkpoint-every", "4"]
        let dir = try Subprocess.tempDir()
        let plain = try Subprocess.mpirun(np: 4, flags + ["--checkpoint-dir", dir + "/ref", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(plain.status, 0, plain.output)
        let reference = try XCTUnwrap(try Subprocess.readJSON(dir + "/s.json")["losses"] as? [Double])
        // The same with memory checkpoints on two hosts of two ranks: the lost slot's host takes
        // its memory with it, and the two survivors reshard step 8 from the copies their host
        // kept of the lost host's shards.
        for (mode, extra) in [("sync", [String]()), ("memory", ["--checkpoint-mode", "memory", "--gpus-per-node", "2"])] {
            let r = try Subprocess.run(try Subprocess.binary, ["supervise", "--np", "4", "--min-np", "2", "--max-restarts", "2",
                                                               "--summary-json", dir + "/\(mode).json", "--"] + flags + extra
                                       + ["--fail-at-step", "10", "--fail-rank", "3", "--fail-mode", "lose-slot", "--checkpoint-dir", dir + "/" + mode],
                                       cwd: Subprocess.repoRoot, timeout: 300)
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.stdout.contains("3 of 4 slot(s) usable (1 slot(s) lost"), r.stdout)
            XCTAssertTrue(r.stdout.contains("the job runs on 2 rank(s)"), r.stdout)
            XCTAssertTrue(r.stdout.contains("resharded from 4 ranks: tp 2 pp 1 dp 2"), r.stdout)
            if mode == "memory" {
                XCTAssertTrue(r.stdout.contains("fault: rank 3's host loses its memory"), r.stdout)
                XCTAssertTrue(r.stdout.contains("resumed from host memory (") && r.stdout.contains("/host-000/step-000008): continuing after step 8"), r.stdout)
            }
            let job = try Subprocess.readJSON(dir + "/\(mode).json")
            XCTAssertEqual(job["attempts"] as? Int, 2)
            let losses = try XCTUnwrap(job["losses"] as? [Double])
            XCTAssertEqual(losses.count, 16)
            XCTAssertEqual(Array(losses.prefix(8)), Array(reference.prefix(8)))
            let worst = zip(losses, reference).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
            print(String(format: "elastic 4 -> 2 ranks (%@): worst relative loss difference %.2e", mode, worst))
            XCTAssertLessThan(worst, 1e-5)
            let emulated = try XCTUnwrap((job["goodput"] as? [String: Any])?["emulated_s"] as? [String: Double])
            XCTAssertGreaterThan(emulated["reduced_capacity"] ?? 0, 0)
            let events = try String(contentsOfFile: dir + "/\(mode)/events.jsonl", encoding: .utf8)
            XCTAssertTrue(events.contains(#""attempt":2,"event":"attempt_start","ranks":2"#), events)
        }
    }

    /// With --min-np above what is left, the job gives up (3) naming the capacity.
    func testElasticRestartBelowTheMinimumGivesUp() throws {
        let (r, job) = try supervise(2, ["--config", "configs/tiny.json", "--steps", "6", "--checkpoint-every", "2",
                                         "--fail-at-step", "3", "--fail-rank", "1", "--fail-mode", "lose-slot"], maxRestarts: 2)
        XCTAssertEqual(r.status, 0, "without --min-np a lost slot is a crash like any other: \(r.output)")
        XCTAssertTrue(r.stdout.contains("without --min-np the job runs on 2"), r.stdout)
        XCTAssertEqual(job["attempts"] as? Int, 2)
        let dir = try Subprocess.tempDir()
        let gaveUp = try Subprocess.run(try Subprocess.binary, ["supervise", "--np", "2", "--min-np", "2", "--max-restarts", "2", "--",
                                                                "--config", "configs/tiny.json", "--steps", "6", "--checkpoint-every", "2",
                                                                "--fail-at-step", "3", "--fail-rank", "1", "--fail-mode", "lose-slot",
                                                                "--checkpoint-dir", dir + "/run"], cwd: Subprocess.repoRoot, timeout: 300)
        XCTAssertEqual(gaveUp.status, 3, gaveUp.output)
        XCTAssertTrue(errors(gaveUp).last?.contains("only 1 of 2 slot(s) usable") ?? false, gaveUp.output)
        XCTAssertTrue(errors(gaveUp).last?.contains("no world from 1 down to --min-np 2") ?? false, gaveUp.output)
        // A global batch derived from the replicas (no --global-batch) would change on fewer
        // ranks: no smaller world qualifies, and the job gives up (3) instead of failing as bad input.
        let derived = try Subprocess.run(try Subprocess.binary, ["supervise", "--np", "4", "--min-np", "2", "--max-restarts", "2", "--",
                                                                 "--config", "configs/tiny.json", "--tp", "2", "--micro-batch-size", "4",
                                                                 "--micro-batches", "2", "--steps", "6", "--checkpoint-every", "2",
                                                                 "--fail-at-step", "3", "--fail-rank", "3", "--fail-mode", "lose-slot",
                                                                 "--checkpoint-dir", dir + "/derived"], cwd: Subprocess.repoRoot, timeout: 300)
        XCTAssertEqual(derived.status, 3, derived.output)
        XCTAssertTrue(errors(derived).last?.contains("no world from 3 down to --min-np 2 plans") ?? false, derived.output)
    }

    /// Capacity that returns is used at the next restart: the job starts on the 2 slots its
    /// hostfile lists, the hostfile grows to 4 while attempt 1 runs, attempt 1 hangs, and
    /// attempt 2 runs on all 4 ranks (two replicas), resharded, ending within float reduction
    /// order of the uninterrupted 4-rank run.
    func testElasticJobGrowsBackWhenTheHostfileGrows() throws {
        let flags = ["--config", "configs/tiny.json", "--tp", "2", "--steps", "16", "--checkpoint-every", "4"]
        let dir = try Subprocess.tempDir("moe-train-supervise")
        let plain = try Subprocess.mpirun(np: 4, flags + ["--checkpoint-dir", dir + "/ref", "--summary-json", dir + "/s.json"])
        XCTAssertEqual(plain.status, 0, plain.output)
        let reference = try XCTUnwrap(try Subprocess.readJSON(dir + "/s.json")["losses"] as? [Double])
        let hostfile = dir + "/hosts"
        try "localhost slots=2\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let job = try startSupervisor(["--np", "4", "--min-np", "2", "--hostfile", hostfile, "--max-restarts", "2", "--hang-timeout", "10",
                                       "--summary-json", dir + "/job.json", "--"] + flags
                                      + ["--fail-at-step", "6", "--fail-rank", "1", "--fail-mode", "hang", "--checkpoint-dir", dir + "/run"],
                                      dir: dir)
        let p = job.process
        // Attempt 1 is running (on 2 ranks): the capacity returns.
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: dir + "/run/heartbeat") && p.isRunning && Date() < deadline { usleep(50_000) }
        try "localhost slots=4\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        XCTAssertTrue(wait(p, seconds: 240), "the job did not finish")
        let output = job.output
        XCTAssertEqual(p.terminationStatus, 0, output)
        XCTAssertTrue(output.contains("2 of 4 slot(s) usable (\(hostfile) lists 2 slot(s))"), output)
        XCTAssertTrue(output.contains("resharded from 2 ranks: tp 2 pp 1 dp 1"), output)
        let events = try String(contentsOfFile: dir + "/run/events.jsonl", encoding: .utf8)
        XCTAssertTrue(events.contains(#""attempt":1,"event":"attempt_start","ranks":2"#), events)
        XCTAssertTrue(events.contains(#""attempt":2,"event":"attempt_start","ranks":4"#), events)
        let summary = try Subprocess.readJSON(dir + "/job.json")
        let losses = try XCTUnwrap(summary["losses"] as? [Double])
        XCTAssertEqual(losses.count, 16)
        let worst = zip(losses, reference).map { abs($0 - $1) / abs($1) }.max() ?? .infinity
        print(String(format: "elastic 2 -> 4 ranks: worst relative loss difference %.2e", worst))
        XCTAssertLessThan(worst, 1e-5)
        let emulated = try XCTUnwrap((summary["goodput"] as? [String: Any])?["emulated_s"] as? [String: Double])
        XCTAssertGreaterThan(emulated["reduced_capacity"] ?? 0, 0)
    }
}
