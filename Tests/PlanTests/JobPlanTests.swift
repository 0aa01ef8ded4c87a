import Foundation
import XCTest
import Plan
import Schedule
import Model

/// Bad input that needs no MPI, checked in-process against the one place that validates it:
/// building the `JobPlan`. (A few real `mpirun` cases in IntegrationTests/BadInputTests keep
/// the exit-status and no-hang contract.)
final class JobPlanTests: XCTestCase {
    var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    func tiny() throws -> RunConfig { try ConfigFile.load(root + "/configs/tiny.json") }

    /// The message of the error `body` throws ("" when it does not throw).
    func message(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "" } catch { return String(describing: error) }
    }

    func assertRejected(_ config: RunConfig, world: Int, mentions: [String], purpose: JobPlan.Purpose = .training,
                        file: StaticString = #filePath, line: UInt = #line) {
        let m = message { try JobPlan(config: config, world: world, purpose: purpose) }
        XCTAssertFalse(m.isEmpty, "accepted, but should be rejected mentioning \(mentions)", file: file, line: line)
        for s in mentions { XCTAssertTrue(m.contains(s), "message should mention \(s): \(m)", file: file, line: line) }
    }

    func testInvalidGrids() throws {
        var c = try tiny()
        c.tp = 3
        assertRejected(c, world: 4, mentions: ["world size 4", "tp 3"])
        c = try tiny(); c.pp = 2; c.model.layers = 1
        assertRejected(c, world: 2, mentions: ["--pp", "(got 2)"])
        c = try tiny(); c.tp = 2; c.model.heads = 3; c.model.dModel = 66
        assertRejected(c, world: 2, mentions: ["--heads 3", "--tp 2"])
        c = try tiny(); c.ep = 3
        assertRejected(c, world: 2, mentions: ["--experts 4", "--ep 3"])
        c = try tiny(); c.ep = 4
        assertRejected(c, world: 2, mentions: ["--ep 4", "tp 1 x dp 2"])
        c = try tiny(); c.ep = 2
        assertRejected(c, world: 3, mentions: ["--ep 2", "tp 1 x dp 3"])
        c = try tiny(); c.tp = 3; c.model.heads = 4
        assertRejected(c, world: 3, mentions: ["--heads 4", "--tp 3"])
        c = try tiny(); c.dp = 3
        assertRejected(c, world: 2, mentions: ["--dp 3"])
    }

    func testBatchThatDoesNotDivide() throws {
        var c = try tiny()
        c.globalBatch = 10; c.microBatchSize = 4; c.microBatches = nil
        assertRejected(c, world: 1, mentions: ["--global-batch 10", "--micro-batch-size 4"])
    }

    func testInvalidPipelineInput() throws {
        var c = try tiny()
        c.model.layers = 4; c.pp = 4; c.microBatches = 6; c.microBatchSize = nil; c.globalBatch = 12; c.schedule = .interleaved
        c.virtualStages = 1
        assertRejected(c, world: 4, mentions: ["interleaved", "6"])
        c = try tiny(); c.pp = 2; c.ppLayers = [1, 2]
        assertRejected(c, world: 2, mentions: ["--pp-layers 1,2", "sums to 3"])
        c = try tiny(); c.pp = 2; c.virtualStages = 2
        assertRejected(c, world: 2, mentions: ["--virtual-stages 2", "interleaved"])
        c = try tiny(); c.microBatches = 251; c.microBatchSize = 1; c.globalBatch = nil
        assertRejected(c, world: 1, mentions: ["--micro-batches 251", "project"])
        // The same schedule is fine to project: a projection sends no messages.
        XCTAssertNoThrow(try JobPlan(config: c, world: 1, purpose: .projection))
        c = try tiny(); c.model.tieEmbeddings = true; c.pp = 2
        assertRejected(c, world: 2, mentions: ["tied embeddings", "--pp 2"])
        c = try tiny(); c.pp = 2; c.zero = 2; c.schedule = .zbH1
        assertRejected(c, world: 2, mentions: ["--zero 2", "zb-h1"])
        c = try tiny(); c.zero = 4
        assertRejected(c, world: 2, mentions: ["--zero", "4"])
        c = try tiny(); c.pp = 2; c.zero = 3; c.schedule = .zbH1
        assertRejected(c, world: 2, mentions: ["--zero 3", "zb-h1"])
        c = try tiny(); c.zero = 3; c.model.tieEmbeddings = true
        assertRejected(c, world: 2, mentions: ["--zero 3", "tied embeddings"])
        c = try tiny(); c.zero = 1; c.zeroGroup = 3
        assertRejected(c, world: 4, mentions: ["--zero-group 3", "4 data-parallel ranks"])
        c = try tiny(); c.zero = 0; c.zeroGroup = 2
        assertRejected(c, world: 4, mentions: ["--zero-group 2", "--zero 0"])
        c = try tiny(); c.zero = 1; c.zeroGroup = 2; c.overlapGradReduce = true
        assertRejected(c, world: 4, mentions: ["--zero-group 2", "--overlap-grad-reduce"])
        c = try tiny(); c.zero = 2; c.model.tieEmbeddings = true; c.schedule = .interleaved; c.virtualStages = 2
        assertRejected(c, world: 1, mentions: ["--zero 2", "tied embeddings", "--virtual-stages 2"])
    }

    /// The memory plan's bytes per rank follow the ZeRO paper's per-parameter accounting in
    /// mixed precision (section 3.1 and 5: 2 + 2 + 12 bytes; stage 1 divides the 12 by the
    /// data-parallel degree, stage 2 the 2 + 12 of gradients and optimizer state, stage 3 all
    /// 16), plus what stages 2 and 3 hold while a pass runs: the gradient buckets open at once
    /// before they are reduced, and (stage 3) the units' parameters gathered at once: one, or
    /// with the prefetch a unit and the next.
    func testMemoryPlanFollowsTheZeroStageFormulas() throws {
        for (world, tie, prefetch) in [(4, false, false), (4, false, true), (2, true, false)] {
            var bytesPerParameter: [Double] = []
            var pad = 0.0   // the padding that makes the regions split evenly, per parameter
            var openBuckets = 0.0, gatheredUnits = 0.0, psiOfRank0 = 1.0
            for zero in 0...(tie ? 2 : 3) {   // ZeRO-3 does not take tied embeddings
                var c = try tiny()
                c.zero = zero; c.precision = .bf16; c.model.tieEmbeddings = tie; c.overlapParamGather = prefetch && zero >= 1
                let job = try JobPlan(config: c, world: world)
                XCTAssertEqual(job.topology.dp, world)
                let layout = job.placement(of: 0).layout
                let psi = Double(layout.specs.reduce(0) { $0 + $1.count })
                let padded = Double(layout.totalCount), nd = Double(world)
                if zero == 1 { pad = (padded - psi) / psi }
                psiOfRank0 = psi
                XCTAssertEqual(job.memory.roles.count, 1, "data-parallel replicas hold the same")
                let b = try XCTUnwrap(job.memory.roles.first).breakdown
                let size = { (b: GradientBucket) in Double(b.dense.count + b.expert.count) }
                if zero == 3 {
                    // The tiny model is one chunk: embedding, its layers, head, read in that order.
                    let units = [GradientUnit.embedding] + (0..<c.model.layers).map { GradientUnit.layer($0) } + [.head]
                    let sizes = units.map { u in size(layout.gradientBuckets.first { $0.unit == u }!) }
                    gatheredUnits = prefetch ? zip(sizes, sizes.dropFirst()).map { $0 + $1 }.max()! : sizes.max()!
                    XCTAssertEqual(b.parameters, 2 * (padded / nd + gatheredUnits))
                } else {
                    XCTAssertEqual(b.parameters, 2 * psi)
                }
                switch zero {
                case 0:
                    XCTAssertEqual(b.gradients, 2 * psi)
                    XCTAssertEqual(b.optimizerState, 12 * psi)
                case 1:
                    XCTAssertEqual(b.gradients, 2 * psi)
                    XCTAssertEqual(b.optimizerState, 12 * padded / nd)
                default:
                    let open = Double(layout.peakUnitGradientFloats(tiedEmbeddings: tie))
                    XCTAssertEqual(b.gradients, 2 * (padded / nd + open))
                    openBuckets = open
                    XCTAssertEqual(b.optimizerState, 12 * padded / nd)
                    // The open buckets are one unit, or with tied embeddings the embedding and one more.
                    let embedding = size(try XCTUnwrap(layout.gradientBuckets.first { $0.unit == .embedding }))
                    let others = layout.gradientBuckets.filter { $0.unit != .embedding }.map(size).max()!
                    XCTAssertEqual(open, tie ? embedding + others : max(embedding, others))
                }
                bytesPerParameter.append((b.parameters + b.gradients + b.optimizerState) / psi)
            }
            XCTAssertEqual(bytesPerParameter[0], 16, accuracy: 1e-9)
            XCTAssertEqual(bytesPerParameter[1], 4 + 12 / Double(world) * (1 + pad), accuracy: 1e-9)
            XCTAssertEqual(bytesPerParameter[2], 2 + 14 / Double(world) * (1 + pad) + 2 * openBuckets / psiOfRank0, accuracy: 1e-9)
            if !tie {
                XCTAssertEqual(bytesPerParameter[3], 16 / Double(world) * (1 + pad) + 2 * (openBuckets + gatheredUnits) / psiOfRank0, accuracy: 1e-9)
            }
            // (Stage 2 saves only where the shards' savings exceed the open buckets: not on two ranks
            // with tied embeddings, where one 2-layer model's embedding and layer buckets are most of it.)
            print(String(format: "world %d%@%@: bytes per parameter, stage 0 %.3f, stage 1 %.3f, stage 2 %.3f (2 + 14/Nd = %.3f, plus the open buckets)%@",
                         world, tie ? ", tied embeddings" : "", prefetch ? ", prefetch" : "", bytesPerParameter[0], bytesPerParameter[1],
                         bytesPerParameter[2], 2 + 14 / Double(world),
                         tie ? "" : String(format: ", stage 3 %.3f (16/Nd = %.3f, plus the open buckets and gathered units)", bytesPerParameter[3], 16 / Double(world))))
        }
    }

    /// Hybrid sharding divides the sharded state by the group, not by every data-parallel rank.
    func testHybridShardingDividesByTheGroup() throws {
        for zero in 1...3 {
            var c = try tiny()
            c.zero = zero; c.precision = .bf16; c.zeroGroup = 2
            let job = try JobPlan(config: c, world: 4)
            XCTAssertEqual(job.topology.dp, 4)
            XCTAssertEqual(job.topology.zeroReplicas, 2)
            let layout = job.placement(of: 0).layout
            let padded = Double(layout.totalCount), psi = Double(layout.specs.reduce(0) { $0 + $1.count })
            let b = try XCTUnwrap(job.memory.roles.first).breakdown
            XCTAssertEqual(job.memory.roles.count, 1)
            XCTAssertEqual(b.optimizerState, 12 * padded / 2, "zero \(zero)")
            if zero >= 2 {
                XCTAssertEqual(b.gradients, 2 * (padded / 2 + Double(layout.peakUnitGradientFloats(tiedEmbeddings: false))), "zero \(zero)")
            } else {
                XCTAssertEqual(b.gradients, 2 * psi)
            }
            XCTAssertEqual(job.placement(of: 1).heldValues, zero == 3 ? Placement.zeroShards(layout, job.topology, job.topology.coordinates(of: 1)) : [0..<layout.totalCount])
            XCTAssertEqual(job.placement(of: 2).heldValues, job.placement(of: 0).heldValues, "rank 2 is rank 0's replica")
        }
    }

    func testOutOfMemoryIsRefusedForTrainingOnly() throws {
        var c = try tiny()
        c.model.dModel = 8192; c.model.heads = 64; c.model.layers = 64; c.model.ffnHidden = 32768
        assertRejected(c, world: 1, mentions: ["out of memory", "--ignore-oom"])
        XCTAssertNoThrow(try JobPlan(config: c, world: 1, purpose: .projection))
        c.ignoreOOM = true
        XCTAssertNoThrow(try JobPlan(config: c, world: 1))
    }

    /// Sizes whose exact counts would overflow `Int` are refused before any is computed.
    func testHugeModelsAreRefusedNotTrapped() throws {
        var c = try tiny()
        c.model.dModel = 1 << 20; c.model.heads = 1 << 10; c.model.ffnHidden = 1 << 20; c.model.experts = 4096
        c.model.layers = 1024; c.model.topK = 2
        assertRejected(c, world: 1, mentions: ["too large", "parameters"], purpose: .projection)
        c = try tiny()
        c.model.seqLen = 1 << 20; c.microBatchSize = 1 << 20; c.globalBatch = 1 << 20; c.microBatches = nil
        assertRejected(c, world: 1, mentions: ["too large", "--micro-batch-size"], purpose: .projection)
        assertRejected(try tiny(), world: Int.max, mentions: ["world size", "\(Int.max)"])
    }

    /// Every range check names the flag and the value, including NaN and infinity.
    func testRangesNameFlagAndValue() throws {
        let cases: [(WritableKeyPath<RunConfig, Double>, Double, String)] = [
            (\.lr, .nan, "--lr"), (\.lr, .infinity, "--lr"), (\.weightDecay, -1, "--weight-decay"),
            (\.model.capacityFactor, .infinity, "--capacity-factor"), (\.model.auxLossCoef, .nan, "--aux-loss-coef"),
            (\.model.zLossCoef, 1e300, "--z-loss-coef"), (\.model.routerInitScale, 0, "--router-init-scale"),
            (\.clockScale, .nan, "--clock-scale"), (\.slowFactor, .infinity, "--slow-factor"),
            (\.restartCostS, -1, "--restart-cost-s"), (\.model.initStd, 1e300, "init_std"), (\.model.normEps, 0, "norm_eps"),
        ]
        for (path, value, flag) in cases {
            var c = try tiny()
            c[keyPath: path] = value
            assertRejected(c, world: 1, mentions: [flag, "(got \(value))"])
        }
        let ints: [(WritableKeyPath<RunConfig, Int>, Int, String)] = [
            (\.steps, Int.max, "--steps"), (\.steps, 0, "--steps"), (\.model.seqLen, Int.max, "--seq-len"),
            (\.model.layers, Int.max, "--layers"), (\.model.experts, Int.max, "--experts"), (\.model.ffnHidden, -1, "--ffn-hidden"),
            (\.gpusPerNode, 0, "--gpus-per-node"), (\.logEvery, 0, "--log-every"), (\.tp, Int.max, "--tp"),
            (\.virtualStages, 0, "--virtual-stages"), (\.checkpointEvery, -1, "--checkpoint-every"),
        ]
        for (path, value, flag) in ints {
            var c = try tiny()
            c[keyPath: path] = value
            assertRejected(c, world: 1, mentions: [flag, "(got \(value))"])
        }
    }

    /// A plan is built from the configuration alone: two builds agree, and every consumer's
    /// placement of a rank comes from it.
    func testPlanIsAValue() throws {
        var c = try tiny()
        c.tp = 2; c.pp = 2; c.model.layers = 4
        let a = try JobPlan(config: c, world: 8), b = try JobPlan(config: c, world: 8)
        XCTAssertEqual(a.topology, b.topology)
        XCTAssertEqual(a.batch, b.batch)
        XCTAssertEqual(a.stages, b.stages)
        XCTAssertEqual(a.topology.dp, 2)
        for rank in 0..<8 {
            let p = a.placement(of: rank)
            XCTAssertEqual(p.coordinates, a.topology.coordinates(of: rank))
            XCTAssertEqual(p.shard.layers, a.stages.heldLayers(rank: p.coordinates.pp))
        }
    }

    /// Validation writes nothing: output paths are checked, not created.
    func testOutputPathsAreCheckedNotCreated() throws {
        let dir = NSTemporaryDirectory() + "jobplan-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = try tiny()
        c.summaryJSON = dir + "/missing/s.json"
        assertRejected(c, world: 1, mentions: ["--summary-json", "does not exist"])
        c = try tiny()
        try "x".write(toFile: dir + "/file", atomically: true, encoding: .utf8)
        c.dumpDir = dir + "/file"; c.dumpStep = 1
        assertRejected(c, world: 1, mentions: ["--dump-dir", "not a directory"])
        c = try tiny()
        c.checkpointDir = dir + "/file"; c.checkpointEvery = 2
        assertRejected(c, world: 1, mentions: ["--checkpoint-dir", "not a directory"])
        c = try tiny()
        c.checkpointDir = dir + "/run"; c.checkpointEvery = 2
        XCTAssertNoThrow(try JobPlan(config: c, world: 1))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["file"])
    }
}
