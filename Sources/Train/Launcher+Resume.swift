import Foundation
import Formats
import Resilience
import Comm
import Plan

/// Which checkpoint a run continues from, decided in two halves so that each byte of a
/// checkpoint is hashed once in the job, not once per rank: before MPI starts every rank
/// reads the manifests and checks what needs no hashing (`resumePlan`); after, each rank
/// hashes only its own shard of a candidate and the ranks agree on the verdict with one
/// collective (`chooseCheckpoint`).
extension Launcher {
    /// The checkpoints a run may continue from, newest first, checked but not hashed.
    public struct ResumePlan {
        public enum Entry {
            /// A step directory that failed the cheap checks: the sentence rank 0 reports.
            case skipped(String)
            /// A checkpoint of this layout and configuration, to hash and resume from if every shard matches.
            case candidate(Checkpoint.Candidate)
            /// A checkpoint of another layout or configuration: reaching it stops the run.
            case refused(String)
        }
        public let entries: [Entry]
        /// `--resume DIR`: a shard that does not match is an error, not a reason to look further.
        public let explicit: Bool
        public static let none = ResumePlan(entries: [], explicit: false)
    }

    /// What resuming found and hashed (the summary's "resume").
    public struct ResumeReport {
        public internal(set) var chosen: Checkpoint.Candidate?
        /// Candidates hashed (the chosen one and newer ones found corrupt), their listed
        /// shard bytes, the bytes this rank hashed and the bytes all ranks hashed.
        public internal(set) var candidatesHashed = 0, shardBytes = 0, bytesHashed = 0, bytesHashedAllRanks = 0
        /// The checksum of the parameters as loaded (rank 0; empty elsewhere).
        public internal(set) var loadedParamChecksum: String?
        /// Emulated seconds the load took (`Trainer.restore`).
        public internal(set) var loadSeconds = 0.0
        /// The summary's record of it.
        public var record: RunSummary.Resume {
            RunSummary.Resume(checkpoint: chosen?.path, step: chosen?.step ?? 0, candidatesHashed: candidatesHashed,
                              shardBytes: shardBytes, bytesHashed: bytesHashed, bytesHashedAllRanks: bytesHashedAllRanks,
                              loadedParamChecksum: loadedParamChecksum, source: chosen?.source.rawValue, loadSeconds: loadSeconds)
        }
    }

