/// Emulated durations: a roofline for kernels and alpha-beta ring formulas for messages.
///
/// Kernels: max(FLOPs / (peak x eff), bytes / (HBM bandwidth x eff)) + launch overhead.
/// Messages over a link class (alpha latency, beta bandwidth per direction), n ranks,
/// `bytes` the full buffer one rank holds:
///
///     point-to-point   alpha + bytes / beta
///     all-reduce       2(n-1)/n x bytes/beta + 2(n-1) x alpha      (ring: reduce-scatter + all-gather)
///     reduce-scatter   (n-1)/n x bytes/beta + (n-1) x alpha        (bytes = the full, unscattered buffer)
///     all-gather       (n-1)/n x bytes/beta + (n-1) x alpha        (bytes = the full, gathered buffer)
///     all-to-all       (n-1)/n x bytes/beta + (n-1) x alpha        (pairwise exchange; bytes = what one rank sends)
///     broadcast        bytes/beta + (n-1) x alpha                  (pipelined ring)
///     barrier          2 ceil(log2 n) x alpha
public struct CostModel: Sendable {
    public let device: DeviceProfile
    /// Bytes of one element in the emulated precision (2 for bf16 activations and gradients).
    public let bytesPerElement: Double
    public let links: LinkModel

    public init(device: DeviceProfile, bytesPerElement: Double, links: LinkModel) {
        self.device = device; self.bytesPerElement = bytesPerElement; self.links = links
    }

    /// Emulated duration of one kernel that executes `flops` and moves `elements` through HBM.
    public func kernel(flops: Double, elements: Double) -> Double {
        let compute = flops / (device.peakFLOPS * device.flopsEfficiency)
        let memory = elements * bytesPerElement / (device.memoryBandwidth * device.memoryEfficiency)
        return max(compute, memory) + device.kernelLaunchSeconds
    }

    public func pointToPoint(bytes: Double, link: LinkClass) -> Double { link.seconds(bytes) }

    public enum Collective: Sendable { case allReduce, reduceScatter, allGather, allToAll, broadcast, barrier }

    public func collective(_ kind: Collective, bytes: Double, ranks n: Int, link: LinkClass) -> Double {
        guard n > 1 else { return 0 }
        let steps = Double(n - 1), share = Double(n - 1) / Double(n)
        let transfer = link.beta.isInfinite ? 0 : bytes / link.beta
        switch kind {
        case .allReduce: return 2 * share * transfer + 2 * steps * link.alpha
        case .reduceScatter, .allGather, .allToAll: return share * transfer + steps * link.alpha
        case .broadcast: return transfer + steps * link.alpha
        case .barrier:
            var rounds = 0
            while (1 << rounds) < n { rounds += 1 }
            return 2 * Double(rounds) * link.alpha
        }
    }
}

/// Which link class joins a set of ranks: intra-node when all sit on one node of
/// `gpusPerNode` consecutive ranks, else the slower inter-node class.
public struct LinkModel: Sendable {
    public let intraNode: LinkClass
    public let interNode: LinkClass
    public let gpusPerNode: Int

    public init(intraNode: LinkClass, interNode: LinkClass, gpusPerNode: Int) {
        self.intraNode = intraNode; self.interNode = interNode; self.gpusPerNode = max(gpusPerNode, 1)
    }

    public static func ideal(gpusPerNode: Int) -> LinkModel { LinkModel(intraNode: .ideal, interNode: .ideal, gpusPerNode: gpusPerNode) }

    public func node(of rank: Int) -> Int { rank / gpusPerNode }

    /// The slowest link class used by a group of world ranks.
    public func link(for worldRanks: [Int]) -> LinkClass {
        guard let first = worldRanks.first else { return intraNode }
        let n = node(of: first)
        return worldRanks.allSatisfy { node(of: $0) == n } ? intraNode : interNode
    }
}
