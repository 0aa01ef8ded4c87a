import Foundation
import XCTest
import Plan

final class ConfigTests: XCTestCase {
    func parse(_ s: String) throws -> RunConfig { try ConfigFile.parse(Data(s.utf8), name: "test.json") }

    func message(_ f: () throws -> Any) -> String {
        do { _ = try f(); return "" } catch { return String(describing: error) }
    }

    func testShippedConfigsLoadAndValidate() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["tiny", "default"] {
            let c = try ConfigFile.load(root.appendingPathComponent("configs/\(name).json").path)
            XCTAssertNoThrow(try c.validate(), name)
        }
        let d = try ConfigFile.load(root.appendingPathComponent("configs/default.json").path)
        XCTAssertEqual(d.model.experts, 16)
        XCTAssertEqual(d.model.topK, 2)
        XCTAssertEqual(d.model.kvHeads, 1)
        XCTAssertEqual(d.model.layers, 8)
    }

    func testKeysTypesAndErrors() throws {
        let c = try parse(#"{"layers": 3, "lr": 1, "tie_embeddings": true, "comment": "x", "data": "f.txt"}"#)
        XCTAssertEqual(c.model.layers, 3)
        XCTAssertEqual(c.lr, 1)
        XCTAssertTrue(c.model.tieEmbeddings)
        XCTAssertEqual(c.data, "f.txt")
        XCTAssertTrue(message { try self.parse(#"{"layers": 2.5}"#) }.contains("integer"))
        XCTAssertTrue(message { try self.parse(#"{"layers": true}"#) }.contains("integer"))
        XCTAssertTrue(message { try self.parse(#"{"tie_embeddings": 1}"#) }.contains("true or false"))
        XCTAssertTrue(message { try self.parse(#"{"lr": "fast"}"#) }.contains("number"))
        XCTAssertTrue(message { try self.parse(#"{"nope": 1}"#) }.contains("unknown key \"nope\""))
        XCTAssertTrue(message { try self.parse("[1, 2]") }.contains("JSON object"))
        XCTAssertTrue(message { try self.parse("{") }.contains("not valid JSON"))
    }

    func testValidationMessages() {
        var c = RunConfig()
        c.model.topK = 0
        XCTAssertTrue(message { try c.validate() }.contains("--top-k"))
        c = RunConfig(); c.model.topK = 5; c.model.experts = 4
        XCTAssertTrue(message { try c.validate() }.contains("exceeds --experts 4"))
        c = RunConfig(); c.model.heads = 3
        XCTAssertTrue(message { try c.validate() }.contains("not divisible by --heads 3"))
        c = RunConfig(); c.dumpStep = 3
        XCTAssertTrue(message { try c.validate() }.contains("--dump-dir"))
    }

    func testBatchPlanDerivesTheMissingNumber() throws {
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: 4, microBatches: nil, dp: 1).microBatches, 4)
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: 4, microBatches: nil, dp: 2).microBatches, 2)
        XCTAssertEqual(try BatchPlan(globalBatch: 16, microBatchSize: nil, microBatches: 8, dp: 2).microBatchSize, 1)
        XCTAssertEqual(try BatchPlan(globalBatch: nil, microBatchSize: 2, microBatches: 3, dp: 2).globalBatch, 12)
        XCTAssertTrue(message { try BatchPlan(globalBatch: 10, microBatchSize: 4, microBatches: nil, dp: 1) }.contains("10"))
        XCTAssertTrue(message { try BatchPlan(globalBatch: 8, microBatchSize: 2, microBatches: 2, dp: 1) }.contains("differs"))
    }
}
