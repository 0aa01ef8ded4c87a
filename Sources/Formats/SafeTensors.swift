import Foundation

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
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(data[i]) << (UInt64(i) * 8) }
        guard n <= UInt64(data.count - 8) else { throw FormatError.malformed("header length \(n) exceeds file size \(data.count)") }
        let headerEnd = 8 + Int(n)
        guard let obj = try? JSONSerialization.jsonObject(with: Data(data[8..<headerEnd])) as? [String: Any] else {
            throw FormatError.malformed("header is not a JSON object")
        }
        var tensors: [String: Loaded] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in obj {
            if name == "__metadata__" { metadata = value as? [String: String] ?? [:]; continue }
            guard let d = value as? [String: Any], let dtype = d["dtype"] as? String,
                  let shape = d["shape"] as? [Int], let offs = d["data_offsets"] as? [Int], offs.count == 2,
                  offs[0] >= 0, offs[0] <= offs[1], headerEnd + offs[1] <= data.count else {
                throw FormatError.malformed("bad entry for \(name)")
            }
            tensors[name] = Loaded(dtype: dtype, shape: shape, bytes: data[(headerEnd + offs[0])..<(headerEnd + offs[1])])
        }
        return (tensors, metadata)
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
