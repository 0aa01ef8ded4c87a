import XCTest
import Formats

/// Known answers for the hex digests of `SHA256Hex` (swift-crypto underneath): the values
/// in manifests and checksums written before the switch must read the same.
final class SHA256Tests: XCTestCase {
    /// FIPS 180-4 examples, plus a multi-block message.
    func testKnownVectors() {
        XCTAssertEqual(SHA256Hex.of([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Hex.of(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Hex.of(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256Hex.of(Array(repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testFloatsHashAsLittleEndian() {
        let values: [Float] = [1, -2.5, 0, .pi]
        let bytes = values.flatMap { v -> [UInt8] in
            let b = v.bitPattern
            return [UInt8(b & 0xff), UInt8((b >> 8) & 0xff), UInt8((b >> 16) & 0xff), UInt8(b >> 24)]
        }
        XCTAssertEqual(values.withUnsafeBufferPointer { SHA256Hex.of(floats: $0) }, SHA256Hex.of(bytes))
    }

    /// A file is hashed in chunks (4 MiB): a file longer than one chunk hashes as its bytes do.
    func testFileEqualsBytes() throws {
        let bytes = (0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let path = NSTemporaryDirectory() + "/sha256-test-\(getpid()).bin"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try SHA256Hex.of(fileAtPath: path)
        XCTAssertEqual(file.bytes, bytes.count)
        XCTAssertEqual(file.hex, SHA256Hex.of(bytes))
    }
}
