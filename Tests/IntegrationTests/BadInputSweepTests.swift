import Foundation
import XCTest
import TestSupport

/// Every value-checked option of every subcommand, given the values a new user mistypes
/// (0, -1, 2^63-1, 1e12, 1e300, nan, inf, a word, nothing): each is either accepted with
/// sensible output or rejected with exit status 2 and one sentence naming the flag and the
/// value; never a trap, a hang, NaN in the output, or a file written before rejecting.
///
/// The options are found from the binary itself (`--experimental-dump-help`), so a new flag
/// is swept without editing this test: an option is swept when the word "abc" makes the
/// command reject it by name (numbers, choices, lists); paths and names that accept any
/// string are not.
final class BadInputSweepTests: XCTestCase {
    static let values = ["0", "-1", "9223372036854775807", "1e12", "1e300", "nan", "inf", "abc", ""]

    /// How a subcommand is run: the arguments before the option under test (which comes
    /// last, so its value wins over a base value) and after it (a `--` and training flags),
    /// and which files it may leave behind when it accepts (relative to its directory).
    struct Command {
        let name: String
        let before: (String) -> [String]
        var after: [String] = []
        var mayWrite: [String] = []
    }

    var tiny: String { Subprocess.repoRoot + "/configs/tiny.json" }

    var commands: [Command] {
        let training = ["--config", tiny, "--steps", "2", "--dry-run"]
        return [
            Command(name: "train", before: { _ in ["train"] + training }),
            Command(name: "compare-schedules", before: { dir in ["compare-schedules"] + training + ["--out", dir + "/out"] }),
            Command(name: "project-layout", before: { _ in ["project-layout", "--world", "1", "--config", self.tiny] }),
            Command(name: "project", before: { _ in ["project"] }),
            Command(name: "supervise", before: { _ in ["supervise", "--np", "1"] },
                    after: ["--", "--config", tiny, "--steps", "2"], mayWrite: ["checkpoints"]),
            Command(name: "goodput-sweep",
                    before: { dir in ["goodput-sweep", "--np", "1", "--mtbf-hours", "1000", "--checkpoint-every", "2",
                                      "--out", dir + "/sweep"] },
                    after: ["--", "--config", tiny, "--steps", "2"], mayWrite: ["sweep"]),
            Command(name: "comm-check", before: { _ in ["comm-check"] }),
        ]
    }

