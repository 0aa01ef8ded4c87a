import Foundation
import XCTest
import TestSupport

/// Overlapped data-parallel gradient reduction (`--overlap-grad-reduce`): the buckets run on
/// the emulated communication stream while the backward goes on, only what compute does not
/// hide is exposed, and the step is shorter by exactly the hidden amount.
final class OverlapTests: XCTestCase {
    /// Two data-parallel replicas on two nodes (every gradient crosses the 25 GB/s inter-node
    /// link of the A100 profile: alpha 8 us, beta 25e9 B/s), a model wide enough that a
    /// layer's reduce-scatter is tens of microseconds.
    static let flags = ["--config", "configs/tiny.json", "--steps", "1", "--d-model", "256", "--ffn-hidden", "512", "--layers", "4",
                        "--gpus-per-node", "1"]

    struct Event { let name: String; let detail: String; let tid: Int; let start: Double; let duration: Double
        var end: Double { start + duration }
    }

    func run(_ extra: [String]) throws -> (step: Double, events: [Event]) {
        let r = try runWithLosses(extra)
        return (r.step, r.events)
    }

    func runWithLosses(_ extra: [String]) throws -> (step: Double, events: [Event], losses: [Double]) {
        let dir = try Subprocess.tempDir()
        let r = try Subprocess.mpirun(np: 2, Self.flags + extra + ["--summary-json", dir + "/s.json", "--trace", dir + "/t.json"])
        XCTAssertEqual(r.status, 0, r.output)
        let summary = try Subprocess.readJSON(dir + "/s.json")
        let step = try XCTUnwrap((summary["emulated_step_times_s"] as? [Double])?.last)
        let losses = try XCTUnwrap(summary["losses"] as? [Double])
        let trace = try XCTUnwrap(try Subprocess.readJSON(dir + "/t.json")["traceEvents"] as? [[String: Any]])
        // Each rank's two streams are named threads of its process whenever the second one is used.
        let threads = trace.filter { $0["ph"] as? String == "M" && $0["name"] as? String == "thread_name" && $0["pid"] as? Int == 0 }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        let usesStream = trace.contains { $0["ph"] as? String == "X" && $0["tid"] as? Int == 1 }
        XCTAssertEqual(Set(threads), usesStream ? ["compute stream", "communication stream"] : [])
        let events = trace.compactMap { e -> Event? in
            guard e["ph"] as? String == "X", e["pid"] as? Int == 0 else { return nil }
            return Event(name: e["name"] as! String, detail: (e["args"] as? [String: Any])?["detail"] as? String ?? "",
                         tid: e["tid"] as! Int, start: (e["ts"] as! Double) * 1e-6, duration: (e["dur"] as! Double) * 1e-6)
        }
        return (step, events, losses)
    }

    /// The bytes a span's detail names ("reduce-scatter dp 1585664 B ...").
    func bytes(_ e: Event) throws -> Double {
        let words = e.detail.split(separator: " ")
        let i = try XCTUnwrap(words.firstIndex(of: "B"), e.detail)
        return try XCTUnwrap(Double(words[i - 1]), e.detail)
    }

