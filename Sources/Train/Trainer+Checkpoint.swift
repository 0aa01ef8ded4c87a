import Foundation
import Resilience
import Formats
import Comm
import Emulation
import Model
import Parallel
import Schedule
import Plan
import Tensor

// MARK: - Checkpoints: saving and resuming (see Checkpoint.swift for the format)

extension Trainer {
    /// Reads this rank's shard of a verified checkpoint, without applying it (see `restore`).
    /// Under another layout than the checkpoint's, the shard is assembled from the byte
    /// ranges of the writer's shards that hold this rank's elements.
    public func readShard(of candidate: Checkpoint.Candidate) throws -> Checkpoint.LoadedShard {
        if let writer = candidate.writer {
            return try Checkpoint.reshardShard(candidate, writer: writer, layout: params.layout, optimizerRanges: optimizers.map(\.range),
                                               heldValues: params.heldValues)
        }
        return try Checkpoint.readShard(candidate, rank: groups.world.rank, params: params, optimizers: optimizers)
    }

    /// Continues from a checkpoint whose shard every rank has read: parameters, optimizer
    /// shards and step counts (collective). Returns the emulated seconds the load took: the
    /// slowest rank's shard over its path (`loadSeconds`), recorded in the event for goodput.
    @discardableResult
    public func restore(from candidate: Checkpoint.Candidate, shard: Checkpoint.LoadedShard) throws -> Double {
        Checkpoint.apply(shard, params: params, optimizers: optimizers)
        startStep = candidate.step
        let seconds = groups.world.untimed { groups.world.allReduce(loadSeconds(candidate), op: .max) }
        if isLogger {
            let resharded = candidate.writer.map { _ in ", resharded from \(candidate.manifest.layout) to \(Checkpoint.Layout(job))" } ?? ""
            let from = candidate.source == .hostMemory ? "host memory (\(candidate.path))" : candidate.path
            log(String(format: "resumed from %@: continuing after step %ld (attempt %ld%@); load %.4g emulated s",
                       from, candidate.step, config.attempt, resharded, seconds))
            try runLog.event(RunEvent(.checkpointLoaded, attempt: config.attempt, step: candidate.step, path: candidate.path,
                                      source: candidate.source.rawValue, seconds: seconds))
        }
        return seconds
    }

    /// Emulated seconds for this rank to load its shard: from storage at the checkpoint
    /// bandwidth; from host memory at the host bandwidth when its own host kept the shard,
    /// else over the inter-node link from the host that kept the copy (or, resharding,
    /// the pieces).
    func loadSeconds(_ candidate: Checkpoint.Candidate) -> Double {
        let bytes = emulatedShardBytes, rank = groups.world.rank
        switch candidate.source {
        case .storage:
            return bytes / config.checkpointBandwidth
        case .hostMemory:
            let memory = hostMemory
            let local = candidate.writer == nil && candidate.manifest.shards[rank].path.hasPrefix(memory.hostDirectory(memory.host(of: rank)) + "/")
            return local ? bytes / emulator.profile.hostBandwidth : clock.cost.links.interNode.seconds(bytes)
        }
    }

    /// Saves this step's sharded checkpoint (collective). Emulated cost: the shard's bytes in
    /// the emulated precision (bf16 parameters, fp32 master weights and moments of the owned
    /// shard) over the storage bandwidth.
    func saveCheckpoint(_ step: Int) {
        do { try writeCheckpoint(step) } catch { abortSaving(step, error) }
    }

    /// At a step's start and at the end of the run: an asynchronous save that has become
    /// durable is published (`settleCheckpoint`).
    func settleCheckpointOrAbort(force: Bool) {
        guard let step = pendingCheckpoint?.step else { return }
        do { try settleCheckpoint(force: force) } catch { abortSaving(step, error) }
    }

    /// One rank failing to write must not leave the others waiting in a collective: it ends
    /// the job with its failure's status (5 when the device is full: no restart helps).
    func abortSaving(_ step: Int, _ error: Error) -> Never {
        let status: ExitStatus = (error as? AtomicFile.WriteError)?.isOutOfSpace == true ? .outOfSpace : .failure
        FileHandle.standardError.write(Data("moe-train: error: rank \(groups.world.rank) cannot save checkpoint step \(step) in \(config.runDirectory): \(error)\n".utf8))
        groups.world.abort(code: status.rawValue)
    }

