import Model

/// Where one rank sits in the grid and what it holds: its tensor/expert shard of the layers
/// of its pipeline chunks, and the flat parameter layout of that shard (each region padded
/// so that ZeRO-1 and 2 split it evenly over the data-parallel ranks). The one mapping from a
/// rank to its share of the model; training, memory planning, projection and export read it.
public struct Placement: Sendable {
    public let rank: Int
    public let coordinates: Topology.Coordinates
    public let shard: ShardSpec
    public let layout: ParameterLayout
    /// The ranges of the flat parameter buffer the rank holds: all of it, or under ZeRO-3 its
    /// shard of the dense region (over the data-parallel ranks) and of the expert region (over
    /// the expert-data-parallel ones).
    public let heldValues: [Range<Int>]

    public init(rank: Int, topology: Topology, stages: StagePlan, model: ModelConfig, zero: Int, sequenceParallel: Bool = false) {
        let c = topology.coordinates(of: rank)
        self.rank = rank
        coordinates = c
        shard = ShardSpec(tp: topology.tp, tpRank: c.tp, ep: topology.ep, epRank: c.ep, layers: stages.heldLayers(rank: c.pp),
                          embedding: stages.holdsEmbedding(rank: c.pp), head: stages.holdsHead(rank: c.pp), sequenceParallel: sequenceParallel)
        layout = ParameterLayout(config: model, shard: shard,
                                 denseAlignment: zero >= 1 ? topology.zeroGroup : 1,
                                 expertAlignment: zero >= 1 ? topology.expertZeroGroup : 1)
        heldValues = zero == 3 ? Self.zeroShards(layout, topology, c) : [0..<layout.totalCount]
    }

    /// The rank's ZeRO shards of the dense and the expert region: over its data-parallel
    /// (expert-data-parallel) ranks, or under hybrid sharding over its group of them.
    public static func zeroShards(_ layout: ParameterLayout, _ topology: Topology, _ c: Topology.Coordinates) -> [Range<Int>] {
        [ParameterLayout.zeroShard(layout.denseRegion, parts: topology.zeroGroup, index: c.dp % topology.zeroGroup),
         ParameterLayout.zeroShard(layout.expertRegion, parts: topology.expertZeroGroup, index: c.edp % topology.expertZeroGroup)]
    }
}
