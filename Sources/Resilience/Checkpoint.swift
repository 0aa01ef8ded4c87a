import Foundation
import Formats
import Model
import Plan

/// Sharded checkpoints: `DIR/step-NNNNNN/rank-RRRRR.safetensors` per rank (its parameter
/// shard, its ZeRO-1 optimizer shard, the optimizer step counts and the step in the header
/// metadata; data order and initialisation are pure functions of (seed, step), so the step
/// is the whole data cursor and RNG state), then `manifest.json` (step, layout, config
/// hash, every shard's size and SHA-256), then the `latest` pointer. Each file is written to
/// a temporary name, fsynced and renamed, and the manifest only after every shard is
/// durable, so a crash at any instant leaves the old checkpoint or the new one complete:
/// a step directory without a manifest is torn and never taken for whole.
public enum Checkpoint {
    public static func stepName(_ step: Int) -> String { String(format: "step-%06ld", step) }
    public static func shardName(_ rank: Int) -> String { String(format: "rank-%05ld.safetensors", rank) }

    /// The layout a checkpoint was written with: it must match to resume.
    public struct Layout: Equatable, CustomStringConvertible {
        public let world, tp, pp, dp, ep, zero, virtualStages: Int
        /// The data-parallel ranks ZeRO sharded over (`dp` unless hybrid sharding).
        public let zeroGroup: Int
        public let ppLayers: [Int]
        public var json: [String: Any] {
            ["world": world, "tp": tp, "pp": pp, "dp": dp, "ep": ep, "zero": zero, "zero_group": zeroGroup, "virtual_stages": virtualStages,
             "pp_layers": ppLayers]
        }
        public init(world: Int, tp: Int, pp: Int, dp: Int, ep: Int, zero: Int, zeroGroup: Int? = nil, virtualStages: Int, ppLayers: [Int]) {
            self.world = world; self.tp = tp; self.pp = pp; self.dp = dp; self.ep = ep; self.zero = zero
            self.zeroGroup = zeroGroup ?? dp
            self.virtualStages = virtualStages; self.ppLayers = ppLayers
        }
        /// The layout of a planned job.
        public init(_ plan: JobPlan) {
            let t = plan.topology
            self.init(world: t.world, tp: t.tp, pp: t.pp, dp: t.dp, ep: t.ep, zero: plan.config.zero, zeroGroup: t.zeroGroup,
                      virtualStages: plan.stages.virtualStages, ppLayers: plan.stages.layers.map(\.count))
        }
        init?(json o: [String: Any]) {
            guard let w = o["world"] as? Int, let tp = o["tp"] as? Int, let pp = o["pp"] as? Int, let dp = o["dp"] as? Int,
                  let ep = o["ep"] as? Int, let z = o["zero"] as? Int, let v = o["virtual_stages"] as? Int,
                  let l = o["pp_layers"] as? [Int] else { return nil }
            // Manifests from before hybrid sharding hold no zero_group: they sharded over every data-parallel rank.
            if let g = o["zero_group"] as? Int, !(1...max(dp, 1)).contains(g) || dp % g != 0 { return nil }
            self.init(world: w, tp: tp, pp: pp, dp: dp, ep: ep, zero: z, zeroGroup: o["zero_group"] as? Int, virtualStages: v, ppLayers: l)
        }
        public var description: String {
            "\(world) ranks: tp \(tp) pp \(pp) dp \(dp) ep \(ep), zero \(zero)" + (zeroGroup < dp ? " over groups of \(zeroGroup)" : "")
                + (pp > 1 ? ", stages \(ppLayers.map(String.init).joined(separator: ","))" : "")
                + (virtualStages > 1 ? ", \(virtualStages) virtual stages" : "")
        }
    }

    /// A fingerprint of everything that changes the numbers of a run (model, batch,
    /// optimizer, schedule of the learning rate, data, seed): not the layout, the device,
    /// the logging or the checkpoint settings.
    /// The hash is over the canonical JSON of those settings (`RunConfig.numericsJSON`).
    public static func configHash(_ c: RunConfig) -> String {
        // Encoding fails only for non-finite numbers, which validation has already refused.
        let json = (try? c.numericsJSON()) ?? Data()
        return String(SHA256Hex.of(Array(json)).prefix(16))
    }

