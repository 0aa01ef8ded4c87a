import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The safetensors file format: an 8-byte little-endian header length, a JSON header
/// mapping each tensor name to `{dtype, shape, data_offsets}` (plus an optional
/// `__metadata__` map of strings), then the raw little-endian tensor bytes.
/// Readable by Python's `safetensors` and, with a few lines, by NumPy.
public enum SafeTensors {
    public enum DType: String, Sendable { case f32 = "F32", i32 = "I32" }

    /// One named tensor to write: its bytes are little-endian already.
    public struct Entry {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let bytes: [UInt8]

        public init(name: String, shape: [Int], floats: UnsafePointer<Float>, count: Int) {
            precondition(shape.reduce(1, *) == count, "safetensors entry \(name): shape does not match count")
            self.name = name; self.dtype = .f32; self.shape = shape
            self.bytes = Array(UnsafeRawBufferPointer(start: floats, count: count * 4))
        }

        public init(name: String, shape: [Int], int32 values: [Int32]) {
            precondition(shape.reduce(1, *) == values.count, "safetensors entry \(name): shape does not match count")
            self.name = name; self.dtype = .i32; self.shape = shape
            self.bytes = values.withUnsafeBytes { Array($0) }
        }
    }

    /// Serialises entries (in the given order) and metadata into one safetensors blob.
    public static func encode(_ entries: [Entry], metadata: [String: String] = [:]) -> [UInt8] {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let meta = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(meta.joined(separator: ","))}")
        }
        var offset = 0
        for e in entries {
            let end = offset + e.bytes.count
            parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += parts.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }  // pad with spaces, as the spec allows
        var out = [UInt8]()
        out.reserveCapacity(8 + headerBytes.count + offset)
        let n = UInt64(headerBytes.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (UInt64(i) * 8))) }
        out += headerBytes
        for e in entries { out += e.bytes }
        return out
    }

    /// A tensor read back from a safetensors blob.
    public struct Loaded {
        public let dtype: String
        public let shape: [Int]
        public let bytes: ArraySlice<UInt8>
        public var floats: [Float] {
            precondition(dtype == "F32", "tensor is \(dtype), not F32")
            return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
    }

    public enum FormatError: Error, CustomStringConvertible {
        case malformed(String)
        public var description: String { if case .malformed(let s) = self { return "malformed safetensors: \(s)" }; return "" }
    }

    /// Parses a safetensors blob into its tensors and metadata.
    public static func decode(_ data: [UInt8]) throws -> (tensors: [String: Loaded], metadata: [String: String]) {
        guard data.count >= 8 else { throw FormatError.malformed("shorter than the 8-byte header length") }
        let header = try Header(lengthBytes: Array(data[0..<8]), fileSize: data.count) { data[$0] }
        var tensors: [String: Loaded] = [:]
        for (name, e) in header.entries {
            tensors[name] = Loaded(dtype: e.dtype, shape: e.shape, bytes: data[(header.dataStart + e.bytes.lowerBound)..<(header.dataStart + e.bytes.upperBound)])
        }
        return (tensors, header.metadata)
    }

    /// A safetensors file's header: where each tensor's bytes are, and the metadata. Every
    /// entry is checked against the file's size and, for the dtypes written here, against its
    /// shape, so that reading a tensor can never run past its bytes.
    public struct Header {
        public struct Entry { public let dtype: String; public let shape: [Int]; public let bytes: Range<Int> }
        /// The file offset where tensor data begins (8 + header length).
        public let dataStart: Int
        public let entries: [String: Entry]
        public let metadata: [String: String]

        init(lengthBytes: [UInt8], fileSize: Int, headerBytes: (Range<Int>) throws -> ArraySlice<UInt8>) throws {
            var n: UInt64 = 0
            for i in 0..<8 { n |= UInt64(lengthBytes[i]) << (UInt64(i) * 8) }
            guard n <= UInt64(fileSize - 8) else { throw FormatError.malformed("header length \(n) exceeds file size \(fileSize)") }
            dataStart = 8 + Int(n)
            guard let obj = try? JSONSerialization.jsonObject(with: Data(try headerBytes(8..<dataStart))) as? [String: Any] else {
                throw FormatError.malformed("header is not a JSON object")
            }
            var entries: [String: Entry] = [:]
            var metadata: [String: String] = [:]
            for (name, value) in obj {
                if name == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
                guard let d = value as? [String: Any], let dtype = d["dtype"] as? String,
                      let shape = d["shape"] as? [Int], shape.allSatisfy({ $0 >= 0 }), let offs = d["data_offsets"] as? [Int], offs.count == 2,
                      offs[0] >= 0, offs[0] <= offs[1], offs[1] <= fileSize - dataStart else {
                    throw FormatError.malformed("bad entry for \(name)")
                }
                if let size = ["F32": 4, "I32": 4, "F16": 2, "BF16": 2, "U8": 1, "I64": 8][dtype] {
                    var count = size, overflow = false
                    for d in shape where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: d) }
                    guard !overflow, count == offs[1] - offs[0] else {
                        throw FormatError.malformed("\(name): shape \(shape) of \(dtype) does not match its \(offs[1] - offs[0]) bytes")
                    }
                }
                entries[name] = Entry(dtype: dtype, shape: shape, bytes: offs[0]..<offs[1])
            }
            self.entries = entries
            self.metadata = metadata
        }

        /// Reads only the header of the file at `path`.
        public init(fileAtPath path: String) throws {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw FormatError.malformed("cannot open \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_size >= 8 else { throw FormatError.malformed("shorter than the 8-byte header length") }
            var length = [UInt8](repeating: 0, count: 8)
            guard pread(fd, &length, 8, 0) == 8 else { throw FormatError.malformed("cannot read the header length") }
            try self.init(lengthBytes: length, fileSize: Int(st.st_size)) { range in
                var buffer = [UInt8](repeating: 0, count: range.count)
                guard pread(fd, &buffer, range.count, off_t(range.lowerBound)) == range.count else {
                    throw FormatError.malformed("cannot read the header")
                }
                return buffer[...]
            }
        }

        /// Elements `range` of the F32 tensor `name` of the file at `path`, read with one pread.
        public func floats(_ name: String, _ range: Range<Int>, path: String) throws -> [Float] {
            guard let e = entries[name], e.dtype == "F32" else { throw FormatError.malformed("no F32 tensor \(name)") }
            guard range.lowerBound >= 0, range.upperBound <= e.bytes.count / 4 else {
                throw FormatError.malformed("\(name) has \(e.bytes.count / 4) elements, \(range) asked")
            }
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { throw FormatError.malformed("cannot open \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var out = [Float](repeating: 0, count: range.count)
            let want = range.count * 4
            let got = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(dataStart + e.bytes.lowerBound + range.lowerBound * 4)) }
            guard got == want else { throw FormatError.malformed("\(name): short read") }
            return out
        }
    }

    /// `s` as a JSON string literal, quotes included.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for ch in s.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if ch.value < 0x20 { out += String(format: "\\u%04x", ch.value) } else { out.unicodeScalars.append(ch) }
            }
        }
        return out + "\""
    }
}
