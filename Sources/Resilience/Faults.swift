import Foundation
import Emulation
import Plan
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Injected failures, seeded and reproducible. `--fail-at-step S --fail-rank R --fail-mode M`
/// fires on the first attempt only (a failure already injected is not injected again after
/// a restart). `--mtbf-hours H` gives every rank its own exponential time to failure in
/// emulated device time, drawn from (seed, rank, attempt), so N ranks fail N times as often.
public struct FaultInjector {
    let mode: FailMode
    let failStep: Int?
    let failRank: Int
    let rank: Int
    let slowFactor: Double
    /// Emulated seconds after which this rank crashes (MTBF), if any.
    let timeToFailure: Double?
    /// Where a lost slot is recorded (`lose-slot`).
    let lostSlotsPath: String
    /// The memory of this rank's host, lost with its slot (`--checkpoint-mode memory`).
    let hostMemory: String?

    public init(config c: RunConfig, rank: Int) {
        self.rank = rank
        mode = c.failMode
        failStep = c.attempt == 1 ? c.failAtStep : nil
        failRank = c.failRank
        slowFactor = c.slowFactor
        lostSlotsPath = c.runDirectory + "/" + Self.lostSlotsFile
        hostMemory = c.checkpointMode == .memory
            ? HostMemory.hostDirectory(root: HostMemory.root(runDirectory: c.runDirectory), host: rank / max(c.gpusPerNode, 1)) : nil
        if let h = c.mtbfHours {
            let u = max(unitDouble(hashKey(c.seed, stableHash("mtbf"), UInt64(rank), UInt64(c.attempt))), 1e-300)
            timeToFailure = -log(u) * h * 3600
        } else {
            timeToFailure = nil
        }
    }

    public var targetsMe: Bool { failStep != nil && rank == failRank }

    /// Whether any rank of this attempt may fail on purpose.
    public var armed: Bool { failStep != nil || timeToFailure != nil }

    /// The run directory's list of slots lost for good, one line each (`lose-slot`); a
    /// repaired slot is given back by deleting its line.
    public static let lostSlotsFile = "lost-slots"

    /// Called at the start of every step.
    public func beforeStep(_ step: Int, clock: DeviceClock, log: (String) -> Void) {
        if let t = timeToFailure, clock.now >= t {
            log("fault: rank \(rank) fails at step \(step) after \(String(format: "%.3f", clock.now)) emulated s (MTBF draw \(String(format: "%.3f", t)) s)")
            crash()
        }
        guard targetsMe, let s = failStep, step >= s else { return }
        switch mode {
        case .crash where step == s:
            log("fault: rank \(rank) crashes (SIGKILL) at step \(step)")
            crash()
        case .hang where step == s:
            log("fault: rank \(rank) hangs at step \(step)")
            while true { sleep(3600) }
        case .loseSlot where step == s:
            log("fault: rank \(rank) crashes at step \(step) and its slot is lost (listed in \(lostSlotsPath))")
            let line = "rank \(rank) lost at step \(step)\n"
            let fd = open(lostSlotsPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            if fd >= 0 { _ = line.withCString { write(fd, $0, strlen($0)) }; fsync(fd); close(fd) }
            if let dir = hostMemory {
                log("fault: rank \(rank)'s host loses its memory (\(dir))")
                try? FileManager.default.removeItem(atPath: dir)
            }
            crash()
        case .slow where step == s:
            log("fault: rank \(rank) becomes a straggler, \(slowFactor)x slower, from step \(step)")
            clock.slowdown = slowFactor
        default:
            break
        }
    }

    /// `nan`: poisons one gradient of the failing rank at the failing step.
    public func poison(_ grads: Storage, step: Int) {
        if targetsMe && mode == .nan && step == failStep { grads.base[0] = .nan }
    }

    /// `crash-during-checkpoint`: the first checkpoint at or after the failing step dies
    /// halfway through writing this rank's shard.
    public func crashesWhileSaving(step: Int) -> Bool {
        targetsMe && mode == .crashDuringCheckpoint && step >= failStep!
    }

    /// `disk-full`: the first checkpoint at or after the failing step finds no space for this
    /// rank's shard.
    public func diskFullWhileSaving(step: Int) -> Bool {
        targetsMe && mode == .diskFull && step >= failStep!
    }

    public func crash() -> Never {
        fflush(stdout)
        kill(getpid(), SIGKILL)
        while true { sleep(1) }
    }
}
