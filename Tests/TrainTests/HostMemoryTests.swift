import XCTest
import Resilience

/// Where `--checkpoint-mode memory` sends each rank's copy: a permutation of the ranks, on
/// another host exactly when the world spans at least two full hosts.
final class HostMemoryTests: XCTestCase {
    func testPeersArePermutationsAndCrossHostsOnlyForWholeHosts() {
        for world in 1...12 {
            for gpn in 1...8 {
                let m = HostMemory(runDirectory: "/tmp/run", gpusPerNode: gpn, world: world)
                let peers = (0..<world).map(m.peer(of:))
                XCTAssertEqual(Set(peers).count, world, "world \(world), gpn \(gpn): \(peers)")
                for r in 0..<world { XCTAssertEqual(m.source(of: m.peer(of: r)), r, "world \(world), gpn \(gpn), rank \(r)") }
                XCTAssertEqual(m.copiesCrossHosts, world >= 2 * gpn, "world \(world), gpn \(gpn): \(peers)")
            }
        }
        // 3 ranks on hosts of 2 (a world shrunk by a lost slot): rank 1's copy stays on host 0.
        let m = HostMemory(runDirectory: "/tmp/run", gpusPerNode: 2, world: 3)
        XCTAssertEqual((0..<3).map(m.peer(of:)), [2, 0, 1])
        XCTAssertEqual(m.hosts, 2)
        XCTAssertFalse(m.copiesCrossHosts)
    }

    /// One run directory, one root, whatever the spelling of its path; two directories, two roots.
    func testRootIsPerRunDirectory() {
        XCTAssertEqual(HostMemory.root(runDirectory: "/tmp/a/run"), HostMemory.root(runDirectory: "/tmp/a/./b/../run"))
        XCTAssertNotEqual(HostMemory.root(runDirectory: "/tmp/a/run"), HostMemory.root(runDirectory: "/tmp/b/run"))
        XCTAssertTrue(HostMemory.root(runDirectory: "/tmp/a/run").hasPrefix(HostMemory.base + "/"))
    }
}
