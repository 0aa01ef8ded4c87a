import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The emulated clock of the GPU one rank plays.
///
/// Time moves only through `compute` (kernels inside it are costed by the roofline in
/// modeled mode, or by the thread's CPU time in measured mode) and through the
/// Communicator (`collective`, `receive`, and `waitForStream` for collectives that ran on
/// the communication stream, `streamCollective`). Every advance is
/// recorded as a span, so every derived figure (busy, idle, bubble, MFU) is a sum of spans.
public final class DeviceClock {
    public enum Mode: Sendable, Equatable {
        case modeled
        case measured(scale: Double)
        public var name: String { if case .modeled = self { return "modeled" }; return "measured" }
    }

    public let mode: Mode
    public let cost: CostModel
    public private(set) var now: Double = 0
    public private(set) var spans: [Span] = []
    /// Hardware FLOPs executed by kernels so far (for HFU).
    public private(set) var executedFLOPs: Double = 0
    /// Whether spans are recorded (the clock advances either way).
    public var recording = true
    /// Compute takes this many times longer than the cost model says: a straggler.
    public var slowdown = 1.0
    /// Thread CPU time spent inside compute regions (whatever the mode), without the
    /// communication inside them (`communicated(cpuSeconds:)`): the real work this rank did,
    /// for measuring how well ranks share the cores.
    public var computeCPUSeconds: Double { regionCPUSeconds - communicationCPUInRegions }
    var regionCPUSeconds = 0.0
    var communicationCPUInRegions = 0.0

    /// The Communicator spent `cpuSeconds` of thread CPU in an operation (polling, yielding,
    /// copying, combining); inside a compute region that is not compute.
    public func communicated(cpuSeconds: Double) {
        if inRegion { communicationCPUInRegions += cpuSeconds }
    }

    /// Whether a compute region is open (communication now would be inside it).
    public var inComputeRegion: Bool { inRegion }
    let wallOrigin = DispatchTime.now().uptimeNanoseconds

    // The compute region in progress: its kind and detail, the modeled seconds of the
    // kernels since the last flush, and (measured mode) the thread CPU time at the last flush.
    var inRegion = false
    var regionKind = SpanKind.forward
    var regionDetail = ""
    /// A part of the region marked apart (`expertSection`): appended to the detail of its spans.
    var regionSection: String? = nil
    var regionSeconds = 0.0
    var regionCPUMark = 0.0
    var regionWallMark = 0.0

    public init(mode: Mode, cost: CostModel) {
        self.mode = mode
        self.cost = cost
    }

    public var wallNow: Double { Double(DispatchTime.now().uptimeNanoseconds - wallOrigin) / 1e9 }

    func record(_ kind: SpanKind, _ start: Double, _ end: Double, _ detail: String, wallStart: Double, stream: Stream = .compute) {
        guard recording, end > start else { return }
        spans.append(Span(kind: kind, start: start, end: end, detail: detail, wallStart: wallStart, wallEnd: wallNow, stream: stream))
    }

    // MARK: - Compute

    /// Runs `body` as compute of `kind`. In modeled mode its duration is the sum of the
    /// roofline costs of the kernels it ran (reported through `kernel`); in measured mode it
    /// is the thread CPU time of `body` times the scale. Communication inside `body` (the
    /// tensor-parallel all-reduces of a layer) splits it: the compute before a message is
    /// recorded first (`flush`), so messages carry the time at which they really leave.
    public func compute<R>(_ kind: SpanKind, _ detail: String, _ body: () throws -> R) rethrows -> R {
        precondition(!inRegion, "compute regions do not nest")
        inRegion = true
        regionKind = kind
        regionDetail = detail
        regionSection = nil
        regionSeconds = 0
        markRegion()
        let cpu0 = DeviceClock.threadCPUSeconds()
        defer { flush(); inRegion = false; regionCPUSeconds += DeviceClock.threadCPUSeconds() - cpu0 }
        return try body()
    }

    /// Records the compute done since the region started or was last flushed.
    public func flush() {
        guard inRegion else { return }
        let duration: Double
        switch mode {
        case .modeled: duration = regionSeconds * slowdown
        case .measured(let scale): duration = (DeviceClock.threadCPUSeconds() - regionCPUMark) * scale * slowdown
        }
        let start = now
        now += duration
        record(regionKind, start, now, regionSection.map { regionDetail + " " + $0 } ?? regionDetail, wallStart: regionWallMark)
        regionSeconds = 0
        markRegion()
    }

    /// Restarts the region's CPU and wall marks (after a wait that is not compute).
    func markRegion() {
        guard inRegion else { return }
        regionWallMark = wallNow
        if case .measured = mode { regionCPUMark = DeviceClock.threadCPUSeconds() }
    }

