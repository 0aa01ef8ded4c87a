import Foundation
import XCTest
import Formats
import Resilience
import Bench

/// Every typed output round-trips (encode, decode, encode: the same text), writes exactly its
/// keys, writes what the dictionary writer wrote for the same values, and reads strictly: a
/// missing, renamed or null key is an error naming the file and the key.
final class OutputRecordTests: XCTestCase {

    /// A summary with the awkward values: a non-finite gradient norm, no entropy floor, no
    /// expert capacity, the largest seed, a collective entry.
    static func summary(schedule: String = "1f1b", gradNorm: Double = .nan, floor: Double? = nil) -> RunSummary {
        RunSummary(
            worldSize: 4, tp: 2, pp: 2, dp: 1, ep: 1, zero: 1, schedule: schedule, virtualStages: 1, ppLayers: [1, 1],
            steps: 2, losses: [5.5, 5.25], auxLosses: [1.0084917181684432, 1.01], gradNorms: [1.99, gradNorm],
            learningRates: [0.00015000000000000001, 0.0003], skippedSteps: [2], finalLoss: 5.25, entropyFloor: floor,
            paramChecksum: String(repeating: "ab", count: 32),
            totalParams: 185152, activeParams: 119616, localParams: 46288, optimizerStateBytes: 2221824,
            globalBatch: 16, microBatchSize: 4, microBatches: 4, seqLen: 32, seed: .max,
            data: "synthetic order-2 Markov chain", expertLoad: .init(moeLayers: [0, 1], perLayerTotal: [[1, 2], [3, 4]],
                                                                        perLayerLastStep: [[1, 0], [0, 1]], droppedFraction: 0.0185546875,
                                                                        capacityPerSequence: nil),
            commBytes: ["all-reduce/tp": .init(bytes: 1993728, calls: 63, bytesAllRanks: 8011776, callsAllRanks: 300)],
            device: "a100-40gb", clock: "modeled", precision: "bf16", link: "profile", gpusPerNode: 8,
            emulatedStepTimesS: [0.003017711639871383, 0.0030178205016077177], emulatedStepTimeS: 0.003017749504823151,
            tokensPerSEmulated: 169662.85610574717, mfu: 0.00036354834776858086, hfu: 0.00037651611739453525,
            bubbleFractionPerStage: [0.25, 0.5], bubbleFraction: 0.375, bubbleFractionSimulatedPerStage: [0.25, 0.5],
            bubbleFractionSimulated: 0.375, bubbleFractionClosedForm: 0.2, pipelinePhaseS: 0.003000986752411575,
            peakActivationBytesPerStage: [837120, 419000], microbatchActivationBytes: 838912, exposedCommFraction: 0.1,
            timeBreakdownS: .init(compute: 0.009, communication: 0.001, idle: 0, total: 0.010),
            modelFLOPsPerToken: 668544,
            memoryBytes: [.init(role: "every rank", ranks: [0, 1, 2, 3], parameters: 370304, gradients: 370304, optimizerState: 2221824,
                                activations: 838912, communication: 370304, total: 4171648, activationsMeasured: 837120,
                                capacity: 42949672960)],
            wallTimeS: 0.267182717, tokensPerSWall: 5748.874842080448,
            resources: .init(computeCPUSecondsPerRank: [0.0997], cpuSecondsPerRank: [0.1203], communicationWallSecondsPerRank: [0.0101],
                             wallSecondsPerRank: [0.2671], rssBytesPerRank: [43999232], parameterFloatsPerRank: [92576],
                             gradientFloatsPeakPerRank: [92576], optimizerFloatsPerRank: [92576]))
    }

