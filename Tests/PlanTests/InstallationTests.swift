import Foundation
import XCTest
import Plan

/// The running executable and the config directories, from explicit inputs.
final class InstallationTests: XCTestCase {
    func tempDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-train-installation-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.resolvingSymlinksInPath().path
    }

    /// A fake installed binary PREFIX/bin/moe-train.
    func fakeBinary(in prefix: String) throws -> String {
        try FileManager.default.createDirectory(atPath: prefix + "/bin", withIntermediateDirectories: true)
        let exe = prefix + "/bin/moe-train"
        _ = FileManager.default.createFile(atPath: exe, contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        return exe
    }

    func testProcSelfExeWinsOverArgv0() throws {
        let dir = try tempDir()
        let exe = try fakeBinary(in: dir + "/prefix")
        try FileManager.default.createSymbolicLink(atPath: dir + "/exe", withDestinationPath: exe)
        let path = Installation.executablePath(procSelfExe: dir + "/exe", argv0: "moe-train", environment: ["PATH": "/nonexistent"],
                                               workingDirectory: "/")
        XCTAssertEqual(path, exe)
    }

    /// Under this test runner /proc/self/exe is the test binary itself, absolute.
    func testRealProcSelfExe() {
        let path = Installation.executablePath
        XCTAssertTrue(path.hasPrefix("/"), path)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: path), path)
    }

    /// Without /proc: a bare name is looked up in PATH (never in the working directory).
    func testBareArgv0IsFoundThroughPath() throws {
        let dir = try tempDir()
        let exe = try fakeBinary(in: dir + "/prefix")
        let cwd = dir + "/elsewhere"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: cwd + "/moe-train", contents: Data(), attributes: [.posixPermissions: 0o755])  // not this one
        let path = Installation.executablePath(procSelfExe: dir + "/no-proc", argv0: "moe-train",
                                               environment: ["PATH": "/nonexistent:" + dir + "/prefix/bin:/usr/bin"], workingDirectory: cwd)
        XCTAssertEqual(path, exe)
    }

    /// Without /proc: argv[0] with a slash is resolved against the working directory.
    func testRelativeArgv0WithSlashUsesTheWorkingDirectory() throws {
        let dir = try tempDir()
        let exe = try fakeBinary(in: dir + "/prefix")
        let path = Installation.executablePath(procSelfExe: dir + "/no-proc", argv0: "bin/moe-train", environment: ["PATH": ""],
                                               workingDirectory: dir + "/prefix")
        XCTAssertEqual(path, exe)
        let absolute = Installation.executablePath(procSelfExe: dir + "/no-proc", argv0: exe, environment: [:], workingDirectory: "/")
        XCTAssertEqual(absolute, exe)
    }

    func testConfigDirectoryOrder() {
        let dirs = Installation.configDirectories(environment: ["MOE_TRAIN_CONFIGS": "/env/configs"], workingDirectory: "/work/run",
                                                  executable: "/opt/p/bin/moe-train")
        XCTAssertEqual(dirs, ["/env/configs", "/work/run/configs", "/opt/p/share/moe-train", "/opt/p/configs", "/opt/configs", "/configs"])
        let unset = Installation.configDirectories(environment: [:], workingDirectory: "/w",
                                                   executable: "/r/.build/x86_64-unknown-linux-gnu/release/moe-train")
        XCTAssertEqual(Array(unset.prefix(2)), ["/w/configs", "/r/.build/x86_64-unknown-linux-gnu/share/moe-train"])
        XCTAssertTrue(unset.contains("/r/configs"), "\(unset)")
    }
}
