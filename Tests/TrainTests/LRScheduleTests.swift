import XCTest
import Train

final class LRScheduleTests: XCTestCase {
    func testLRScheduleWarmupThenCosine() {
        let s = LRSchedule(peak: 1, minRatio: 0.1, warmup: 10, total: 110)
        XCTAssertEqual(s.rate(step: 1), 0.1, accuracy: 1e-12)
        XCTAssertEqual(s.rate(step: 10), 1, accuracy: 1e-12)
        XCTAssertEqual(s.rate(step: 60), 0.55, accuracy: 1e-12)  // half way: (0.1 + 1) / 2
        XCTAssertEqual(s.rate(step: 110), 0.1, accuracy: 1e-12)
        for step in 11..<110 { XCTAssertLessThanOrEqual(s.rate(step: step + 1), s.rate(step: step)) }
    }
}
