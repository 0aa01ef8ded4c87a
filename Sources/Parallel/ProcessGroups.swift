import Comm
import Plan

/// The communicators of one rank, built once from the topology with `MPI_Comm_split`
/// and immutable afterwards.
public struct ProcessGroups: Sendable {
    public let topology: Topology
    public let world: Communicator
    public let tp: Communicator
    public let pp: Communicator
    public let dp: Communicator
    public let ep: Communicator
    public let edp: Communicator
    /// The groups ZeRO shards over: `dp` and `edp`, or under hybrid sharding (`--zero-group`)
    /// their sub-groups; and the replicas of each shard (nil when there is one copy).
    public let zeroDP: Communicator, zeroEDP: Communicator
    public let replicaDP: Communicator?, replicaEDP: Communicator?

    public var rank: Int { world.rank }
    public var coordinates: Topology.Coordinates { topology.coordinates(of: world.rank) }

    public init(world: Communicator, topology: Topology) {
        precondition(world.size == topology.world, "communicator size \(world.size) differs from topology world \(topology.world)")
        func make(_ g: Topology.Group) -> Communicator {
            let s = topology.split(g, rank: world.rank)
            return world.split(color: s.color, key: s.key, name: g.rawValue)
        }
        self.topology = topology
        self.world = world
        tp = make(.tp); pp = make(.pp); dp = make(.dp); ep = make(.ep); edp = make(.edp)
        let hybrid = topology.zeroReplicas > 1   // the same on every rank: every rank splits or none
        zeroDP = hybrid ? make(.dpShard) : dp
        zeroEDP = hybrid ? make(.edpShard) : edp
        replicaDP = hybrid ? make(.dpReplica) : nil
        replicaEDP = hybrid ? make(.edpReplica) : nil
    }
}
