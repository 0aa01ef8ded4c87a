import Foundation
import XCTest
import TestSupport

/// `make install PREFIX=P`, then the README's literal commands through PATH from a directory
/// with no configs/: the installed binary finds itself through /proc/self/exe and its configs
/// and device profiles in P/share/moe-train.
final class InstallTests: XCTestCase {
    /// `make install PREFIX=<fresh dir> BIN=<the release binary under test>` (BIN given: no rebuild).
    func install() throws -> String {
        let bin = try Subprocess.binary
        let prefix = try Subprocess.tempDir("moe-train-prefix")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: prefix) }
        let r = try Subprocess.run("/usr/bin/env", ["make", "-C", Subprocess.repoRoot, "install", "PREFIX=" + prefix, "BIN=" + bin], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        for file in ["bin/moe-train", "share/moe-train/default.json", "share/moe-train/tiny.json", "share/moe-train/gpt4-account.json",
                     "share/moe-train/devices/a100-40gb.json", "share/moe-train/devices/a100-80gb.json", "share/moe-train/devices/h100-sxm.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: prefix + "/" + file), "make install did not install \(file)")
        }
        return URL(fileURLWithPath: prefix).resolvingSymlinksInPath().path
    }

    /// An empty working directory and an environment with PREFIX/bin first on PATH, the mpirun
    /// settings of launch/env.sh and no MOE_TRAIN_CONFIGS.
    func emptyDirectory(prefix: String) throws -> (cwd: String, env: [String: String]) {
        let cwd = URL(fileURLWithPath: try Subprocess.tempDir("moe-train-cwd")).resolvingSymlinksInPath().path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: cwd) }
        var env = Subprocess.mpiEnvironment
        env["MOE_TRAIN_CONFIGS"] = nil
        env["MOE_TRAIN_BIN"] = nil
        env["PATH"] = prefix + "/bin:" + (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        XCTAssertNil(env["MOE_TRAIN_CONFIGS"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cwd), [])
        return (cwd, env)
    }

    /// `command args` resolved through PATH (by /usr/bin/env), in `cwd`.
    func shell(_ command: [String], cwd: String, env: [String: String], timeout: Double = 600) throws -> Subprocess.Result {
        try Subprocess.run("/usr/bin/env", command, cwd: cwd, timeout: timeout, environment: env)
    }

    /// Acceptance: the headline training run, `project` and `supervise`, all through PATH.
    func testInstalledCommandsWorkFromAnEmptyDirectory() throws {
        let prefix = try install()
        let (cwd, env) = try emptyDirectory(prefix: prefix)
        let which = try shell(["sh", "-c", "command -v moe-train"], cwd: cwd, env: env)
        XCTAssertEqual(which.stdout.trimmingCharacters(in: .whitespacesAndNewlines), prefix + "/bin/moe-train", which.output)

        // README: mpirun -np 16 moe-train --tp 4 --pp 4 (2 steps); default.json from PREFIX/share/moe-train.
        let train = try shell(["mpirun", "-np", "16", "moe-train", "--tp", "4", "--pp", "4", "--steps", "2"], cwd: cwd, env: env)
        XCTAssertEqual(train.status, 0, train.output)
        XCTAssertTrue(train.stdout.contains("executed: 8 layers, d_model 128"), train.output)  // default.json
        XCTAssertTrue(train.stdout.contains("timed as: 8 layers, d_model 4096"), train.output)
        XCTAssertTrue(train.stdout.contains("done: 2 steps"), train.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cwd), [], "a plain run writes nothing to its directory")

        // README: moe-train project; the account and its device profiles from PREFIX/share/moe-train.
        let project = try shell(["moe-train", "project"], cwd: cwd, env: env, timeout: 300)
        XCTAssertEqual(project.status, 0, project.output)
        XCTAssertTrue(project.stdout.contains("the account's arithmetic, recomputed"), project.output)
        XCTAssertTrue(project.stdout.contains("1.83e+12"), project.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cwd), [])

        // supervise starts this very binary again (found through /proc/self/exe, not argv[0]).
        let tiny = prefix + "/share/moe-train/tiny.json"
        let supervise = try shell(["moe-train", "supervise", "--np", "2", "--max-restarts", "0", "--", "--config", tiny, "--steps", "2"],
                                  cwd: cwd, env: env)
        XCTAssertEqual(supervise.status, 0, supervise.output)
        XCTAssertTrue(supervise.stdout.contains("supervise: attempt 1: mpirun"), supervise.output)
        XCTAssertTrue(supervise.stdout.contains(" " + prefix + "/bin/moe-train --config"), supervise.output)
        // The only thing written is the documented run directory, checkpoints/<config name>.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cwd), ["checkpoints"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cwd + "/checkpoints"), ["tiny"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: cwd + "/configs"))
    }

    /// Without the installed account, `project` names every directory it searched; an explicit
    /// --config is still honoured.
    func testMissingAccountNamesTheDirectoriesSearched() throws {
        let prefix = try install()
        let (cwd, env) = try emptyDirectory(prefix: prefix)
        let account = prefix + "/share/moe-train/gpt4-account.json"
        let moved = prefix + "/account-elsewhere.json"
        try FileManager.default.moveItem(atPath: account, toPath: moved)
        let missing = try shell(["moe-train", "project"], cwd: cwd, env: env, timeout: 300)
        XCTAssertEqual(missing.status, 2, missing.output)
        XCTAssertTrue(missing.stderr.contains("no gpt4-account.json found"), missing.output)
        for dir in [cwd + "/configs", prefix + "/share/moe-train"] {
            XCTAssertTrue(missing.stderr.contains(dir), "\(dir) not named in:\n\(missing.stderr)")
        }
        let explicit = try shell(["moe-train", "project", "--config", moved], cwd: cwd, env: env, timeout: 300)
        XCTAssertEqual(explicit.status, 0, explicit.output)
        XCTAssertTrue(explicit.stdout.contains("1.83e+12"), explicit.output)
    }
}