    func testOverlappedReductionHidesWhatComputeCovers() throws {
        let plain = try run([]), overlapped = try run(["--overlap-grad-reduce"])
        // Without overlap: one reduce-scatter per region (dp: dense, edp: experts), on the compute stream.
        let whole = plain.events.filter { $0.name == "reduce-scatter" && $0.tid == 0 }
        XCTAssertEqual(whole.count, 2, "\(whole)")
        XCTAssertTrue(plain.events.allSatisfy { $0.tid == 0 }, "no communication stream without overlap")
        // With overlap: every bucket on the communication stream (tid 1), none on the compute stream.
        let buckets = overlapped.events.filter { $0.tid == 1 }
        XCTAssertGreaterThanOrEqual(buckets.count, 2 * 4, "a dense and an expert bucket per layer at least")
        XCTAssertTrue(buckets.allSatisfy { $0.name == "reduce-scatter" })
        XCTAssertFalse(overlapped.events.contains { $0.tid == 0 && $0.name == "reduce-scatter" && !$0.detail.hasPrefix("waiting for") })
        // By hand: each bucket costs (1/2) bytes / 25e9 + 8e-6 s between two nodes, and the
        // buckets of each group add up to that group's whole reduce-scatter.
        for b in buckets {
            XCTAssertEqual(b.duration, 0.5 * (try bytes(b)) / 25e9 + 8e-6, accuracy: 2e-9, b.detail)
        }
        for group in ["dp", "edp"] {
            let sum = try buckets.filter { $0.detail.contains(" \(group) ") }.reduce(0) { $0 + (try bytes($1)) }
            let region = try whole.filter { $0.detail.contains(" \(group) ") }.reduce(0) { $0 + (try bytes($1)) }
            XCTAssertEqual(sum, region, "\(group): the buckets tile the region")
        }
        // One at a time, in order; the compute stream waits only for what is left after its backward.
        for (a, b) in zip(buckets, buckets.dropFirst()) { XCTAssertGreaterThanOrEqual(b.start, a.end - 2e-9) }
        let wait = try XCTUnwrap(overlapped.events.first { $0.tid == 0 && $0.detail == "waiting for gradient buckets" })
        let lastBackward = try XCTUnwrap(overlapped.events.filter { $0.tid == 0 && $0.name == "backward" }.map(\.end).max())
        XCTAssertEqual(wait.start, lastBackward, accuracy: 2e-9)
        XCTAssertEqual(wait.end, buckets.map(\.end).max()!, accuracy: 2e-9, "the wait ends with the last bucket")
        let hidden = buckets.reduce(0) { $0 + $1.duration } - wait.duration
        print(String(format: "reduce-scatter without overlap %.3f us; with overlap %d buckets, %.3f us on the communication stream, %.3f us exposed, %.3f us hidden; step %.3f -> %.3f us",
                     whole.reduce(0) { $0 + $1.duration } * 1e6, buckets.count, buckets.reduce(0) { $0 + $1.duration } * 1e6,
                     wait.duration * 1e6, hidden * 1e6, plain.step * 1e6, overlapped.step * 1e6))
        XCTAssertGreaterThan(hidden, 0.5 * wait.duration, "most of the reduction is hidden")
        // Nothing else changed: the step is shorter by the exposed reduction it no longer has
        // (from the end of the backward to the end of the last reduce-scatter, waiting for the
        // other replica included).
        let plainBackward = try XCTUnwrap(plain.events.filter { $0.tid == 0 && $0.name == "backward" }.map(\.end).max())
        let exposedBefore = whole.map(\.end).max()! - plainBackward
        XCTAssertEqual(plain.step - overlapped.step, exposedBefore - wait.duration, accuracy: 1e-8)
    }

    /// `--overlap-param-gather`: ZeRO-1's all-gather of the updated parameters leaves the
    /// compute stream. It runs bucket by bucket on the communication stream after the
    /// optimizer, the next step's forward waits only for what has not arrived when it needs a
    /// layer, the second step is shorter than with blocking gathers, and the numbers are the same.
    func testOverlappedParameterGatherLeavesTheComputeStream() throws {
        let blocking = try runWithLosses(["--steps", "2", "--overlap-grad-reduce"])
        let overlapped = try runWithLosses(["--steps", "2", "--overlap-grad-reduce", "--overlap-param-gather"])
        XCTAssertEqual(overlapped.losses, blocking.losses, "the same parameters reach every forward")
        let blockingGathers = blocking.events.filter { $0.tid == 0 && $0.name == "all-gather" && !$0.detail.hasPrefix("waiting") }
        XCTAssertEqual(blockingGathers.count, 2 * 2, "dp and edp gathers in each of the two steps")
        XCTAssertFalse(overlapped.events.contains { $0.tid == 0 && $0.name == "all-gather" && !$0.detail.hasPrefix("waiting") })
        let streamed = overlapped.events.filter { $0.tid == 1 && $0.name == "all-gather" }
        XCTAssertGreaterThanOrEqual(streamed.count, 2 * 2 * 4, "a dense and an expert bucket per layer, after each step")
        for b in streamed { XCTAssertEqual(b.duration, 0.5 * (try bytes(b)) / 25e9 + 8e-6, accuracy: 2e-9, b.detail) }
        let waited = overlapped.events.filter { $0.tid == 0 && $0.detail == "waiting for parameter buckets" }.reduce(0) { $0 + $1.duration }
        print(String(format: "second step: %.3f us with blocking gathers, %.3f us overlapped (%.3f us of gathers waited for)",
                     blocking.step * 1e6, overlapped.step * 1e6, waited * 1e6))
        XCTAssertLessThan(overlapped.step, blocking.step)
    }
}
