import XCTest
import Formats

final class SHA256Tests: XCTestCase {
    /// FIPS 180-4 examples, plus a multi-block message and the block-boundary lengths.
    func testKnownVectors() {
        XCTAssertEqual(SHA256.hexDigest([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hexDigest(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hexDigest(Array(repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testStreamingEqualsOneShot() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for split in [0, 1, 55, 56, 63, 64, 65, 127, 999] {
            var h = SHA256()
            h.update(bytes[0..<split])
            h.update(bytes[split...])
            XCTAssertEqual(SHA256.hex(h.finalize()), SHA256.hexDigest(bytes), "split at \(split)")
        }
    }

    func testFloatsHashAsLittleEndian() {
        let values: [Float] = [1, -2.5, 0, .pi]
        var h = SHA256()
        values.withUnsafeBufferPointer { h.update(floats: $0.baseAddress!, count: 4) }
        let bytes = values.flatMap { v -> [UInt8] in
            let b = v.bitPattern
            return [UInt8(b & 0xff), UInt8((b >> 8) & 0xff), UInt8((b >> 16) & 0xff), UInt8(b >> 24)]
        }
        XCTAssertEqual(SHA256.hex(h.finalize()), SHA256.hexDigest(bytes))
    }
}