    /// Before MPI: `--resume never` nothing; a step directory that one (its manifest and shard
    /// sizes must check); `auto` the step directories of the run directory, newest first,
    /// those that fail the cheap checks kept as sentences to report. A checkpoint of another
    /// layout or configuration stops the run with a message naming both: here if it is the
    /// newest candidate, else when the ranks reach it after rejecting the newer ones.
    static func resumePlan(_ plan: JobPlan) throws -> ResumePlan {
        let config = plan.config
        let mine = Checkpoint.Layout(plan)
        let hash = Checkpoint.configHash(config)
        /// Why `c` cannot be resumed from, or nil; a checkpoint of another layout gets its
        /// writer's plan (its shards are resharded on load).
        func refusal(_ c: inout Checkpoint.Candidate) -> String? {
            if c.manifest.configHash != hash {
                let differences = (try? Checkpoint.writerConfig(of: c.path)).map { config.numericsDifferences(from: $0) } ?? []
                let what = differences.isEmpty ? "config hash \(c.manifest.configHash), this run \(hash)" : differences.joined(separator: "; ")
                return "cannot resume from \(c.path): it was written by a run with another model, batch, optimizer, data or seed (\(what)); pass --resume never or another --checkpoint-dir"
            }
            guard c.manifest.layout != mine else { return nil }
            let writer: JobPlan
            do { writer = try Checkpoint.writerPlan(of: c.path, manifest: c.manifest) } catch {
                return "cannot reshard \(c.path) (layout \(c.manifest.layout)): \(error)"
            }
            // The data cursor is (seed, step, global batch): the stream continues only with the same global batch.
            if writer.batch.globalBatch != plan.batch.globalBatch {
                return "cannot resume from \(c.path): it was written with a global batch of \(writer.batch.globalBatch) sequences (layout \(c.manifest.layout)), and this run's is \(plan.batch.globalBatch) (layout \(mine)); pass --global-batch \(writer.batch.globalBatch)"
            }
            c.writer = writer
            return nil
        }
        switch config.resume {
        case "never":
            return .none
        case "auto":
            // A run that neither checkpoints nor names a run directory leaves checkpoints/ alone.
            guard config.checkpointEvery > 0 || config.checkpointDir != nil else { return .none }
            var entries: [ResumePlan.Entry] = []
            var candidates = 0
            // Storage's checkpoints and, under --checkpoint-mode memory, the hosts' memory's,
            // newest first, memory before storage at one step (it loads faster). Host memory
            // is a cache: a copy that cannot serve is skipped, never a reason to stop.
            var found = Checkpoint.stepDirectories(config.runDirectory).map { (step: $0.step, path: $0.path, elsewhere: [String](), memory: false) }
            let memory = HostMemory(runDirectory: config.runDirectory, gpusPerNode: config.gpusPerNode, world: plan.topology.world)
            if config.checkpointMode == .memory {
                found += HostMemory.checkpoints(root: memory.root).map { ($0.step, $0.path, $0.elsewhere, true) }
                found.sort { ($0.step, $0.memory ? 1 : 0) > ($1.step, $1.memory ? 1 : 0) }
            }
            for (step, path, elsewhere, inMemory) in found {
                // A shard is read from its own host's copy when that host still has it.
                let home = inMemory ? { (rank: Int) in memory.stepDirectory(host: memory.host(of: rank), step: step) } : nil
                switch Checkpoint.inspect(path, elsewhere: elsewhere, home: home) {
                case .failure(let p):
                    entries.append(.skipped(p.description + (inMemory ? " (host memory)" : "")))
                case .success(let m):
                    var c = Checkpoint.Candidate(step: step, path: path, manifest: m, source: inMemory ? .hostMemory : .storage)
                    if let r = refusal(&c) {
                        if inMemory { entries.append(.skipped("the host-memory copy of \(c.name): \(r)")); continue }
                        if candidates == 0 { throw UsageError(r) }
                        entries.append(.refused(r))
                        return ResumePlan(entries: entries, explicit: false)
                    }
                    entries.append(.candidate(c))
                    candidates += 1
                }
            }
            return ResumePlan(entries: entries, explicit: false)
        default:
            switch Checkpoint.inspect(config.resume) {
            case .success(let m):
                var c = Checkpoint.Candidate(step: m.step, path: config.resume, manifest: m)
                if let r = refusal(&c) { throw UsageError(r) }
                return ResumePlan(entries: [.candidate(c)], explicit: true)
            case .failure(let p):
                throw UsageError("--resume \(config.resume): \(p.description)")
            }
        }
    }

