import Foundation
import Formats

/// The emulated hosts' memory for `--checkpoint-mode memory`, after Gemini (Wang et al.,
/// SOSP 2023): every rank keeps its checkpoint shard in its own host's CPU memory and a
/// copy of one peer's shard, the peer sitting on another host. A process that crashes loses
/// nothing (its host's memory outlives it); a host that is lost (`lose-slot`) loses its own
/// shards and the copies it held, and each of its ranks is restored from the copy on the
/// next host at network speed; when a shard and its copy are both gone, the job falls back
/// to the newest checkpoint on storage.
///
/// A host's memory is a directory of a tmpfs: `ROOT/host-HHH/step-NNNNNN/` holding the
/// shards kept there and the manifest, in the storage format (`Checkpoint`), so verifying,
/// loading and resharding are the storage checkpoint's code. ROOT is a directory named by a
/// digest of the run directory's absolute path (two runs never share one; a restarted run
/// finds its own) under `MOE_TRAIN_HOST_MEMORY` when set, else `/dev/shm/moe-train-UID`.
public struct HostMemory: Sendable {
    public let root: String
    /// Ranks per emulated host (`--gpus-per-node`): consecutive ranks share a host.
    public let gpusPerNode: Int
    public let world: Int

    public init(runDirectory: String, gpusPerNode: Int, world: Int) {
        root = Self.root(runDirectory: runDirectory)
        self.gpusPerNode = max(gpusPerNode, 1)
        self.world = max(world, 1)
    }

    public static func root(runDirectory: String) -> String {
        let absolute = URL(fileURLWithPath: runDirectory).standardizedFileURL.path
        return base + "/" + SHA256Hex.of(Array(absolute.utf8)).prefix(16)
    }

    /// `MOE_TRAIN_HOST_MEMORY`, else `/dev/shm/moe-train-UID` (or the temporary directory's).
    public static var base: String {
        if let base = ProcessInfo.processInfo.environment["MOE_TRAIN_HOST_MEMORY"], !base.isEmpty { return base }
        var isDir: ObjCBool = false
        let shm = FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &isDir) && isDir.boolValue
        return (shm ? "/dev/shm" : NSTemporaryDirectory()) + "/moe-train-\(getuid())"
    }

    /// Creates the base (mode 0700) and this run's root, and checks that the base belongs to
    /// this user, so that no one else can read or replace the shards kept there. Returns a
    /// sentence saying what is wrong.
    public static func prepare(root: String) -> String? {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let owner = (try fm.attributesOfItem(atPath: base)[.ownerAccountID] as? NSNumber)?.uint32Value
            guard owner == getuid() else { return "\(base) belongs to user \(owner.map(String.init) ?? "unknown"), not to this one (\(getuid()))" }
            try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            return "cannot create \(root) (\(error.localizedDescription))"
        }
        return nil
    }

    public func host(of rank: Int) -> Int { rank / gpusPerNode }
    public var hosts: Int { (world + gpusPerNode - 1) / gpusPerNode }

    /// How far a rank's copy travels: `gpusPerNode` ranks on, to the same local index on the
    /// next host (wrapping around the world); on a single host, to the next rank (the copy
    /// then guards against a process crash only). One copy per rank keeps the exchange a
    /// permutation.
    var shift: Int { world > gpusPerNode ? gpusPerNode : 1 }
    /// The rank that keeps a copy of `rank`'s shard (the rank itself in a world of one).
    public func peer(of rank: Int) -> Int { (rank + shift) % world }
    /// The rank whose shard `rank` keeps a copy of.
    public func source(of rank: Int) -> Int { (rank - shift + world) % world }
    /// Whether every copy sits on another host than its shard: when the world spans at least
    /// two full hosts. Otherwise (one host, or a full one and a partial one) some copies share
    /// their shard's host, and losing that host falls back to storage.
    public var copiesCrossHosts: Bool { (0..<world).allSatisfy { host(of: peer(of: $0)) != host(of: $0) } }

    public func hostDirectory(_ host: Int) -> String { Self.hostDirectory(root: root, host: host) }
    public static func hostDirectory(root: String, host: Int) -> String { root + String(format: "/host-%03ld", host) }
    public func stepDirectory(host: Int, step: Int) -> String { hostDirectory(host) + "/" + Checkpoint.stepName(step) }

    /// Every host directory under ROOT (of this world or an earlier, larger one).
    public static func hostDirectories(root: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { $0.hasPrefix("host-") }.sorted().map { root + "/" + $0 }
    }

    /// The checkpoints held in memory, newest first: for each step, the step directory of
    /// the first host holding its manifest, and the same step's directories on the other
    /// hosts, where the shards missing from the first are looked for.
    public static func checkpoints(root: String) -> [(step: Int, path: String, elsewhere: [String])] {
        let hostDirs = hostDirectories(root: root)
        var byStep: [Int: [String]] = [:]
        for h in hostDirs {
            for (step, path) in Checkpoint.stepDirectories(h) { byStep[step, default: []].append(path) }
        }
        return byStep.keys.sorted(by: >).map { step in
            let dirs = byStep[step]!
            let first = dirs.first { FileManager.default.fileExists(atPath: $0 + "/manifest.json") } ?? dirs[0]
            return (step, first, dirs.filter { $0 != first })
        }
    }

    /// After step `step`'s checkpoint is complete in every host: the older ones held by
    /// `host` are dropped. (Directories of hosts an earlier, larger world had, and steps newer
    /// than a checkpoint a run fell back to, stay until the run ends: they are only ever read
    /// through their manifests and checksums.) Ranks sharing a host may race to remove the
    /// same directory; either succeeding is enough.
    public func dropOlder(than step: Int, host: Int) {
        for old in Checkpoint.stepDirectories(hostDirectory(host)) where old.step < step {
            try? FileManager.default.removeItem(atPath: old.path)
        }
    }

    /// The job is over: its hosts' memory is released.
    public static func release(root: String) {
        try? FileManager.default.removeItem(atPath: root)
    }
}