    /// Every key of the summary, at every level: the keys the untyped summary wrote.
    static let summaryKeys: Set<String> = [
        "active_params", "aux_losses", "bubble_fraction", "bubble_fraction_closed_form", "bubble_fraction_per_stage",
        "bubble_fraction_simulated", "bubble_fraction_simulated_per_stage", "clock", "comm_bytes", "data", "device", "dp",
        "emulated_step_time_s", "emulated_step_times_s", "entropy_floor", "ep", "expert_load", "exposed_comm_fraction",
        "final_loss", "global_batch", "gpus_per_node", "grad_norms", "hfu", "learning_rates", "link", "local_params", "losses",
        "memory_bytes", "mfu", "micro_batch_size", "micro_batches", "microbatch_activation_bytes", "model_flops_per_token",
        "optimizer_state_bytes", "param_checksum", "peak_activation_bytes_per_stage", "pipeline_phase_s", "pp", "pp_layers",
        "precision", "resources", "schedule", "seed", "seq_len", "skipped_steps", "steps", "time_breakdown_s",
        "tokens_per_s_emulated", "tokens_per_s_wall", "total_params", "tp", "virtual_stages", "wall_time_s", "world_size", "zero",
        "timed_as",
    ]

    /// Encodes, decodes and encodes again; the two texts agree. Returns the decoded value and the text.
    func roundTrip<T: Codable>(_ value: T, file: StaticString = #filePath, line: UInt = #line) throws -> (T, String) {
        let text = try JSONText.encode(value)
        let back = try JSONText.decode(T.self, from: Data(text.utf8), source: "test.json")
        XCTAssertEqual(try JSONText.encode(back), text, file: file, line: line)
        return (back, text)
    }

