import Crypto
import Foundation

/// SHA-256 (swift-crypto's) as the lowercase hex text that manifests, the config hash and
/// the parameter checksum carry: the one place a digest becomes text.
public enum SHA256Hex {
    /// The digest of `bytes`.
    public static func of<D: DataProtocol>(_ bytes: D) -> String { hex(SHA256.hash(data: bytes)) }

    /// The digest of `floats` as little-endian IEEE-754 fp32.
    public static func of(floats: UnsafeBufferPointer<Float>) -> String {
        #if _endian(little)
        return of(UnsafeRawBufferPointer(floats))
        #else
        return of(floats.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) })
        #endif
    }

    /// The digest of the file at `path`, read in chunks, and the number of bytes hashed.
    public static func of(fileAtPath path: String) throws -> (hex: String, bytes: Int) {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? file.close() }
        var hasher = SHA256()
        var bytes = 0
        while let chunk = try file.read(upToCount: 1 << 22), !chunk.isEmpty {
            hasher.update(data: chunk)
            bytes += chunk.count
        }
        return (hex(hasher.finalize()), bytes)
    }

    private static let digits = Array("0123456789abcdef".utf8)

    static func hex(_ digest: SHA256.Digest) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(2 * SHA256.byteCount)
        for b in digest { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
