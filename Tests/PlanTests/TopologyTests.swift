import XCTest
import Model
import Plan

final class TopologyTests: XCTestCase {
    var model: ModelConfig {
        var m = ModelConfig()
        m.layers = 8; m.heads = 8; m.kvHeads = 1; m.dModel = 64; m.experts = 16; m.ffnHidden = 64
        return m
    }

    /// rank = ((pp * dp) + dp_rank) * tp + tp_rank for every grid of up to 16 ranks.
    func testRankArithmeticRoundTrips() throws {
        for world in 1...16 {
            for tp in [1, 2, 4, 8] where world % tp == 0 {
                for pp in [1, 2, 4, 8] where world % (tp * pp) == 0 {
                    let t = try Topology(world: world, tp: tp, pp: pp, model: model)
                    XCTAssertEqual(t.dp, world / (tp * pp))
                    for r in 0..<world {
                        let c = t.coordinates(of: r)
                        XCTAssertEqual(t.rank(tp: c.tp, dp: c.dp, pp: c.pp), r)
                        XCTAssertEqual(r, ((c.pp * t.dp) + c.dp) * tp + c.tp)
                    }
                }
            }
        }
    }

    /// Each kind of group partitions the world into groups of the right size, and members agree.
    func testGroupsPartitionTheWorld() throws {
        let t = try Topology(world: 16, tp: 2, pp: 2, ep: 4, model: model)
        XCTAssertEqual(t.dp, 4)
        XCTAssertEqual(t.expertDP, 2)
        for g in Topology.Group.allCases {
            var seen = Set<Int>()
            for r in 0..<16 {
                let m = t.members(g, of: r)
                XCTAssertEqual(m.count, t.size(of: g), "\(g)")
                XCTAssertTrue(m.contains(r))
                for o in m { XCTAssertEqual(t.members(g, of: o), m, "\(g) membership must be symmetric") }
                seen.insert(m[0])
            }
            XCTAssertEqual(seen.count, 16 / t.size(of: g), "\(g) group count")
        }
        // TP neighbours are consecutive ranks; a pipeline group strides by tp*dp.
        XCTAssertEqual(t.members(.tp, of: 5), [4, 5])
        XCTAssertEqual(t.members(.pp, of: 1), [1, 9])
        XCTAssertEqual(t.members(.dp, of: 0), [0, 2, 4, 6])
        // EP groups live inside one pipeline stage.
        for r in 0..<16 { XCTAssertTrue(t.members(.ep, of: r).allSatisfy { t.coordinates(of: $0).pp == t.coordinates(of: r).pp }) }
    }

    /// The arithmetic member lists agree with the split colours and keys the communicators use,
    /// with and without hybrid sharding (ZeRO's shard and replica groups).
    func testMembersAgreeWithSplitColours() throws {
        for (world, tp, pp, ep, zeroGroup) in [(16, 2, 2, 4, nil), (24, 2, 3, 2, nil), (8, 1, 1, 8, nil), (32, 4, 2, 16, nil), (12, 2, 1, 2, nil),
                                               (12, 1, 3, 4, nil), (16, 2, 2, 4, 2), (24, 2, 3, 2, 1), (12, 2, 1, 2, 3), (32, 4, 1, 8, 2)] as [(Int, Int, Int, Int, Int?)] {
            let t = try Topology(world: world, tp: tp, pp: pp, ep: ep, zeroGroup: zeroGroup, model: model)
            if zeroGroup != nil {
                XCTAssertEqual(t.members(.dpShard, of: 0).count * t.members(.dpReplica, of: 0).count, t.dp)
                XCTAssertEqual(t.members(.edpShard, of: 0).count * t.members(.edpReplica, of: 0).count, t.expertDP)
                // A shard group of the experts spans exactly the data-parallel ranks of its dense shard group.
                for r in 0..<world {
                    XCTAssertEqual(Set(t.members(.edpShard, of: r).map { t.coordinates(of: $0).dp / t.zeroGroup }), [t.coordinates(of: r).dp / t.zeroGroup])
                }
            }
            for g in Topology.Group.allCases {
                for r in 0..<world {
                    let mine = t.split(g, rank: r)
                    let bySplit = (0..<world).filter { t.split(g, rank: $0).color == mine.color }
                        .sorted { t.split(g, rank: $0).key < t.split(g, rank: $1).key }
                    XCTAssertEqual(t.members(g, of: r), bySplit, "\(g) of rank \(r) in world \(world) tp \(tp) pp \(pp) ep \(ep) zero group \(String(describing: zeroGroup))")
                }
            }
        }
    }

    func testInvalidLayoutsNameTheNumbers() {
        func message(_ f: () throws -> Topology) -> String {
            do { _ = try f(); return "" } catch { return String(describing: error) }
        }
        var m = model
        XCTAssertTrue(message { try Topology(world: 16, tp: 3, model: m) }.contains("16"))
        XCTAssertTrue(message { try Topology(world: 16, tp: 3, model: m) }.contains("tp 3"))
        XCTAssertTrue(message { try Topology(world: 9, pp: 9, model: m) }.contains("--pp 9"))
        m.heads = 6; m.dModel = 60
        XCTAssertTrue(message { try Topology(world: 4, tp: 4, model: m) }.contains("--heads 6"))
        XCTAssertTrue(message { try Topology(world: 2, ep: 3, model: model) }.contains("--experts 16"))
        XCTAssertTrue(message { try Topology(world: 2, ep: 4, model: model) }.contains("--ep 4"))
        XCTAssertTrue(message { try Topology(world: 4, tp: 2, dp: 3, model: model) }.contains("--dp 3"))
        var v = model; v.vocab = 250
        XCTAssertTrue(message { try Topology(world: 4, tp: 4, model: v) }.contains("250"))
        var kv = model; kv.heads = 12; kv.kvHeads = 3; kv.dModel = 48
        XCTAssertTrue(message { try Topology(world: 4, tp: 4, model: kv) }.contains("--kv-heads 3"))
    }
}
