import XCTest
import Formats

final class SafeTensorsTests: XCTestCase {
    func testRoundTripAndLayout() throws {
        let w: [Float] = [1, 2, 3, 4, 5, 6]
        let blob = SafeTensors.encode([w.withUnsafeBufferPointer { .init(name: "layers.0.w", shape: [2, 3], floats: $0.baseAddress!, count: 6) },
                                       .init(name: "tokens", shape: [3], int32: [7, 8, 9])],
                                      metadata: ["step": "3"])
        // 8-byte little-endian header length, header padded to 8 bytes, data after it.
        var n = 0
        for i in 0..<8 { n |= Int(blob[i]) << (8 * i) }
        XCTAssertEqual(n % 8, 0)
        XCTAssertEqual(blob.count, 8 + n + 6 * 4 + 3 * 4)
        let (tensors, meta) = try SafeTensors.decode(blob)
        XCTAssertEqual(meta["step"], "3")
        XCTAssertEqual(tensors["layers.0.w"]?.shape, [2, 3])
        XCTAssertEqual(tensors["layers.0.w"]?.floats, [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(tensors["tokens"]?.dtype, "I32")
    }

    func testMalformedIsRejected() {
        XCTAssertThrowsError(try SafeTensors.decode([1, 2, 3]))
        XCTAssertThrowsError(try SafeTensors.decode([255, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]))
    }
}

final class JSONTextTests: XCTestCase {
    /// NaN becomes null; values read back from JSON keep their type and digits.
    func testSanitizeKeepsParsedNumbersAndBooleans() throws {
        let parsed = try JSONSerialization.jsonObject(with: Data(#"{"big": 18446744073709551615, "flag": true, "n": 2, "x": 0.5}"#.utf8))
        let text = JSONText.encode(["config": parsed, "loss": Double.nan, "losses": [1.5, Double.infinity]])
        XCTAssertTrue(text.contains("\"big\" : 18446744073709551615"), text)
        XCTAssertTrue(text.contains("\"flag\" : true"), text)
        XCTAssertTrue(text.contains("\"n\" : 2"), text)
        XCTAssertTrue(text.contains("\"loss\" : null"), text)
        XCTAssertTrue(text.contains("null"), text)
    }
}
