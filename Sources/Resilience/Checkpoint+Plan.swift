import Foundation
import Plan

extension Checkpoint {
    /// The plan of the job that wrote a checkpoint: its manifest's configuration with its
    /// layout, planned as a projection (the memory and message-tag limits of running that
    /// layout do not apply to reading its shards). `export` and resharding read shards
    /// through it.
    public static func writerPlan(of path: String, manifest: Manifest) throws -> JobPlan {
        let name = URL(fileURLWithPath: path).lastPathComponent
        var config = try writerConfig(of: path)
        let l = manifest.layout
        (config.tp, config.pp, config.dp, config.ep, config.zero, config.virtualStages, config.ppLayers) =
            (l.tp, l.pp, l.dp, l.ep, l.zero, l.virtualStages, l.ppLayers)
        config.zeroGroup = l.zeroGroup < l.dp ? l.zeroGroup : nil
        if l.virtualStages > 1 { config.schedule = .interleaved }
        do {
            return try JobPlan(config: config, world: l.world, purpose: .projection)
        } catch {
            throw CheckpointProblem("\(name): its layout (\(l)) does not plan: \(error)")
        }
    }

    /// The configuration a checkpoint's manifest holds (the writer's, as it ran).
    public static func writerConfig(of path: String) throws -> RunConfig {
        let name = URL(fileURLWithPath: path).lastPathComponent
        guard let data = FileManager.default.contents(atPath: path + "/manifest.json"),
              let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let configObject = obj["config"] as? [String: Any] else {
            throw CheckpointProblem("\(name)/manifest.json holds no configuration")
        }
        return try ConfigFile.parse(try JSONSerialization.data(withJSONObject: configObject), name: path + "/manifest.json")
    }
}
