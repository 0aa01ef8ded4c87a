import Foundation
import Model
import Tensor
import TestSupport
import XCTest

final class EmbeddingGradTests: XCTestCase {
    /// dTable[v] = sum of r over the rows whose token is v (tokens repeat), added to what it held.
    func testTableGradient() {
        let V = 7, C = 5, n = 12
        let tokens = randomTokens(count: n, vocab: V, seed: 41)
        XCTAssertLessThan(Set(tokens).count, n, "the test wants repeated tokens")
        let table = randomTensor([V, C], seed: 42)
        let r = randomTensor([n, C], seed: 43)
        let dTable = Tensor(zeros: [V, C])
        Embedding.backward(tokens: tokens, dy: r, dTable: dTable)
        func objective() -> Double? {
            let y = Tensor(zeros: [n, C])
            Embedding.forward(tokens: tokens, table: table, y: y)
            return weightedSum(y, r)
        }
        // Linear in the table: eps 1e-2, tolerance 1e-2, floor 1e-3 * max|grad|.
        assertGradient(gradCheck("embedding.table", param: table, analytic: dTable, eps: 1e-2,
                                 floorFraction: 1e-3, objective: objective))

        let prior = randomTensor([V, C], seed: 44)
        let acc = prior.copy()
        Embedding.backward(tokens: tokens, dy: r, dTable: acc)
        for i in 0..<acc.count { XCTAssertEqual(acc[i], prior[i] + dTable[i], accuracy: 1e-5) }
    }
}

final class CrossEntropyGradTests: XCTestCase {
    /// The fused gradient is gradScale * d(sum of losses)/dlogits, and the loss is the Double reference.
    func testLogitGradientAndLoss() {
        let n = 6, V = 7
        let gradScale: Float = 0.25
        let logits = randomTensor([n, V], seed: 51, std: 2)
        let targets = randomTokens(count: n, vocab: V, seed: 52)

        var reference = 0.0
        for t in 0..<n {
            var s = 0.0
            for j in 0..<V { s += exp(Double(logits[t * V + j])) }
            reference += log(s) - Double(logits[t * V + Int(targets[t])])
        }
        let grad = logits.copy()
        let loss = CrossEntropy.forwardBackward(logits: grad, targets: targets, gradScale: gradScale)
        XCTAssertEqual(loss, reference, accuracy: 1e-5 * abs(reference))

        func objective() -> Double? {
            Double(gradScale) * CrossEntropy.forwardBackward(logits: logits.copy(), targets: targets, gradScale: 0)
        }
        // eps 1e-2 on logits of std 2; tolerance 1e-2, floor 2e-2 * max|grad| (fp32 round-off, see GradCheck.swift).
        assertGradient(gradCheck("cross_entropy.logits", param: logits, analytic: grad, eps: 1e-2,
                                 floorFraction: 2e-2, objective: objective))
    }
}