    /// After MPI starts (collective): walks the plan newest first. Of each candidate, every
    /// rank hashes only its own shard, and one all-gather of (step, fault, bytes hashed) per
    /// candidate gives every rank every verdict: all take the same checkpoint, or all skip
    /// it, rank 0 naming each bad shard. Throws on every rank alike when an explicit
    /// `--resume` checkpoint has a bad shard or the walk reaches a refused checkpoint.
    /// Resumable: `next` is where the walk goes on (after a chosen checkpoint some rank then
    /// failed to load), `report` accumulates.
    static func chooseCheckpoint(_ plan: ResumePlan, from next: inout Int, report: inout ResumeReport, world: Communicator,
                                 log: (String) -> Void) throws {
        report.chosen = nil
        while true {
            // This rank's next candidate or refusal; rank 0 reports the skipped directories before it.
            var candidate: Checkpoint.Candidate?
            var refused: String?
            while next < plan.entries.count && candidate == nil && refused == nil {
                switch plan.entries[next] {
                case .skipped(let s): if world.rank == 0 { log("resume: skipped \(s)") }
                case .candidate(let c): candidate = c
                case .refused(let r): refused = r
                }
                next += 1
            }
            // Each shard is hashed by one rank: shard s by rank s mod world (its own shard when
            // the layouts agree); a rank reports its first bad shard.
            var bytes = 0
            var fault: (shard: Int, fault: Checkpoint.ShardFault)?
            if let c = candidate {
                for shard in stride(from: world.rank, to: c.manifest.shards.count, by: world.size) {
                    let check = Checkpoint.verifyShard(shard, of: c.manifest, named: c.name)
                    bytes += check.bytesHashed
                    if fault == nil, let f = check.fault { fault = (shard, f) }
                }
            }
            // -1: no candidate left, -2: a refused checkpoint; ranks that listed the run
            // directory alike send the same step.
            let step = candidate?.step ?? (refused == nil ? -1 : -2)
            let mine: [Int64] = [Int64(step), fault?.fault.kind.rawValue ?? 0, Int64(fault?.shard ?? -1), Int64(bytes)]
            let all = world.untimed { world.allGather(mine) }
            let steps = stride(from: 0, to: all.count, by: 4).map { all[$0] }
            let faults = stride(from: 1, to: all.count, by: 4).map { (kind: all[$0], shard: Int(all[$0 + 1])) }
            report.bytesHashed += bytes
            report.bytesHashedAllRanks += stride(from: 3, to: all.count, by: 4).reduce(0) { $0 + Int(all[$1]) }
            guard steps.allSatisfy({ $0 == steps[0] }) else {
                throw UsageError("the ranks listed different checkpoints to resume from: did the run directory change while the job started?")
            }
            guard let c = candidate else {
                if let r = refused { throw UsageError(r) }
                return
            }
            report.candidatesHashed += 1
            report.shardBytes += c.manifest.shards.reduce(0) { $0 + $1.bytes }
            let bad = faults.enumerated().compactMap { rank, f -> String? in
                guard let kind = Checkpoint.ShardFault.Kind(rawValue: f.kind) else { return nil }
                if rank == world.rank, let mine = fault { return mine.fault.description }
                return Checkpoint.ShardFault(kind, checkpoint: c.name, file: c.manifest.shards[f.shard].file, detail: "hashed by rank \(rank)").description
            }
            if bad.isEmpty {
                report.chosen = c
                return
            }
            if plan.explicit { throw UsageError("--resume \(c.path): " + bad.joined(separator: "; ")) }
            if world.rank == 0 { for s in bad { log("resume: skipped \(s)") } }
        }
    }
}

extension Launcher {
    /// After MPI starts (collective): the checkpoint the job continues from, read by every
    /// rank. Each rank reads and checks its own shard of the newest candidate whose shards
    /// hash to their manifest; unless every rank succeeds, the whole job falls back to the
    /// next older candidate (rank 0 names every rank's reason), and with none left it starts
    /// afresh. An explicit `--resume DIR` that a rank cannot load stops the job (exit 2).
    static func resume(_ plan: ResumePlan, trainer: Trainer, world: Communicator, log: (String) -> Void) throws -> ResumeReport {
        var report = ResumeReport()
        var next = 0
        while true {
            try chooseCheckpoint(plan, from: &next, report: &report, world: world, log: log)
            guard let candidate = report.chosen else { return report }
            var shard: Checkpoint.LoadedShard?
            var problem = ""
            do { shard = try trainer.readShard(of: candidate) } catch { problem = String(describing: error) }
            if shard == nil && problem.isEmpty { problem = "cannot be read" }
            // Every rank learns whether all read their shards; rank 0 learns every reason.
            let verdicts = world.untimed { world.allGather([Int64(shard == nil ? 1 : 0)]) }
            let reasons = world.untimed { world.gatherBytes(Array(problem.utf8), root: 0) }.map { String(decoding: $0, as: UTF8.self) }
            if verdicts.allSatisfy({ $0 == 0 }), let shard {
                report.loadSeconds = try trainer.restore(from: candidate, shard: shard)
                report.loadedParamChecksum = trainer.parameterChecksum()  // collective
                return report
            }
            let why = world.rank == 0
                ? reasons.enumerated().filter { !$0.element.isEmpty }.map { "rank \($0.offset): \($0.element)" }.joined(separator: "; ")
                : "see rank 0"

            if plan.explicit { throw UsageError("--resume \(candidate.path): cannot load it: \(why)") }
            if world.rank == 0 { log("resume: skipped \(candidate.name): cannot load it: \(why)") }
        }
    }
}
