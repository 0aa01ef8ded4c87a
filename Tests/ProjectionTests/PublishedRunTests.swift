import Foundation
import XCTest
import Projection
import Plan

/// The projection issue's acceptance 1: the background account's arithmetic, from
/// configs/gpt4-account.json.
final class AccountTests: XCTestCase {
    var account: PublishedRun!
    let a100Peak = 312e12, h100BF16 = 989e12, h100FP8 = 1979e12  // configs/devices/*.json

    override func setUpWithError() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        account = try PublishedRun.load(root.appendingPathComponent("configs/gpt4-account.json").path)
    }

    func testParameterCounts() {
        // 16 x 111e9 + 55e9 total, 2 x 111e9 + 55e9 active (within 2%).
        XCTAssertEqual(account.totalParams, 16 * 111e9 + 55e9, accuracy: 0.02 * 1.831e12)
        XCTAssertEqual(account.activeParams, 2 * 111e9 + 55e9, accuracy: 0.02 * 2.77e11)
    }

    /// Forward FLOPs per token about 5.6e11. The account writes "560 TFLOPs": 2 x 280e9 is
    /// 5.6e11 FLOP = 560 GFLOP, a factor of 1000 below what it says.
    func testForwardFLOPsAndTheAccountsUnitSlip() {
        XCTAssertEqual(account.forwardFLOPsPerToken, 5.6e11, accuracy: 0.02 * 5.6e11)
        XCTAssertEqual(560e12 / account.forwardFLOPsPerToken, 1000, accuracy: 20)
    }

    func testTrainingFLOPs() {
        XCTAssertEqual(account.trainingFLOPs, 2.15e25, accuracy: 0.02 * 2.15e25)
    }

    /// With the account's 32% and 36% on 25,000 A100s at the bf16 peak: its 90 to 100 days (+-5%).
    func testDaysAtTheAccountsUtilization() {
        let slow = account.days(gpus: 25000, peak: a100Peak, mfu: 0.32)
        let fast = account.days(gpus: 25000, peak: a100Peak, mfu: 0.36)
        XCTAssertEqual(slow, 100, accuracy: 5)
        XCTAssertEqual(fast, 90, accuracy: 4.5)
    }

    /// $1 per A100-hour for the days computed: $53-60M; the account's $63M is about 105 days.
    func testCostAndItsDiscrepancy() {
        let cost = account.cost(gpus: 25000, days: account.days(gpus: 25000, peak: a100Peak, mfu: 0.32), usdPerGPUHour: 1)
        XCTAssertEqual(cost, 60e6, accuracy: 2e6)
        XCTAssertEqual(63e6 / (25000 * 24 * 1), 105, accuracy: 1)
    }

    /// 8,192 H100 x 55 days x $2 = $21.6M; the implied utilization is about 56% of the bf16
    /// peak, 28% of the fp8 peak.
    func testH100Alternative() {
        XCTAssertEqual(account.cost(gpus: 8192, days: 55, usdPerGPUHour: 2), 21.6e6, accuracy: 0.1e6)
        XCTAssertEqual(account.impliedMFU(gpus: 8192, days: 55, peak: h100BF16), 0.56, accuracy: 0.02)
        XCTAssertEqual(account.impliedMFU(gpus: 8192, days: 55, peak: h100FP8), 0.28, accuracy: 0.01)
    }

    /// About 30 GB of fp16 parameters per GPU at TP8 x PP15.
    func testParametersPerGPU() {
        XCTAssertEqual(account.fp16ParamBytesPerGPU / 1e9, 30, accuracy: 1.5)
    }
}
