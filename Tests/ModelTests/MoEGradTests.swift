import Model
import Tensor
import TestSupport
import XCTest

/// MoE layer backward (x, router, w_up, w_down) against central differences of
///
///     L = sum_i r_i y_i + auxCoef * routing.auxSum / scale.sequences + zCoef * routing.zSum / scale.tokens
///
/// in Double: the aux and z losses enter training only through Router.backward, which scales
/// them by auxCoef * E / (sequences * T) per probability and zCoef * 2 / tokens per lse.
/// Top-k choice and capacity drops are discontinuous: a coordinate whose +eps or -eps
/// evaluation routes differently from the base point (choice or kept differs) is skipped and
/// counted, and at least 90% of the coordinates of every tensor must be checked.
final class MoEGradTests: XCTestCase {
    static let minChecked = 0.9

    func config(topK: Int = 2, capacityFactor: Double, aux: Double, z: Double) -> ModelConfig {
        var c = ModelConfig()
        c.dModel = 8; c.experts = 4; c.topK = topK; c.ffnHidden = 6; c.seqLen = 8
        c.capacityFactor = capacityFactor; c.auxLossCoef = aux; c.zLossCoef = z
        return c
    }

    func testGradientsUnlimitedCapacityWithAuxAndZLoss() {
        let routing = check("moe[K2 unlimited aux z]", config: config(capacityFactor: 0, aux: 0.5, z: 0.25), seed: 200)
        XCTAssertEqual(routing.dropped, 0)
    }

    func testGradientsWithBindingCapacity() {
        // capacity = ceil(0.5 * T * K / E) = 2 per expert per sequence, against T * K = 16 assignments.
        let c = config(capacityFactor: 0.5, aux: 0.5, z: 0.25)
        XCTAssertEqual(c.expertCapacity, 2)
        let routing = check("moe[K2 capacity 2 aux z]", config: c, seed: 300)
        XCTAssertGreaterThan(routing.dropped, 0, "capacity should drop assignments in this test")
        print("moe[K2 capacity 2]: dropped \(routing.dropped) of \(routing.tokens * routing.k) assignments, load \(routing.load)")
    }

    func testGradientsTopOneAndTopThree() {
        check("moe[K1 unlimited aux z]", config: config(topK: 1, capacityFactor: 0, aux: 0.5, z: 0.25), seed: 400)
        let routing = check("moe[K3 capacity aux z]", config: config(topK: 3, capacityFactor: 1.0, aux: 0.5, z: 0.25), seed: 500)
        XCTAssertGreaterThan(routing.dropped, 0, "capacity 6 of 24 assignments per sequence should drop some")
        print("moe[K3 capacity]: dropped \(routing.dropped) of \(routing.tokens * routing.k) assignments")
    }

    /// With r = 0 the objective is the load-balancing loss alone: checks its scaling exactly.
    func testLoadBalancingLossGradientAlone() {
        check("moe[aux only]", config: config(capacityFactor: 0, aux: 1, z: 0), seed: 600, outputWeight: 0)
    }

    /// With r = 0 the objective is the router z-loss alone.
    func testZLossGradientAlone() {
        check("moe[z only]", config: config(capacityFactor: 0, aux: 0, z: 1), seed: 700, outputWeight: 0)
    }

    /// Builds a random layer, runs forward/backward with dy = outputWeight * r, and checks every
    /// coordinate of x, the router and (when they get a gradient) the experts. Returns the base routing.
    @discardableResult
    func check(_ label: String, config c: ModelConfig, seed: UInt64, outputWeight: Float = 1,
               file: StaticString = #filePath, line: UInt = #line) -> Routing {
        XCTAssertNoThrow(try c.validate(), file: file, line: line)
        let B = 2, T = c.seqLen, n = B * T, C = c.dModel, E = c.experts, F = c.ffnHidden
        let options = MoE.Options(config: c)
        // The step's totals, not this micro-batch's: the backward must scale by these. tokens is
        // deliberately not sequences * T, so that the aux (per sequence) and z (per token)
        // normalisations are each pinned to the documented one.
        let scale = LossScale(tokens: 48, sequences: 5)
        // Router std 0.7 on unit inputs: logits of std ~2, so top-k margins are wide.
        let w = MoE.Weights(router: randomTensor([E, C], seed: seed + 1, std: 0.7),
                            wUp: randomTensor([E, F, C], seed: seed + 2, std: 0.5),
                            wDown: randomTensor([E, C, F], seed: seed + 3, std: 0.3))
        let x = randomTensor([n, C], seed: seed + 4)
        let r = randomTensor([n, C], seed: seed + 5, std: outputWeight)

        let cache = MoE.forward(x, w, options: options, parallel: SingleRank(), y: Tensor(zeros: [n, C]))
        let base = cache.routing
        let dw = MoE.Weights(router: Tensor(zeros: [E, C]), wUp: Tensor(zeros: [E, F, C]), wDown: Tensor(zeros: [E, C, F]))
        let dx = Tensor(zeros: [n, C])
        MoE.backward(cache, w, options: options, parallel: SingleRank(), scale: scale, dy: r, dw: dw, dx: dx, accumulate: false)

        let auxCoef = Double(options.auxCoef), zCoef = Double(options.zCoef)
        func objective() -> Double? {
            let y = Tensor(zeros: [n, C])
            let routing = MoE.forward(x, w, options: options, parallel: SingleRank(), y: y).routing
            guard routing.choice == base.choice, routing.kept == base.kept else { return nil }
            return weightedSum(y, r) + auxCoef * routing.auxSum / Double(scale.sequences)
                + zCoef * routing.zSum / Double(scale.tokens)
        }
        // Tolerance 1e-2, floor 2e-2 * max|grad| (fp32 round-off, see GradCheck.swift). eps 1e-2 (3e-3 for
        // w_up, through the GELU): routing margins here are wide enough that few or no decisions flip.
        func run(_ name: String, _ p: Tensor, _ g: Tensor, eps: Float = 1e-2) {
            assertGradient(gradCheck("\(label).\(name)", param: p, analytic: g, eps: eps, floorFraction: 2e-2,
                                     objective: objective),
                           minCheckedFraction: Self.minChecked, file: file, line: line)
        }
        run("x", x, dx)
        run("router", w.router, dw.router)
        if outputWeight != 0 {
            run("w_up", w.wUp, dw.wUp, eps: 3e-3)
            run("w_down", w.wDown, dw.wDown)
        } else {
            // The aux and z losses do not depend on the experts.
            XCTAssertTrue(dw.wUp.array.allSatisfy { $0 == 0 } && dw.wDown.array.allSatisfy { $0 == 0 },
                          "\(label): expert gradients must be zero when dy = 0", file: file, line: line)
        }
        return base
    }
}
