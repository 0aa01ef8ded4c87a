import XCTest
import Foundation
import Projection
import Plan
import Model
import Emulation

/// The published runs of `configs/published` (Narayanan et al. 2021 Table 1, Korthikanti et
/// al. 2022 Table 5) and `validate`'s arithmetic on them.
final class PublishedMeasurementTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("configs/published").path

    static var shipped: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
            .map { directory + "/" + $0 }
    }

    /// All fifteen rows load and project, and the error against the real runs is within the
    /// target: a mean absolute error of at most 5% and a max of at most 10% (deterministic:
    /// the modeled clock, not a wall-clock figure).
    func testShippedRunsProjectWithinTheTarget() throws {
        let files = Self.shipped
        XCTAssertEqual(files.count, 15, "\(files)")
        var lines: [String] = []
        let report = try Validate.run(files: files) { lines.append($0) }
        XCTAssertEqual(report.rows.count, 15)
        XCTAssertEqual(Set(report.rows.map(\.name)).count, 15, "names are unique")
        XCTAssertEqual(report.rows.filter { $0.metric == "tflops_per_gpu" }.count, 7)
        XCTAssertEqual(report.rows.filter { $0.metric == "iteration_time_s" }.count, 8)
        for r in report.rows { XCTAssertEqual(r.error, r.predicted / r.published - 1, accuracy: 1e-12, r.name) }
        let errors = report.rows.map { abs($0.error) }
        XCTAssertEqual(report.meanAbsError, errors.reduce(0, +) / 15, accuracy: 1e-12)
        XCTAssertEqual(report.maxAbsError, errors.max()!)
        XCTAssertLessThanOrEqual(report.meanAbsError, 0.05, lines.joined(separator: "\n"))
        XCTAssertLessThanOrEqual(report.maxAbsError, 0.10, lines.joined(separator: "\n"))
        print(lines.joined(separator: "\n"))
    }

    /// Narayanan et al.'s equation 3 for the 18.4B row, by hand: 96 B s l h^2 (1 + s/6h + V/16lh)
    /// with B 1024, s 2048, l 40, h 6144, V 51200.
    func testNarayananEquation3() throws {
        let m = try PublishedMeasurement.load(Self.directory + "/narayanan2021-t1-18.4b.json")
        let (config, world) = try m.configuration()
        XCTAssertEqual(world, 256)
        XCTAssertEqual(config.recompute, .full)
        let p = try Projection(config: config, worldSize: world)
        let byHand = 96.0 * 1024 * 2048 * 40 * 6144 * 6144 * (1 + 2048.0 / (6 * 6144) + 51200.0 / (16 * 40 * 6144))
        XCTAssertEqual(m.modelFLOPsPerIteration(projection: p), byHand, accuracy: byHand * 1e-12)
        XCTAssertEqual(m.predicted(by: p), byHand / (p.stepTime * 256) / 1e12, accuracy: 1e-9)
    }

    /// `validate --fit`: fit to one run, the constants reproduce that run's figure (the search
    /// finds what the row needs), the other runs are reported as held out, and the profile's
    /// values are the starting point reported; a prefix naming no run is refused.
    func testFitReproducesTheRunItIsFitTo() throws {
        let files = Self.shipped
        var lines: [String] = []
        let fit = try Validate.fit(files: files, prefix: "narayanan2021-t1-18.4b") { lines.append($0) }
        XCTAssertEqual(fit.device, "a100-80gb")
        let profile = try DeviceProfile.load(path: Self.directory + "/../devices/a100-80gb.json")
        XCTAssertEqual(fit.before, profile.flopsEfficiency)
        XCTAssertEqual(fit.linkBefore, profile.intraNodeEfficiency)
        XCTAssertEqual(fit.fitSet.rows.map(\.name), ["narayanan2021-t1-18.4b"])
        XCTAssertLessThan(abs(fit.fitSet.rows[0].error), 1e-3, lines.joined(separator: "\n"))
        XCTAssertEqual(fit.heldOut?.rows.count, 14)
        XCTAssertFalse(fit.atRangeEnd)
        XCTAssertTrue((0.3...1.0).contains(fit.after) && (0.3...1.0).contains(fit.linkAfter))
        XCTAssertThrowsError(try Validate.fit(files: files, prefix: "nobody") { _ in }) {
            XCTAssertTrue("\($0)".contains("--fit nobody: no run's name starts with it"), "\($0)")
        }
    }

    /// A file that does not say what it must is refused, naming the file and the key.
    func testMalformedFilesAreRefused() throws {
        let good = try String(contentsOfFile: Self.directory + "/korthikanti2022-t5-22b-full.json", encoding: .utf8)
        let dir = NSTemporaryDirectory() + "published-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let edits: [(String, (String) -> String, String)] = [
            ("missing", { $0.replacingOccurrences(of: "\"tp\": 8,", with: "") }, "missing key 'layout.tp'"),
            ("two-metrics", { $0.replacingOccurrences(of: "\"iteration_time_s\": 1.42", with: "\"iteration_time_s\": 1.42, \"mfu\": 0.4") },
             "exactly one of tflops_per_gpu, iteration_time_s, mfu"),
            ("counting", { $0.replacingOccurrences(of: "narayanan2021-eq3", with: "guess") }, "flops_counting guess"),
            ("geglu", { $0.replacingOccurrences(of: "\"gelu\"", with: "\"geglu\"") }, "model.ffn geglu"),
            ("schedule", { $0.replacingOccurrences(of: "\"1f1b\"", with: "\"zigzag\"") }, "layout.schedule zigzag"),
            ("negative", { $0.replacingOccurrences(of: "\"iteration_time_s\": 1.42", with: "\"iteration_time_s\": -1") }, "must be positive"),
            ("top-k", { $0.replacingOccurrences(of: "\"top_k\": 1", with: "\"top_k\": 0") }, "model.top_k 0: must be from 1"),
            ("experts", { $0.replacingOccurrences(of: "\"experts\": 0", with: "\"experts\": -4") }, "model.experts -4: must be from 0"),
            ("batch", { $0.replacingOccurrences(of: "\"global_batch\": 4", with: "\"global_batch\": 0") }, "layout.global_batch 0"),
            ("mfu", { $0.replacingOccurrences(of: "\"iteration_time_s\": 1.42", with: "\"mfu\": 5") }, "measured.mfu 5.0: is a fraction"),
            ("zb-h1", { $0.replacingOccurrences(of: "\"1f1b\"", with: "\"zb-h1\"") }, "layout.schedule zb-h1"),
        ]
        for (name, edit, expected) in edits {
            let path = dir + "/\(name).json"
            let text = edit(good)
            XCTAssertNotEqual(text, good, "the edit \(name) changed nothing")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try PublishedMeasurement.load(path), name) {
                XCTAssertTrue("\($0)".contains(path) && "\($0)".contains(expected), "\(name): \($0)")
            }
        }
    }
}