    func writeCheckpoint(_ step: Int) throws {
        let world = groups.world
        // One asynchronous save in flight at most: a new snapshot waits for the previous persist.
        try settleCheckpoint(force: true)
        let dir = config.runDirectory + "/" + Checkpoint.stepName(step)
        if world.rank == 0 {
            try FileManager.default.createDirectory(atPath: config.runDirectory, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: dir) {
                // A torn or rolled-back checkpoint of this step: keep it aside, never overwrite it.
                let aside = dir + ".stale-\(Int(Date().timeIntervalSince1970))-\(config.attempt)"
                try FileManager.default.moveItem(atPath: dir, toPath: aside)
                log("checkpoint: moved the existing \(Checkpoint.stepName(step)) aside to \(URL(fileURLWithPath: aside).lastPathComponent)")
            }
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        world.untimed { world.barrier() }
        let blob = Checkpoint.encodeShard(params: params, optimizers: optimizers, step: step, rank: world.rank, attempt: config.attempt)
        let path = dir + "/" + Checkpoint.shardName(world.rank)
        if faults.crashesWhileSaving(step: step) {
            log("fault: rank \(world.rank) dies while writing its checkpoint shard at step \(step)")
            let tmp = dir + "/." + Checkpoint.shardName(world.rank) + ".tmp-\(getpid())"
            _ = FileManager.default.createFile(atPath: tmp, contents: Data(blob.prefix(blob.count / 2)))
            faults.crash()
        }
        if faults.diskFullWhileSaving(step: step) {
            log("fault: rank \(world.rank) finds no space for its checkpoint shard at step \(step)")
            throw AtomicFile.WriteError(path: path, code: ENOSPC)
        }
        let emulatedBytes = emulatedShardBytes
        let pending = PendingCheckpoint(step: step, dir: dir)
        switch config.checkpointMode {
        case .sync:
            try AtomicFile.write(blob, to: path)
            clock.spend(emulatedBytes / config.checkpointBandwidth, as: .checkpoint, detail: "save \(Checkpoint.stepName(step))")
        case .async, .memory:
            // The step pays the copy to host memory; storage is written behind the next steps.
            clock.spend(emulatedBytes / emulator.profile.hostBandwidth, as: .checkpoint, detail: "snapshot \(Checkpoint.stepName(step))")
            pending.durableAt = clock.now + emulatedBytes / config.checkpointBandwidth
            Thread.detachNewThread {
                do { try AtomicFile.write(blob, to: path) } catch { pending.error = error }
                pending.written.signal()
            }
        }
        let entry = "\(blob.count) \(SHA256Hex.of(blob))"
        let entries = world.untimed { world.gatherBytes(Array(entry.utf8), root: 0) }
        if world.rank == 0 {
            let shards = entries.enumerated().map { rank, bytes -> [String: Any] in
                let parts = String(decoding: bytes, as: UTF8.self).split(separator: " ")
                return ["file": Checkpoint.shardName(rank), "bytes": Int(parts[0])!, "sha256": String(parts[1])]
            }
            pending.manifest = ["format": "moe-train checkpoint v1", "step": step, "attempt": config.attempt,
                                "layout": Checkpoint.Layout(job).json,
                                "config_hash": Checkpoint.configHash(config), "config": try JSONSerialization.jsonObject(with: config.canonicalJSON()),
                                "shards": shards]
        }
        if config.checkpointMode == .memory { try keepInHostMemory(step, blob: blob, manifest: pending.manifest) }
        switch config.checkpointMode {
        case .sync: try publish(pending)
        case .async, .memory: pendingCheckpoint = pending
        }
    }

    /// A shard's size in the emulated precision: bf16 parameters, fp32 master weights and
    /// moments of the owned ZeRO shard (the timed model's shard, with `time_as`).
    var emulatedShardBytes: Double {
        let layout = job.timed?.plan.placement(of: groups.world.rank).layout ?? params.layout
        let owned = optimizers.reduce(0) { $0 + zero.chargedCount(owned: $1.range) }
        let held = config.zero == 3 ? owned : Double(layout.specs.reduce(0) { $0 + $1.count })   // ZeRO-3 holds its shard of the parameters
        return held * emulator.precision.elementBytes + owned * emulator.precision.optimizerBytesPerParameter
    }

    var hostMemory: HostMemory {
        HostMemory(runDirectory: config.runDirectory, gpusPerNode: config.gpusPerNode, world: groups.world.size)
    }

    /// `--checkpoint-mode memory` (collective): this rank's shard goes into its host's memory,
    /// a copy to its peer over MPI, and the peer's source's copy comes back into this host's
    /// memory; then every host holds the manifest, and the checkpoint survives the loss of any
    /// one host when the copies cross hosts (`HostMemory.copiesCrossHosts`). Emulated cost: the copy over the link between the two hosts (the snapshot
    /// into host memory is already paid). Host memory keeps one checkpoint: once this one is
    /// complete everywhere, the older ones are dropped.
    func keepInHostMemory(_ step: Int, blob: [UInt8], manifest: [String: Any]?) throws {
        let world = groups.world, memory = hostMemory
        let host = memory.host(of: world.rank), peer = memory.peer(of: world.rank), source = memory.source(of: world.rank)
        let dir = memory.stepDirectory(host: host, step: step)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A rolled-back attempt's copy of this step: its manifest goes first (the new one is
        // written only after every rank is past this point), so old and new never mix. Ranks
        // sharing the host may race to remove it; either succeeding is enough.
        try? FileManager.default.removeItem(atPath: dir + "/manifest.json")
        try AtomicFile.write(blob, to: dir + "/" + Checkpoint.shardName(world.rank))
        guard blob.count < Int(Int32.max) else {
            throw Checkpoint.CheckpointProblem("a shard of \(blob.count) bytes is too large for one MPI message")
        }
        if world.size > 1 {
            let copy = world.untimed { world.exchangeBytes(blob, to: peer, from: source, tag: Self.hostMemoryTag) }
            clock.spend(clock.cost.links.link(for: [world.rank, peer]).seconds(emulatedShardBytes), as: .checkpoint,
                        detail: "copy \(Checkpoint.stepName(step)) to rank \(peer)'s host")
            try AtomicFile.write(copy, to: dir + "/" + Checkpoint.shardName(source))
        }
        // Every host gets the manifest once every shard and copy is in memory.
        var text = world.rank == 0 ? Array(JSONText.encode(manifest ?? [:]).utf8) : []
        world.untimed {
            var length = [Int64(text.count)]
            world.broadcast(&length, root: 0)
            if world.rank != 0 { text = [UInt8](repeating: 0, count: Int(length[0])) }
            world.broadcast(&text, root: 0)
            world.barrier()
        }
        try AtomicFile.write(text, to: dir + "/manifest.json")
        world.untimed { world.barrier() }
        memory.dropOlder(than: step, host: host)
    }

    /// The tag of the host-memory copies on the world communicator (no other point-to-point traffic there).
    static let hostMemoryTag = 31_000

    /// An asynchronous checkpoint whose shards are being persisted: it becomes a checkpoint
    /// (its manifest written) once every rank's shard is durable in emulated time and on disk.
    /// Until then a failure loses it, and resuming takes an older one.
    final class PendingCheckpoint: @unchecked Sendable {
        let step: Int
        let dir: String
        /// Emulated time at which this rank's shard is on storage.
        var durableAt = 0.0
        /// Rank 0: the manifest to write.
        var manifest: [String: Any]?
        let written = DispatchSemaphore(value: 0)
        var error: Error?
        init(step: Int, dir: String) { self.step = step; self.dir = dir }
    }

    /// Collective, at the start of every step while an asynchronous save is in flight: when
    /// every rank's shard is durable in emulated time (or `force`: the ranks wait for it, the
    /// wait counted as checkpoint time), each waits for its real write and rank 0 writes the
    /// manifest. Every rank decides alike: the readiness is all-gathered.
    func settleCheckpoint(force: Bool) throws {
        guard let p = pendingCheckpoint else { return }
        let world = groups.world
        if force {
            if clock.now < p.durableAt { clock.spend(p.durableAt - clock.now, as: .checkpoint, detail: "persist \(Checkpoint.stepName(p.step))") }
        } else {
            let ready = world.untimed { world.allGather([Int32(clock.now >= p.durableAt ? 1 : 0)]) }
            guard ready.allSatisfy({ $0 == 1 }) else { return }
        }
        p.written.wait()
        if let error = p.error { throw error }
        world.untimed { world.barrier() }
        pendingCheckpoint = nil
        try publish(p)
    }

    /// Collective. Rank 0 writes the manifest (which makes the step directory a checkpoint),
    /// `latest`, the event and prunes; every shard is durable by now. No rank goes on before
    /// the manifest is written, so whether a checkpoint exists when a rank fails right after
    /// never depends on how fast rank 0 wrote it.
    func publish(_ p: PendingCheckpoint) throws {
        if groups.world.rank == 0, let manifest = p.manifest { try writeManifest(p, manifest) }
        groups.world.untimed { groups.world.barrier() }
    }

    func writeManifest(_ p: PendingCheckpoint, _ manifest: [String: Any]) throws {
        let step = p.step
        try AtomicFile.write(JSONText.encode(manifest), to: p.dir + "/manifest.json")
        // `latest` is advisory (resuming finds checkpoints by their directories): a damaged one
        // never stops a save.
        do { try AtomicFile.write(Checkpoint.stepName(step) + "\n", to: config.runDirectory + "/latest") } catch {
            log("checkpoint: \(error); latest is only a hint, \(Checkpoint.stepName(step)) is saved")
        }
        try runLog.event(RunEvent(.checkpointSaved, attempt: config.attempt, step: step))
        if config.keepCheckpoints > 0 {
            // Only this run's own complete checkpoints (same configuration, at or before this
            // step) are pruned, never the one just written and never another run's.
            let hash = Checkpoint.configHash(config)
            let mine = Checkpoint.stepDirectories(config.runDirectory).filter { entry in
                guard entry.step <= step, let data = FileManager.default.contents(atPath: entry.path + "/manifest.json"),
                      let m = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return false }
                return m["config_hash"] as? String == hash
            }
            for old in mine.dropFirst(config.keepCheckpoints) where old.step != step {
                try? FileManager.default.removeItem(atPath: old.path)
            }
        }
    }
}
