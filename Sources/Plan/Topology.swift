import Model

/// The rank grid as a value: world = pp x dp x tp, tp fastest.
///
///     rank = ((pp_rank * dp) + dp_rank) * tp + tp_rank
///
/// TP ranks are neighbours, so a node of `gpusPerNode` ranks holds whole TP groups (the
/// NVLink island of a real cluster). Expert parallelism folds onto the tp x dp ranks of
/// one pipeline stage: `ep` divides tp*dp, each EP rank holds experts/ep whole experts,
/// and expert data parallelism is tp*dp/ep. All arithmetic about ranks lives here.
public struct Topology: Sendable, Equatable {
    public let world: Int
    public let tp: Int
    public let pp: Int
    public let dp: Int
    public let ep: Int
    /// Data-parallel ranks ZeRO shards over (`--zero-group`, hybrid sharding): groups of this
    /// many consecutive data-parallel ranks each hold one copy of the sharded state, and the
    /// groups are replicas of one another. `dp` unless set.
    public let zeroGroup: Int

    public struct InvalidLayout: Error, CustomStringConvertible {
        public let description: String
    }

    /// Builds and validates the grid against the model it must hold. Throws one sentence
    /// naming the numbers for the first rule that fails.
    public init(world: Int, tp: Int = 1, pp: Int = 1, dp requestedDP: Int? = nil, ep: Int = 1, zeroGroup: Int? = nil,
                model: ModelConfig) throws {
        func fail(_ s: String) -> InvalidLayout { InvalidLayout(description: s) }
        guard world >= 1 else { throw fail("world size must be at least 1 (got \(world))") }
        guard tp >= 1 else { throw fail("--tp must be at least 1 (got \(tp))") }
        guard pp >= 1 else { throw fail("--pp must be at least 1 (got \(pp))") }
        guard ep >= 1 else { throw fail("--ep must be at least 1 (got \(ep))") }
        guard world % (tp * pp) == 0 else {
            throw fail("world size \(world) is not divisible by tp \(tp) x pp \(pp) = \(tp * pp)")
        }
        let dp = world / (tp * pp)
        if let requestedDP, requestedDP != dp {
            throw fail("--dp \(requestedDP) does not match world size \(world) / (tp \(tp) x pp \(pp)) = \(dp)")
        }
        guard model.layers >= pp else { throw fail("--pp \(pp) exceeds the number of layers \(model.layers)") }
        guard model.heads % tp == 0 else { throw fail("--heads \(model.heads) is not divisible by --tp \(tp)") }
        guard model.kvHeads % tp == 0 || tp % model.kvHeads == 0 else {
            throw fail("--kv-heads \(model.kvHeads) and --tp \(tp) must divide one another (KV heads are split or replicated over TP ranks)")
        }
        guard model.vocab % tp == 0 else { throw fail("vocabulary size \(model.vocab) is not divisible by --tp \(tp)") }
        guard model.ffnHidden % tp == 0 else { throw fail("FFN hidden size \(model.ffnHidden) is not divisible by --tp \(tp)") }
        guard model.experts % ep == 0 else { throw fail("--experts \(model.experts) is not divisible by --ep \(ep)") }
        guard (tp * dp) % ep == 0 else {
            throw fail("--ep \(ep) does not divide tp \(tp) x dp \(dp) = \(tp * dp), the ranks of one pipeline stage")
        }
        let group = zeroGroup ?? dp
        guard group >= 1, dp % group == 0 else {
            throw fail("--zero-group \(group) does not divide the \(dp) data-parallel ranks (world \(world) / (tp \(tp) x pp \(pp)))")
        }
        guard (group * tp) % ep == 0 else {
            throw fail("--zero-group \(group) x tp \(tp) = \(group * tp) is not divisible by --ep \(ep): the experts' shard groups must be whole expert-parallel groups")
        }
        self.world = world; self.tp = tp; self.pp = pp; self.dp = dp; self.ep = ep; self.zeroGroup = group
    }

    /// Expert-data-parallel ranks one ZeRO shard group of the experts spans (`expertDP` unless hybrid).
    public var expertZeroGroup: Int { zeroGroup * tp / ep }
    /// Copies of each ZeRO shard: the data-parallel groups of `zeroGroup` ranks (1 unless hybrid).
    public var zeroReplicas: Int { dp / zeroGroup }

    /// Ranks that share one expert's weights: expert data parallelism.
    public var expertDP: Int { tp * dp / ep }