    func object(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func testRunSummaryRoundTripKeepsEveryKeyAndValue() throws {
        let (back, text) = try roundTrip(Self.summary())
        let o = try object(text)
        XCTAssertEqual(Set(o.keys), Self.summaryKeys)
        XCTAssertEqual(Set(try XCTUnwrap(o["expert_load"] as? [String: Any]).keys),
                       ["moe_layers", "per_layer_total", "per_layer_last_step", "dropped_fraction", "capacity_per_sequence",
                        "imbalance_per_step", "imbalance_per_layer_per_step"])
        XCTAssertTrue(o["timed_as"] is NSNull, "no timing model: null")
        XCTAssertEqual(Set(try XCTUnwrap((o["comm_bytes"] as? [String: [String: Int]])?["all-reduce/tp"]).keys),
                       ["bytes", "calls", "bytes_all_ranks", "calls_all_ranks"])
        XCTAssertEqual(Set(try XCTUnwrap(o["time_breakdown_s"] as? [String: Double]).keys), ["compute", "communication", "idle", "total"])
        XCTAssertEqual(Set(try XCTUnwrap(o["resources"] as? [String: Any]).keys),
                       ["compute_cpu_s_per_rank", "cpu_s_per_rank", "comm_wall_s_per_rank", "wall_s_per_rank", "rss_bytes_per_rank",
                        "parameter_floats_per_rank", "gradient_floats_peak_per_rank", "optimizer_floats_per_rank"])
        XCTAssertEqual(Set(try XCTUnwrap((o["memory_bytes"] as? [[String: Any]])?.first).keys),
                       ["role", "ranks", "parameters", "gradients", "optimizer_state", "activations", "communication", "total",
                        "activations_measured", "capacity"])
        // Non-finite and absent values are null, and read back as NaN and nil.
        XCTAssertTrue((o["grad_norms"] as? [Any])?.last is NSNull)
        XCTAssertTrue(o["entropy_floor"] is NSNull)
        XCTAssertTrue((o["expert_load"] as? [String: Any])?["capacity_per_sequence"] is NSNull)
        XCTAssertTrue(back.gradNorms[1].isNaN)
        XCTAssertEqual(back.gradNorms[0], 1.99)
        XCTAssertNil(back.entropyFloor)
        XCTAssertNil(back.expertLoad.capacityPerSequence)
        XCTAssertEqual(back.seed, .max)
        XCTAssertEqual(back.learningRates, [0.00015000000000000001, 0.0003])
        XCTAssertEqual(back.commBytes["all-reduce/tp"], .init(bytes: 1993728, calls: 63, bytesAllRanks: 8011776, callsAllRanks: 300))
        XCTAssertEqual(back.memoryBytes, Self.summary().memoryBytes)
        XCTAssertEqual(back.expertLoad.perLayerTotal, [[1, 2], [3, 4]])
        // Present values survive too.
        let (withFloor, _) = try roundTrip(Self.summary(gradNorm: 2, floor: 1.0249484080236624))
        XCTAssertEqual(withFloor.entropyFloor, 1.0249484080236624)
        XCTAssertEqual(withFloor.gradNorms, [1.99, 2])
    }

    /// Any JSON value as the plain objects the dictionary writer takes, numbers read exactly
    /// (JSONSerialization's reader can be off in the last digit; JSONDecoder's is not).
    struct PlainJSON: Decodable {
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        let value: Any
        init(from decoder: Decoder) throws {
            if let c = try? decoder.container(keyedBy: Key.self) {
                var o: [String: Any] = [:]
                for k in c.allKeys { o[k.stringValue] = try c.decode(PlainJSON.self, forKey: k).value }
                value = o
            } else if var c = try? decoder.unkeyedContainer() {
                var a: [Any] = []
                while !c.isAtEnd { a.append(try c.decode(PlainJSON.self).value) }
                value = a
            } else {
                let c = try decoder.singleValueContainer()
                if c.decodeNil() { value = NSNull() }
                else if let b = try? c.decode(Bool.self) { value = b }
                else if let i = try? c.decode(Int.self) { value = i }
                else if let u = try? c.decode(UInt64.self) { value = NSNumber(value: u) }
                else if let d = try? c.decode(Double.self) { value = d }
                else { value = try c.decode(String.self) }
            }
        }
    }

    /// The typed writer writes the bytes the dictionary writer (JSONSerialization, sorted,
    /// pretty) writes for the same keys and values.
    func testTypedTextIsTheDictionaryWritersText() throws {
        let text = try JSONText.encode(Self.summary())
        XCTAssertEqual(JSONText.encode(try JSONDecoder().decode(PlainJSON.self, from: Data(text.utf8)).value), text)
        XCTAssertTrue(text.hasSuffix("}\n"))
        let line = StepLogLine(attempt: 2, step: 7, loss: .nan, skipped: true,
                               emulated: .init(step: 0.0033163215584137208, compute: 0.003, communication: 0.0003, idle: 6.1e-08, checkpoint: 0),
                               wallSeconds: 0.199157892, modelFLOPs: 342294528, ranks: 2, peakFLOPS: 312e12)
        let old: [String: Any] = ["attempt": 2, "step": 7, "loss": NSNull(), "skipped": true,
                                  "emulated": ["step": 0.0033163215584137208, "compute": 0.003, "communication": 0.0003, "idle": 6.1e-08,
                                               "checkpoint": 0.0],
                                  "wall_s": 0.199157892, "model_flops": 342294528.0, "ranks": 2, "peak_flops": 312e12]
        XCTAssertEqual(try JSONText.line(line), try JSONSerialization.data(withJSONObject: old, options: [.sortedKeys]))
    }

    func testSummaryReadsStrictly() throws {
        let text = try JSONText.encode(Self.summary(gradNorm: 2))
        func failure(_ edit: (inout [String: Any]) -> Void) throws -> String {
            var o = try object(text)
            edit(&o)
            let data = try JSONSerialization.data(withJSONObject: o)
            do {
                _ = try JSONText.decode(RunSummary.self, from: data, source: "runs/s.json")
                XCTFail("decoded despite the edit")
                return ""
            } catch {
                return String(describing: error)
            }
        }
        var message = try failure { $0["mfu"] = nil }
        XCTAssertTrue(message.contains("runs/s.json") && message.contains("mfu"), message)
        message = try failure { o in
            var load = o["expert_load"] as! [String: Any]
            load["dropped"] = load.removeValue(forKey: "dropped_fraction")
            o["expert_load"] = load
        }
        XCTAssertTrue(message.contains("runs/s.json") && message.contains("expert_load.dropped_fraction"), message)
        message = try failure { $0["hfu"] = NSNull() }
        XCTAssertTrue(message.contains("'hfu' is null"), message)
        message = try failure { $0["steps"] = "3" }
        XCTAssertTrue(message.contains("'steps' does not hold"), message)
        message = try failure { $0["entropy_floor"] = nil }   // nullable, but the key is required
        XCTAssertTrue(message.contains("entropy_floor"), message)
        // An unreadable file is named too.
        XCTAssertThrowsError(try RunSummary.read("/nonexistent/s.json")) { XCTAssertTrue("\($0)".contains("/nonexistent/s.json")) }
    }

    func testNonFiniteWhereTheTypeAllowsNoneIsAnError() throws {
        var s = Self.summary()
        s.mfu = .infinity
        XCTAssertThrowsError(try JSONText.encode(s)) { XCTAssertTrue("\($0)".contains("'mfu'"), "\($0)") }
    }

    func testStepLogLineRoundTrip() throws {
        let line = StepLogLine(attempt: 1, step: 3, loss: 5.393679689703276, skipped: false,
                               emulated: .init(step: 0.004, compute: 0.003, communication: 0.0003, idle: 3.5e-08, checkpoint: 0.00073),
                               wallSeconds: 0.348385954, modelFLOPs: 342294528, ranks: 2, peakFLOPS: 312e12)
        let (back, text) = try roundTrip(line)
        XCTAssertEqual(Set(try object(text).keys), ["attempt", "step", "loss", "skipped", "emulated", "wall_s", "model_flops", "ranks", "peak_flops"])
        XCTAssertEqual(back.loss, line.loss)
        XCTAssertEqual(back.emulated, line.emulated)
        XCTAssertEqual(back.wallSeconds, line.wallSeconds)
        XCTAssertEqual(back.modelFLOPs, line.modelFLOPs)
        XCTAssertEqual(back.peakFLOPS, line.peakFLOPS)
        var nan = line
        nan.loss = .nan
        XCTAssertTrue(try roundTrip(nan).0.loss.isNaN)
    }

    func testRunEventRoundTripWritesOnlyItsFields() throws {
        let events = [RunEvent(.attemptStart, attempt: 1, time: 1795987525.440247),
                      RunEvent(.checkpointLoaded, attempt: 2, step: 3, path: "/tmp/run/step-000003", time: 1),
                      RunEvent(.attemptEnd, attempt: 2, status: "success", time: 2),
                      RunEvent(.kill, attempt: 1, reason: "hang timeout 6.0 s", time: 3),
                      RunEvent(.restart, attempt: 2, restarts: 1, time: 4)]
        for e in events { XCTAssertEqual(try roundTrip(e).0, e) }
        XCTAssertEqual(String(decoding: try JSONText.line(events[1]), as: UTF8.self),
                       #"{"attempt":2,"event":"checkpoint_loaded","path":"\/tmp\/run\/step-000003","step":3,"time":1}"#)
        XCTAssertEqual(Set(RunEvent.Kind.allCases.map(\.rawValue)),
                       ["attempt_start", "attempt_end", "first_step", "checkpoint_saved", "checkpoint_loaded", "failure", "kill", "restart", "interrupted"])
    }

    func testRunLogSkipsATornLineAndRejectsARenamedKey() throws {
        let log = try temporaryRunLog()
        XCTAssertEqual(try log.steps().count, 0)   // no file yet: no lines
        try log.event(RunEvent(.attemptStart, attempt: 1))
        try log.event(RunEvent(.firstStep, attempt: 1, step: 1))
        let torn = try XCTUnwrap(FileHandle(forWritingAtPath: log.eventsPath))
        torn.seekToEndOfFile()
        torn.write(Data(#"{"attempt":1,"ev"#.utf8))
        torn.closeFile()
        XCTAssertEqual(try log.events().map(\.event), [.attemptStart, .firstStep])
        try #"{"attempt":1,"kind":"restart","time":1}"#.appending("\n").write(toFile: log.eventsPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try log.events()) {
            XCTAssertTrue("\($0)".contains("events.jsonl line 1") && "\($0)".contains("event"), "\($0)")
        }
    }

    /// A run directory of its own, removed when the test ends.
    func temporaryRunLog() throws -> RunLog {
        let dir = NSTemporaryDirectory() + "outputs-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return RunLog(dir: dir)
    }

    /// A step of 1 emulated second (compute 0.5, communication 0.25, idle 0.25), 100 model
    /// FLOPs on a 1000 FLOP/s peak.
    static func stepLine(_ attempt: Int, _ step: Int, loss: Double, wallSeconds: Double, ranks: Int) -> StepLogLine {
        StepLogLine(attempt: attempt, step: step, loss: loss, skipped: false,
                    emulated: .init(step: 1.0, compute: 0.5, communication: 0.25, idle: 0.25, checkpoint: 0),
                    wallSeconds: wallSeconds, modelFLOPs: 100, ranks: ranks, peakFLOPS: 1000)
    }

    /// An elastic job: attempt 1 on 4 ranks, attempt 2 on 2 of them. The allocation is 4 ranks;
    /// attempt 2's steps count half their time in their own rows and half as reduced capacity.
    func testGoodputCountsReducedCapacity() throws {
        let log = try temporaryRunLog()
        let dir = log.dir
        for (attempt, step, ranks) in [(1, 1, 4), (2, 2, 2), (2, 3, 2)] {
            try log.step(Self.stepLine(attempt, step, loss: 1, wallSeconds: 1, ranks: ranks))
        }
        let g = try Goodput.compute(runDirectory: dir, restarts: 1, restartCostS: 0, wallSeconds: 3)
        XCTAssertEqual(g.ranks, 4)
        XCTAssertEqual(g.usefulCompute, 0.5 + 0.25 + 0.25)
        XCTAssertEqual(g.reducedCapacity, 0.5 + 0.5)
        XCTAssertEqual(g.total, 3)   // the job's emulated time, every part counted once
        XCTAssertEqual(g.effectiveUtilization, 300 / (1000 * 4 * 3))
        XCTAssertTrue(g.table().contains { $0.contains("reduced capacity") })
    }

    /// Goodput from a step log of two attempts: attempt 1's step 2 is rolled back (lost work);
    /// attempt 2's load, from its event, is the checkpoint-load row.
    func testGoodputFromTheStepLog() throws {
        let log = try temporaryRunLog()
        let dir = log.dir
        for (attempt, step, loss) in [(1, 1, 5.0), (1, 2, 4.5), (2, 2, 4.4), (2, 3, 4.0)] {
            try log.step(Self.stepLine(attempt, step, loss: loss, wallSeconds: 2, ranks: 2))
        }
        try log.event(RunEvent(.checkpointLoaded, attempt: 2, step: 1, path: "step-000001", source: "host memory", seconds: 0.125))
        let g = try Goodput.compute(runDirectory: dir, restarts: 1, restartCostS: 2, wallSeconds: 10)
        XCTAssertEqual(g.load, 0.125)
        XCTAssertEqual(g.total, 4 + 2 + 0.125)
        XCTAssertTrue(g.table().contains { $0.contains("checkpoint load") && $0.contains("0.125000 s") }, "\(g.table())")
        XCTAssertEqual(g.survivingLosses, [5, 4.4, 4])
        XCTAssertEqual(g.lostSteps, 1)
        XCTAssertEqual(g.lostWork, 1)
        XCTAssertEqual(g.usefulCompute, 1.5)
        XCTAssertEqual(g.exposedComm, 0.75)
        XCTAssertEqual(g.bubble, 0.75)
        XCTAssertEqual(g.restart, 2)
        XCTAssertEqual(g.wallSteps, 6)
        XCTAssertEqual(g.wallLost, 2)
        XCTAssertEqual(g.wallOther, 2)
        XCTAssertEqual(g.effectiveUtilization, 300 / (1000 * 2 * g.total))
        let (record, text) = try roundTrip(g.record)
        XCTAssertEqual(record, g.record)
        let o = try object(text)
        XCTAssertEqual(Set(o.keys), ["emulated_s", "wall_s", "effective_utilization", "lost_steps", "model_flops_surviving"])
        XCTAssertEqual(Set(try XCTUnwrap(o["emulated_s"] as? [String: Double]).keys),
                       ["useful_compute", "bubble_and_idle", "exposed_communication", "checkpoint_save", "lost_work", "restart",
                        "checkpoint_load", "reduced_capacity", "total"])
        XCTAssertEqual(Set(try XCTUnwrap(o["wall_s"] as? [String: Double]).keys),
                       ["surviving_steps", "lost_steps", "startup_detection_relaunch_load", "total"])
        // A step line without its wall time is an error naming the file, the line and the key.
        try #"{"attempt":3,"emulated":{"checkpoint":0,"communication":0,"compute":0,"idle":0,"step":0},"loss":1,"model_flops":1,"peak_flops":1,"ranks":1,"skipped":false,"step":4}"#
            .appending("\n").write(toFile: log.stepsPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Goodput.compute(runDirectory: dir, restarts: 0, restartCostS: 0, wallSeconds: 0)) {
            XCTAssertTrue("\($0)".contains("steps.jsonl line 1") && "\($0)".contains("wall_s"), "\($0)")
        }
    }

    func testJobSummaryRoundTrip() throws {
        let goodput = GoodputRecord(emulated: .init(usefulCompute: 0.024, bubbleAndIdle: 4.9e-07, exposedCommunication: 0.0025,
                                                    checkpointSave: 0.0015, lostWork: 0.0033, restart: 2, total: 2.03),
                                    wall: .init(survivingSteps: 1.69, lostSteps: 0.17, startupDetectionRelaunchLoad: 3.66, total: 5.52),
                                    effectiveUtilization: 2.16e-06, lostSteps: 1, modelFLOPsSurviving: 2738356224)
        var failed = JobSummary(attempts: 3, restarts: 2, failures: ["attempt 1: hung", "attempt 2: crash", "attempt 3: crash"],
                                succeeded: false, losses: [5.5, .nan], steps: 2, goodput: goodput, runDirectory: "/tmp/run")
        failed.exitStatus = 3
        failed.stoppedBecause = "gave up after 2 restart(s) (--max-restarts 2): attempt 3: crash"
        let (back, text) = try roundTrip(failed)
        XCTAssertEqual(Set(try object(text).keys), ["attempts", "restarts", "failures", "succeeded", "losses", "steps", "goodput", "run_directory",
                                                    "exit_status", "stopped_because"])
        XCTAssertEqual(back.exitStatus, 3)
        XCTAssertEqual(back.stoppedBecause, failed.stoppedBecause)
        XCTAssertNil(back.paramChecksum)
        XCTAssertNil(back.finalLoss)
        XCTAssertTrue(back.losses[1].isNaN)
        XCTAssertEqual(back.goodput, goodput)
        var done = failed
        done.succeeded = true
        done.exitStatus = 0
        done.stoppedBecause = nil
        done.paramChecksum = "f0441b59"
        done.finalLoss = .nan
        done.lastAttemptSummary = "/tmp/run/attempt-3.json"
        let (back2, text2) = try roundTrip(done)
        XCTAssertEqual(Set(try object(text2).keys),
                       ["attempts", "restarts", "failures", "succeeded", "losses", "steps", "goodput", "run_directory",
                        "param_checksum", "final_loss", "last_attempt_summary", "exit_status"])
        XCTAssertTrue(try object(text2)["final_loss"] is NSNull)
        XCTAssertTrue(try XCTUnwrap(back2.finalLoss).isNaN)   // null, not absent
        XCTAssertEqual(back2.paramChecksum, "f0441b59")
        XCTAssertEqual(back2.lastAttemptSummary, "/tmp/run/attempt-3.json")
    }

    func testComparisonRowIsTheSummaryNamedBySchedule() throws {
        let report = ComparisonReport(schedules: [ComparisonRow(schedule: "gpipe", summary: Self.summary(schedule: "gpipe")),
                                                  ComparisonRow(schedule: "zb-h1", summary: Self.summary(schedule: "zb-h1"))])
        let (back, text) = try roundTrip(report)
        XCTAssertEqual(back.schedules.map(\.schedule), ["gpipe", "zb-h1"])
        let rows = try XCTUnwrap(try object(text)["schedules"] as? [[String: Any]])
        XCTAssertEqual(rows.map { Set($0.keys) }, [Self.summaryKeys, Self.summaryKeys])
        XCTAssertEqual(rows.compactMap { $0["schedule"] as? String }, ["gpipe", "zb-h1"])
        XCTAssertEqual(try JSONText.encode(back.schedules[1].summary), try JSONText.encode(Self.summary(schedule: "zb-h1")))
    }
}