    /// One kernel of the current compute region: `flops` executed, `elements` moved through HBM.
    public func kernel(flops: Double, elements: Double) {
        executedFLOPs += flops
        if inRegion { regionSeconds += cost.kernel(flops: flops, elements: elements) }
    }

    /// The expert GEMMs of an MoE layer start (rows per local expert) or end (nil): the
    /// compute before is recorded, and the spans until the end name the experts' load, so
    /// that a trace of an imbalanced step shows which rank's experts the others waited for.
    public func expertSection(rows: [Int]?) {
        expertSection(rows: rows.map { $0.map(Double.init) })
    }

    public func expertSection(rows: [Double]?) {
        guard inRegion else { return }
        flush()
        regionSection = rows.map(DeviceClock.expertLabel)
    }

    /// "experts: 512 rows, busiest 96 (1.50x the mean of 16)".
    static func expertLabel(_ rows: [Double]) -> String {
        let total = rows.reduce(0, +), busiest = rows.max() ?? 0
        let mean = rows.isEmpty ? 0 : total / Double(rows.count)
        return String(format: "experts: %.0f rows, busiest %.0f (%.2fx the mean of %ld)", total, busiest,
                      mean > 0 ? busiest / mean : 0, rows.count)
    }

    // MARK: - Communication

    /// A collective that starts when the slowest participant arrives (`groupStart`, the max
    /// of the participants' clocks) and lasts `duration`. The wait is an idle span.
    /// Call `flush` before reading `now` for `groupStart`.
    public func collective(_ kind: SpanKind, groupStart: Double, duration: Double, detail: String, wallStart: Double) {
        if groupStart > now {
            record(.idle, now, groupStart, "waiting for " + detail, wallStart: wallStart)
            now = groupStart
        }
        let start = now
        now += duration
        record(kind, start, now, detail, wallStart: wallStart)
        markRegion()
    }

    /// The communication stream (`CommunicationStream`): collectives issued asynchronously
    /// run here, one at a time, while compute goes on.
    public private(set) var commStream = CommunicationStream()

    /// A collective on the communication stream, issued by its last participant at
    /// `groupIssue`: it runs when the stream is free, is recorded on the communication
    /// stream, and does not move `now`. Returns its end, for `waitForStream`.
    public func streamCollective(_ kind: SpanKind, groupIssue: Double, duration: Double, detail: String, wallStart: Double) -> Double {
        let (start, end) = commStream.run(issued: groupIssue, duration: duration)
        record(kind, start, end, detail, wallStart: wallStart, stream: .communication)
        return end
    }

    /// The compute stream waits for the communication stream up to `time`: what was not
    /// hidden behind compute is exposed communication of `kind` on the rank's timeline.
    /// Call `flush` before waiting on the real operations: the thread time since then was
    /// spent waiting, and measured mode does not count it as compute.
    public func waitForStream(until time: Double, as kind: SpanKind, detail: String) {
        if case .modeled = mode { flush() }
        markRegion()
        if time > now {
            record(kind, now, time, "waiting for " + detail, wallStart: wallNow)
            now = time
        }
        markRegion()
    }

    /// A message sent at the sender's time `sentAt` arrives after `transfer` seconds. The
    /// receiver idles until the sender sent it, then spends the transfer receiving.
    public func receive(sentAt: Double, transfer: Double, detail: String, wallStart: Double) {
        if sentAt > now {
            record(.idle, now, sentAt, "waiting for " + detail, wallStart: wallStart)
            now = sentAt
        }
        let arrival = sentAt + transfer
        if arrival > now {
            let start = now
            now = arrival
            record(.recvWait, start, now, detail, wallStart: wallStart)
        }
        markRegion()
    }

    /// Jumps forward to `time` (if later), recording the gap as `kind`.
    public func advance(to time: Double, as kind: SpanKind, detail: String) {
        guard time > now else { return }
        let start = now
        now = time
        record(kind, start, now, detail, wallStart: wallNow)
    }

    /// Adds a span of known duration (for example a checkpoint write).
    public func spend(_ seconds: Double, as kind: SpanKind, detail: String) {
        advance(to: now + seconds, as: kind, detail: detail)
    }

    public static func threadCPUSeconds() -> Double { seconds(CLOCK_THREAD_CPUTIME_ID) }

    /// The time of one of the system's clocks (`CLOCK_MONOTONIC`, `CLOCK_THREAD_CPUTIME_ID`,
    /// `CLOCK_PROCESS_CPUTIME_ID`, ...) in seconds.
    public static func seconds(_ clock: clockid_t) -> Double {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

import Tensor

extension DeviceClock: KernelAccountant {}
