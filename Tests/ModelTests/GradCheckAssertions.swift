import TestSupport
import XCTest

/// Prints the report's OK / NOT OK line (so the test log shows every tensor's max error)
/// and fails the test when the tensor's max relative error reaches the tolerance.
func assertGradient(_ report: GradCheckReport, minCheckedFraction: Double = 1,
                    file: StaticString = #filePath, line: UInt = #line) {
    print(report)
    XCTAssertTrue(report.passed, report.description, file: file, line: line)
    let total = report.checked + report.skipped
    XCTAssertGreaterThanOrEqual(Double(report.checked), minCheckedFraction * Double(total),
                                "\(report.name): only \(report.checked) of \(total) coordinates checked "
                                    + "(\(report.skipped) skipped at routing discontinuities)",
                                file: file, line: line)
}