    public struct Manifest {
        public let step: Int
        public let layout: Layout
        public let configHash: String
        /// Each shard: its file name, size and digest as listed, and where it was found.
        public let shards: [(file: String, bytes: Int, sha256: String, path: String)]
    }

    // MARK: - Finding a checkpoint to resume from

    public struct Candidate {
        public let step: Int
        public let path: String
        public let manifest: Manifest
        /// The plan of the job that wrote it, when that job's layout differs from the reader's:
        /// its shards are resharded on load (`reshardShard`).
        public var writer: JobPlan?
        /// Where it is kept: storage, or the hosts' memory (`HostMemory`).
        public var source: Source
        public enum Source: String, Sendable { case storage, hostMemory = "host memory" }
        public init(step: Int, path: String, manifest: Manifest, writer: JobPlan? = nil, source: Source = .storage) {
            self.step = step; self.path = path; self.manifest = manifest; self.writer = writer; self.source = source
        }
        /// How the job names it: `step-000020` on storage, or in host memory.
        public var name: String {
            URL(fileURLWithPath: path).lastPathComponent + (source == .hostMemory ? " (host memory)" : "")
        }
    }

    /// Step directories of `dir`, newest first.
    public static func stepDirectories(_ dir: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { n -> (Int, String)? in
            guard n.hasPrefix("step-"), n.count == 11, let s = Int(n.dropFirst(5)) else { return nil }
            return (s, dir + "/" + n)
        }.sorted { $0.0 > $1.0 }
    }