    /// Grid coordinates of a rank.
    public struct Coordinates: Sendable, Equatable, CustomStringConvertible {
        public let tp: Int, dp: Int, pp: Int
        /// Index of the rank within its stage's tp x dp ranks (0 ..< tp*dp): the EP-folding index.
        public let stageIndex: Int
        public let ep: Int, edp: Int
        public var description: String { "tp\(tp) dp\(dp) pp\(pp) ep\(ep)" }
    }

    public func coordinates(of rank: Int) -> Coordinates {
        precondition(rank >= 0 && rank < world, "rank \(rank) outside world \(world)")
        let tpRank = rank % tp
        let dpRank = (rank / tp) % dp
        let ppRank = rank / (tp * dp)
        let stageIndex = dpRank * tp + tpRank
        // EP groups are contiguous blocks of `ep` stage ranks; expert-DP strides across them.
        return Coordinates(tp: tpRank, dp: dpRank, pp: ppRank, stageIndex: stageIndex,
                           ep: stageIndex % ep, edp: stageIndex / ep)
    }

    public func rank(tp t: Int, dp d: Int, pp p: Int) -> Int { ((p * dp) + d) * tp + t }

    /// The groups a rank belongs to, each as (color, key) for a communicator split:
    /// ranks with equal color form one group, ordered by key.
    public enum Group: String, CaseIterable, Sendable {
        case tp, pp, dp, ep, edp
        /// Hybrid sharding: ZeRO's shard group within the data-parallel (expert-data-parallel)
        /// group, and the replicas of one shard across those groups.
        case dpShard = "dp-shard", dpReplica = "dp-replica", edpShard = "edp-shard", edpReplica = "edp-replica"
    }

    public func split(_ group: Group, rank: Int) -> (color: Int, key: Int) {
        let c = coordinates(of: rank)
        switch group {
        case .tp: return (c.pp * dp + c.dp, c.tp)
        case .dp: return (c.pp * tp + c.tp, c.dp)
        case .pp: return (c.dp * tp + c.tp, c.pp)
        case .ep: return (c.pp * (tp * dp / ep) + c.edp, c.ep)
        case .edp: return (c.pp * ep + c.ep, c.edp)
        case .dpShard: return ((c.pp * tp + c.tp) * zeroReplicas + c.dp / zeroGroup, c.dp % zeroGroup)
        case .dpReplica: return ((c.pp * tp + c.tp) * zeroGroup + c.dp % zeroGroup, c.dp / zeroGroup)
        case .edpShard: return ((c.pp * ep + c.ep) * zeroReplicas + c.edp / expertZeroGroup, c.edp % expertZeroGroup)
        case .edpReplica: return ((c.pp * ep + c.ep) * expertZeroGroup + c.edp % expertZeroGroup, c.edp / expertZeroGroup)
        }
    }

    /// The ranks of `group` that contain `rank`, in group order (by the split key).
    public func members(_ group: Group, of rank: Int) -> [Int] {
        let c = coordinates(of: rank)
        let stageBase = c.pp * tp * dp
        switch group {
        case .tp: return (0..<tp).map { self.rank(tp: $0, dp: c.dp, pp: c.pp) }
        case .dp: return (0..<dp).map { self.rank(tp: c.tp, dp: $0, pp: c.pp) }
        case .pp: return (0..<pp).map { self.rank(tp: c.tp, dp: c.dp, pp: $0) }
        case .ep: return (0..<ep).map { stageBase + c.edp * ep + $0 }           // stage indices edp*ep ..< edp*ep + ep
        case .edp: return (0..<(tp * dp / ep)).map { stageBase + $0 * ep + c.ep }  // stage indices with the same ep index
        case .dpShard: return (0..<zeroGroup).map { self.rank(tp: c.tp, dp: c.dp / zeroGroup * zeroGroup + $0, pp: c.pp) }
        case .dpReplica: return (0..<zeroReplicas).map { self.rank(tp: c.tp, dp: $0 * zeroGroup + c.dp % zeroGroup, pp: c.pp) }
        case .edpShard: return (0..<expertZeroGroup).map { stageBase + (c.edp / expertZeroGroup * expertZeroGroup + $0) * ep + c.ep }
        case .edpReplica: return (0..<zeroReplicas).map { stageBase + ($0 * expertZeroGroup + c.edp % expertZeroGroup) * ep + c.ep }
        }
    }

    public func size(of group: Group) -> Int {
        switch group {
        case .tp: return tp; case .pp: return pp; case .dp: return dp; case .ep: return ep; case .edp: return expertDP
        case .dpShard: return zeroGroup; case .edpShard: return expertZeroGroup; case .dpReplica, .edpReplica: return zeroReplicas
        }
    }
}