    /// Long option names per subcommand, from the binary's own description of itself.
    func options(binary: String) throws -> [String: [String]] {
        let r = try Subprocess.run(binary, ["--experimental-dump-help"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.output)
        guard let root = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let command = root["command"] as? [String: Any],
              let subcommands = command["subcommands"] as? [[String: Any]] else {
            XCTFail("unexpected --experimental-dump-help output: \(r.stdout.prefix(300))")
            return [:]
        }
        var out: [String: [String]] = [:]
        for sub in subcommands {
            guard let name = sub["commandName"] as? String, let arguments = sub["arguments"] as? [[String: Any]] else { continue }
            out[name] = arguments.compactMap { a -> String? in
                guard a["kind"] as? String == "option", let preferred = a["preferredName"] as? [String: Any],
                      preferred["kind"] as? String == "long", let n = preferred["name"] as? String, n != "help" else { return nil }
                return n
            }
        }
        return out
    }

    struct Case: Sendable {
        let command: String
        let flag: String
        let value: String
        let args: [String]
        let dir: String
        let mayWrite: [String]
    }

    /// Runs `cases` four at a time (most are rejected within milliseconds); returns each
    /// case with its result.
    func runAll(_ cases: [Case], binary: String) -> [(Case, Subprocess.Result?)] {
        final class Results: @unchecked Sendable {
            var items: [(Case, Subprocess.Result?)] = []
            let lock = NSLock()
        }
        let results = Results()
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 4
        for c in cases {
            queue.addOperation {
                try? FileManager.default.createDirectory(atPath: c.dir, withIntermediateDirectories: true)
                let r = try? Subprocess.run(binary, c.args, cwd: c.dir, timeout: 60)
                results.lock.lock(); results.items.append((c, r)); results.lock.unlock()
            }
        }
        queue.waitUntilAllOperationsAreFinished()
        return results.items
    }

    /// Spellings of `value` a message may use: as typed, and as Swift prints the number.
    func spellings(_ value: String) -> [String] {
        var s = [value]
        if let i = Int(value) { s.append(String(i)) }
        if let d = Double(value) { s.append(String(d)); s.append("\(d)") }
        return s
    }

    func testEveryValueCheckedOptionOfEverySubcommand() throws {
        let binary = try Subprocess.binary
        let all = try options(binary: binary)
        let base = try Subprocess.tempDir("moe-train-sweep")
        defer { try? FileManager.default.removeItem(atPath: base) }
        var counter = 0
        func makeCase(_ command: Command, _ flag: String, _ value: String) -> Case {
            counter += 1
            let dir = base + "/\(counter)"
            return Case(command: command.name, flag: flag, value: value,
                        args: command.before(dir) + ["--" + flag, value] + command.after, dir: dir, mayWrite: command.mayWrite)
        }
        // 1. Which options check their value: the word "abc" is refused by name.
        var probes: [Case] = []
        for command in commands {
            let flags = try XCTUnwrap(all[command.name], "no subcommand \(command.name) in --experimental-dump-help")
            for flag in flags { probes.append(makeCase(command, flag, "abc")) }
        }
        var swept: [(Command, String)] = []
        var choices: Set<String> = []  // "command --flag 'value'" the parser lists as a choice
        for (c, r) in runAll(probes, binary: binary) {
            guard let r, r.status == 2, r.stderr.contains("--" + c.flag) else { continue }
            swept.append((commands.first { $0.name == c.command }!, c.flag))
            if let listed = r.stderr.range(of: "Please provide one of ") {
                for value in Self.values where r.stderr[listed.upperBound...].contains("'\(value)'") {
                    choices.insert("\(c.command) --\(c.flag) '\(value)'")
                }
            }
        }
        XCTAssertGreaterThan(swept.count, 60, "too few options found to sweep: \(swept.map(\.1))")
        for required in [("train", "steps"), ("train", "lr"), ("project", "mtbf-hours"), ("goodput-sweep", "np"),
                         ("supervise", "hang-timeout"), ("project-layout", "world"), ("comm-check", "tp")] {
            XCTAssertTrue(swept.contains { $0.0.name == required.0 && $0.1 == required.1 }, "\(required) was not swept")
        }
        // 2. Every value on every one of them.
        let cases = swept.flatMap { command, flag in Self.values.map { makeCase(command, flag, $0) } }
        var failures: [String] = []
        var accepted = 0, rejected = 0
        for (c, result) in runAll(cases, binary: binary) {
            let what = "moe-train \(c.command) --\(c.flag) '\(c.value)'"
            guard let r = result else { failures.append("\(what): could not run"); continue }
            if r.seconds >= 60 { failures.append("\(what): hangs (killed after 60 s)"); continue }
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: c.dir)) ?? []).sorted()
            let text = r.stdout + r.stderr
            if text.contains("Fatal error") || text.contains("Swift runtime failure") || text.contains("Program crashed") {
                failures.append("\(what): traps (status \(r.status)): \(text.suffix(300))"); continue
            }
            switch r.status {
            case 2:
                rejected += 1
                let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("moe-train: error:") }
                if errors.count != 1 { failures.append("\(what): \(errors.count) error lines, want 1: \(r.stderr.suffix(300))"); continue }
                let message = String(errors[0])
                if !message.contains("--" + c.flag) { failures.append("\(what): the message does not name --\(c.flag): \(message)") }
                if !c.value.isEmpty, !spellings(c.value).contains(where: { message.contains($0) }) {
                    failures.append("\(what): the message does not name the value: \(message)")
                }
                if !left.isEmpty { failures.append("\(what): rejected, but wrote \(left)") }
            case 0:
                accepted += 1
                // No number means anything as -1 or NaN (only a named choice, such as
                // --fail-mode nan, may be spelled so): accepting either is accepting nonsense,
                // even when the option goes unused (a flag that only matters beside another).
                if c.value == "-1" || c.value == "nan", !choices.contains("\(c.command) --\(c.flag) '\(c.value)'") { failures.append("\(what): accepted, but no option means anything by \(c.value)") }
                if text.range(of: #"(^|[^A-Za-z_])-?(nan|inf)([^A-Za-z_]|$)"#, options: .regularExpression) != nil {
                    failures.append("\(what): accepted, and the output shows nan or inf: \(text.suffix(300))")
                }
                if let extra = left.first(where: { !c.mayWrite.contains($0) }) {
                    failures.append("\(what): accepted, and wrote \(extra) where it may write only \(c.mayWrite)")
                }
            default:
                failures.append("\(what): exit status \(r.status) (want 0 or 2): \(text.suffix(300))")
            }
        }
        print("bad-input sweep: \(swept.count) options x \(Self.values.count) values = \(cases.count) cases: \(rejected) rejected, \(accepted) accepted, \(failures.count) failures")
        failures += try sweepConfigKeys(binary: binary, base: base)
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of \(cases.count) cases misbehave:\n" + failures.joined(separator: "\n"))
    }

    /// Every config-file key (listed by the binary itself in its unknown-key message) set to
    /// values a file may hold by mistake; the training command with `--dry-run` must accept or
    /// reject each one by name (the key, or the flag that sets the same thing).
    func sweepConfigKeys(binary: String, base: String) throws -> [String] {
        let probeDir = base + "/keys"
        try FileManager.default.createDirectory(atPath: probeDir, withIntermediateDirectories: true)
        try #"{"no_such_key": 1}"#.write(toFile: probeDir + "/probe.json", atomically: true, encoding: .utf8)
        let probe = try Subprocess.run(binary, ["--config", probeDir + "/probe.json", "--dry-run"], cwd: probeDir, timeout: 60)
        guard let open = probe.stderr.range(of: "(known keys: "), let close = probe.stderr.range(of: ")", range: open.upperBound..<probe.stderr.endIndex) else {
            return ["the unknown-key message does not list the known keys: \(probe.stderr)"]
        }
        let keys = probe.stderr[open.upperBound..<close.lowerBound].components(separatedBy: ", ")
        XCTAssertGreaterThan(keys.count, 60, "too few config keys: \(keys)")
        let tinyText = try String(contentsOfFile: tiny, encoding: .utf8)
        guard let tinyObject = try JSONSerialization.jsonObject(with: Data(tinyText.utf8)) as? [String: Any] else { return ["tiny.json"] }
        let values = ["0", "-1", "9223372036854775807", "1e14", "1e300", "\"abc\"", "null", "true"]
        var cases: [Case] = []
        var n = 0
        for key in keys {
            for value in values {
                n += 1
                let dir = base + "/key-\(n)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                // tiny.json with one key replaced, written outside the case's directory.
                var object = tinyObject
                object[key] = nil
                var text = String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
                text = String(text.dropLast()) + ", \"\(key)\": \(value)}"
                let file = base + "/key-\(n).json"
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                cases.append(Case(command: "train", flag: key, value: value, args: ["--config", file, "--steps", "2", "--dry-run"],
                                  dir: dir, mayWrite: []))
            }
        }
        var failures: [String] = []
        var accepted = 0, rejected = 0
        for (c, result) in runAll(cases, binary: binary) {
            let what = "config key \"\(c.flag)\": \(c.value)"
            guard let r = result else { failures.append("\(what): could not run"); continue }
            if r.seconds >= 60 { failures.append("\(what): hangs"); continue }
            let text = r.stdout + r.stderr
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: c.dir)) ?? [])
            if !left.isEmpty { failures.append("\(what): wrote \(left)") }
            switch r.status {
            case 2:
                rejected += 1
                let flag = "--" + c.flag.replacingOccurrences(of: "_", with: "-")
                let message = r.stderr.split(separator: "\n").first { $0.hasPrefix("moe-train: error:") }.map(String.init) ?? ""
                if !message.contains("\"\(c.flag)\"") && !message.contains(c.flag + " ") && !message.contains(flag) {
                    failures.append("\(what): the message names neither the key nor \(flag): \(message)")
                }
            case 0:
                accepted += 1
                if text.range(of: #"(^|[^A-Za-z_])-?(nan|inf)([^A-Za-z_]|$)"#, options: .regularExpression) != nil {
                    failures.append("\(what): accepted, and the output shows nan or inf")
                }
            default:
                failures.append("\(what): exit status \(r.status): \(text.suffix(300))")
            }
        }
        print("config-key sweep: \(keys.count) keys x \(values.count) values = \(cases.count) cases: \(rejected) rejected, \(accepted) accepted, \(failures.count) failures")
        return failures
    }
}