    /// Reads one checkpoint directory's manifest and checks what needs no hashing: the
    /// manifest is present and well formed, lists one shard per rank under its name, and
    /// every shard file is present with the listed size. Returns the manifest or a sentence
    /// saying what is wrong. The shards' SHA-256 are checked by `verifyShard`. A checkpoint in
    /// host memory is spread over the hosts (`HostMemory`): shard `r` is looked for first in
    /// `home(r)` (its own host's copy), then in `path`, then in the directories `elsewhere`.
    public static func inspect(_ path: String, elsewhere: [String] = [], home: ((Int) -> String)? = nil) -> Result<Manifest, CheckpointProblem> {
        let name = URL(fileURLWithPath: path).lastPathComponent
        guard let data = FileManager.default.contents(atPath: path + "/manifest.json") else {
            let shards = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".safetensors") }.count
            return .failure(CheckpointProblem("\(name) is incomplete: no manifest.json (\(shards) shard(s) written): a failure came before the save was complete"))
        }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let step = o["step"] as? Int,
              let layoutObj = o["layout"] as? [String: Any], let layout = Layout(json: layoutObj),
              let hash = o["config_hash"] as? String, let shardList = o["shards"] as? [[String: Any]] else {
            return .failure(CheckpointProblem("\(name)/manifest.json is malformed"))
        }
        if name.hasPrefix("step-"), name.count == 11, let named = Int(name.dropFirst(5)), named != step {
            return .failure(CheckpointProblem("\(name)/manifest.json is step \(step)'s, not step \(named)'s: the directory was renamed or the manifest copied"))
        }
        var shards: [(String, Int, String, String)] = []
        for (rank, s) in shardList.enumerated() {
            guard let file = s["file"] as? String, let bytes = s["bytes"] as? Int, let sha = s["sha256"] as? String else {
                return .failure(CheckpointProblem("\(name)/manifest.json has a malformed shard entry"))
            }
            guard file == shardName(rank) else {
                return .failure(CheckpointProblem("\(name)/manifest.json lists \(file) where rank \(rank)'s \(shardName(rank)) belongs"))
            }
            guard let location = ((home.map { [$0(rank)] } ?? []) + [path] + elsewhere).map({ $0 + "/" + file }).first(where: { FileManager.default.fileExists(atPath: $0) }),
                  let attributes = try? FileManager.default.attributesOfItem(atPath: location),
                  let size = (attributes[.size] as? NSNumber)?.intValue else {
                return .failure(CheckpointProblem("\(name): shard \(file) is missing" + (elsewhere.isEmpty ? "" : " from every host's memory")))
            }
            guard size == bytes else {
                return .failure(CheckpointProblem("\(name): shard \(file) has \(size) bytes, the manifest says \(bytes)"))
            }
            shards.append((file, bytes, sha, location))
        }
        guard shards.count == layout.world else {
            return .failure(CheckpointProblem("\(name): the manifest lists \(shards.count) shards for \(layout.world) ranks"))
        }
        return .success(Manifest(step: step, layout: layout, configHash: hash, shards: shards))
    }

    /// What is wrong with a shard that passed `inspect` but not its hashing. `kind` is what
    /// ranks exchange, so that rank 0 can name a shard another rank hashed.
    public struct ShardFault: Error, CustomStringConvertible {
        public enum Kind: Int64 { case unreadable = 1, resized, corrupt }
        public let kind: Kind
        /// The checkpoint's directory name (`step-000020`) and the shard's file name.
        public let checkpoint, file: String
        /// What only the rank that hashed the shard knows (the digests, the read error).
        public let detail: String?
        public init(_ kind: Kind, checkpoint: String, file: String, detail: String? = nil) {
            self.kind = kind; self.checkpoint = checkpoint; self.file = file; self.detail = detail
        }
        public var description: String {
            let what: String
            switch kind {
            case .unreadable: what = "cannot be read"
            case .resized: what = "changed size since its manifest was read"
            case .corrupt: what = "is corrupt: its SHA-256 does not match the manifest's"
            }
            return "\(checkpoint): shard \(file) \(what)" + (detail.map { " (\($0))" } ?? "")
        }
    }

    /// Hashes shard `rank` of a checkpoint whose manifest `inspect` returned and compares it
    /// with the manifest. Returns the bytes hashed, and the fault if there is one.
    /// `name` names the checkpoint in the fault (`Candidate.name`).
    public static func verifyShard(_ rank: Int, of manifest: Manifest, named name: String) -> (bytesHashed: Int, fault: ShardFault?) {
        let listed = manifest.shards[rank]
        let digest: (hex: String, bytes: Int)
        do { digest = try SHA256Hex.of(fileAtPath: listed.path) } catch {
            return (0, ShardFault(.unreadable, checkpoint: name, file: listed.file, detail: "\(error)"))
        }
        guard digest.bytes == listed.bytes else {
            return (digest.bytes, ShardFault(.resized, checkpoint: name, file: listed.file,
                                             detail: "\(digest.bytes) bytes, the manifest says \(listed.bytes)"))
        }
        guard digest.hex == listed.sha256 else {
            return (digest.bytes, ShardFault(.corrupt, checkpoint: name, file: listed.file,
                                             detail: "\(digest.hex.prefix(12))... against \(listed.sha256.prefix(12))..."))
        }
        return (digest.bytes, nil)
    }

    /// `inspect`, then every shard hashed: for a reader of every shard (export). A job
    /// resuming hashes each shard once, on its own rank (the launcher).
    public static func verify(_ path: String) -> Result<Manifest, CheckpointProblem> {
        switch inspect(path) {
        case .failure(let p): return .failure(p)
        case .success(let m):
            for rank in m.shards.indices {
                if let fault = verifyShard(rank, of: m, named: URL(fileURLWithPath: path).lastPathComponent).fault { return .failure(CheckpointProblem(fault.description)) }
            }
            return .success(m)
        }
    }

    public struct CheckpointProblem: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// The newest checkpoint of `dir` that verifies (every shard hashed), and a sentence for
    /// each newer one that did not (reported and skipped).
    public static func newestValid(in dir: String) -> (Candidate?, skipped: [String]) {
        var skipped: [String] = []
        for (step, path) in stepDirectories(dir) {
            switch verify(path) {
            case .success(let m): return (Candidate(step: step, path: path, manifest: m), skipped)
            case .failure(let p): skipped.append(p.description)
            }
        }
        return (nil, skipped)
    }
}
