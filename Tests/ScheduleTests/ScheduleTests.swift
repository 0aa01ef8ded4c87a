import XCTest
import Schedule

final class ScheduleTests: XCTestCase {
    func simulate(_ kind: ScheduleKind, P: Int, M: Int, v: Int = 1, costs: Simulator.Costs = .uniform) throws -> Simulator.Result {
        let compute = try Generators.generate(kind, stages: P, microbatches: M, virtualStages: v)
        return try Simulator.run(Lowering.lower(compute, virtualStages: v), virtualStages: v, microbatches: M, costs: costs)
    }

    /// Every generator validates (no rule broken, no deadlock) for P in 1...8, M in 1...16, v in 1...4.
    func testAllGeneratorsValidate() throws {
        var checked = 0
        for P in 1...8 {
            for M in 1...16 {
                for kind in [ScheduleKind.gpipe, .oneFOneB, .zbH1] {
                    _ = try simulate(kind, P: P, M: M)
                    checked += 1
                }
                for v in 1...4 where M % P == 0 {
                    _ = try simulate(.interleaved, P: P, M: M, v: v)
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 400)
    }

    /// Uniform costs, free messages: the measured bubble equals the closed form to 1e-9.
    func testBubblesMatchClosedForms() throws {
        for P in 1...8 {
            for M in 1...16 {
                for kind in [ScheduleKind.gpipe, .oneFOneB] {
                    let r = try simulate(kind, P: P, M: M)
                    for b in r.bubblePerStage { XCTAssertEqual(b, ClosedForm.bubble(kind, stages: P, microbatches: M), accuracy: 1e-9, "\(kind) P\(P) M\(M)") }
                }
                for v in 1...4 where M % P == 0 {
                    let r = try simulate(.interleaved, P: P, M: M, v: v)
                    XCTAssertEqual(r.bubble, ClosedForm.bubble(.interleaved, stages: P, microbatches: M, virtualStages: v), accuracy: 1e-9,
                                   "interleaved P\(P) M\(M) v\(v)")
                }
            }
        }
    }

    /// ZB-H1 with t_F = t_I = t_W: the bubble is a third of 1F1B's bubble time, the paper's
    /// figure, when M >= P; its peak in-flight micro-batches never exceed 1F1B's.
    func testZeroBubbleH1() throws {
        for P in 2...8 {
            for M in P...16 {
                let zb = try simulate(.zbH1, P: P, M: M)
                let oneF = try simulate(.oneFOneB, P: P, M: M)
                XCTAssertEqual(zb.bubble, ClosedForm.bubble(.zbH1, stages: P, microbatches: M), accuracy: 1e-9, "P\(P) M\(M)")
                XCTAssertLessThan(zb.phase, oneF.phase)
                for (a, b) in zip(zb.peakInFlight, oneF.peakInFlight) { XCTAssertLessThanOrEqual(a, b) }
            }
        }
    }

    /// GPipe holds M micro-batches in flight on stage 0, 1F1B at most P.
    func testPeakInFlight() throws {
        let g = try simulate(.gpipe, P: 4, M: 8), o = try simulate(.oneFOneB, P: 4, M: 8)
        XCTAssertEqual(g.peakInFlight[0], 8)
        XCTAssertEqual(o.peakInFlight[0], 4)
        XCTAssertEqual(o.peakInFlight[3], 1)
    }

    func testActionsPrintAndParse() {
        for text in ["F3", "B0", "I12", "W2.1", "sF4", "rB7.3"] {
            XCTAssertEqual(Action(text)?.description, text)
        }
        XCTAssertNil(Action("X1"))
        XCTAssertNil(Action("F"))
        XCTAssertEqual(Action("rF2.1"), Action(.recvActivation, 2, chunk: 1))
    }

    /// Hand-made broken schedules are rejected with the rule, the stage and the action.
    func testBrokenSchedulesAreRejected() throws {
        func rejectActions(_ lowered: [[Action]], M: Int, v: Int = 1, _ rule: String, file: StaticString = #filePath, line: UInt = #line) {
            do {
                _ = try Simulator.run(lowered, virtualStages: v, microbatches: M)
                XCTFail("accepted a broken schedule", file: file, line: line)
            } catch let e as Simulator.ValidationError {
                XCTAssertTrue(e.rule.contains(rule), "\(e.rule)", file: file, line: line)
                XCTAssertTrue(e.description.contains("<-- ERROR HERE") || e.grid.isEmpty, file: file, line: line)
            } catch { XCTFail("\(error)", file: file, line: line) }
        }
        func reject(_ lists: [[String]], M: Int, v: Int = 1, _ rule: String, file: StaticString = #filePath, line: UInt = #line) {
            rejectActions(lists.map { $0.map { Action($0)! } }, M: M, v: v, rule, file: file, line: line)
        }
        // Backward before forward.
        reject([["B0", "F0"]], M: 1, "backward before its forward")
        // A micro-batch never run.
        reject([["F0", "B0"]], M: 2, "forward of micro-batch 1")
        // Twice.
        reject([["F0", "F0", "B0"]], M: 1, "appears twice")
        // W before I.
        reject([["F0", "W0", "I0"]], M: 1, "before its input gradient")
        // Stage 1 runs F0 without receiving it.
        reject([["F0", "sF0", "rB0", "B0"], ["F0", "B0", "sB0"]], M: 1, "forward before its activation")
        // Deadlock: both stages wait for a gradient first.
        reject([["F0", "sF0", "rB0", "B0", "F1", "sF1", "rB1", "B1"],
                ["rF1", "F1", "B1", "sB1", "rF0", "F0", "B0", "sB0"]], M: 2, "deadlock")
        // Every send matched by one receive. In a schedule whose indices are in range, the rules
        // above already require each send and each receive exactly once (and forbid any other),
        // so sends and receives always pair up; the only way to reach the matching rule is a
        // micro-batch below 0, which the range check does not catch (Action(text) never parses
        // one, Action(kind, mb) builds it). If that check learns about negative indices, these
        // schedules fail it instead, and the matching rule can no longer be reached at all.
        // Stage 0 also runs micro-batch -1 and sends its activation; stage 1 never receives it
        // (without the rule the simulator accepts this: a send does not wait).
        func stage0(_ extra: [Action]) -> [Action] {
            [Action(.forward, 0), Action(.sendActivation, 0)] + extra + [Action(.recvGradient, 0), Action(.backward, 0)]
        }
        let stage1 = [Action(.recvActivation, 0), Action(.forward, 0), Action(.backward, 0), Action(.sendGradient, 0)]
        rejectActions([stage0([Action(.forward, -1), Action(.sendActivation, -1)]), stage1], M: 1,
                      "message act -1 -> stage 1 sent 1 times but received 0 times")
        // Stage 1 waits for an activation of micro-batch -1 that stage 0 never sends (without
        // the rule: a deadlock, which is another error).
        rejectActions([stage0([]), [Action(.recvActivation, -1)] + stage1], M: 1, "message act -1 -> stage 1 received 1 times but never sent")
    }

    func testInterleavedNeedsDivisibleMicrobatches() {
        XCTAssertThrowsError(try Generators.generate(.interleaved, stages: 4, microbatches: 6, virtualStages: 2)) { e in
            XCTAssertTrue(String(describing: e).contains("6"))
        }
        XCTAssertThrowsError(try Generators.generate(.oneFOneB, stages: 4, microbatches: 8, virtualStages: 2))
    }
}
