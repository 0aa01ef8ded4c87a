import Foundation

/// Deterministic JSON text (sorted keys, pretty printed), from plain dictionaries and arrays
/// or from Codable records; and the strict reading of such records back.
public enum JSONText {
    public static func encode(_ object: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: sanitize(object), options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// A record as pretty-printed JSON with sorted keys and a final newline: byte for byte what
    /// `encode(_:)` writes for the same keys and values. JSON has no NaN or infinity: a record
    /// writes those as null only where its type says so (`NullIfNotFinite`); anywhere else a
    /// non-finite value is an error naming its key.
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try data(value, pretty: true), as: UTF8.self) + "\n"
    }

    /// A record as one line of compact JSON with sorted keys (no newline): JSON lines.
    public static func line<T: Encodable>(_ value: T) throws -> Data { try data(value, pretty: false) }

    static func data<T: Encodable>(_ value: T, pretty: Bool) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        do {
            return try encoder.encode(value)
        } catch let EncodingError.invalidValue(v, context) {
            throw EncodeError(type: "\(T.self)", reason: "\(path(context.codingPath)) holds \(v), which JSON cannot represent")
        }
    }

    /// Decodes a record, strictly: a missing key, a null where a value is required or a value
    /// of the wrong type is an error naming `source` (the file) and the key.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, source: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as DecodingError {
            throw DecodeError(source: source, reason: describe(error))
        }
    }

    /// Reads and decodes a whole file (`decode`); an unreadable file is an error naming it too.
    public static func read<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DecodeError(source: path, reason: "cannot read the file")
        }
        return try decode(type, from: data, source: path)
    }

    public struct DecodeError: Error, CustomStringConvertible {
        public let source: String
        public let reason: String
        public var description: String { "\(source): \(reason)" }
    }

    public struct EncodeError: Error, CustomStringConvertible {
        public let type: String
        public let reason: String
        public var description: String { "cannot write \(type) as JSON: \(reason)" }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case let .keyNotFound(key, c): return "missing key \(path(c.codingPath + [key]))"
        case let .valueNotFound(type, c): return "key \(path(c.codingPath)) is null; expected \(type)"
        case let .typeMismatch(type, c): return "key \(path(c.codingPath)) does not hold a \(type)"
        case let .dataCorrupted(c):
            return c.codingPath.isEmpty ? "not JSON (\(c.debugDescription))" : "key \(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return String(describing: error)
        }
    }

    /// `expert_load.per_layer_total[1]`; the top level is `(top level)`.
    static func path(_ keys: [CodingKey]) -> String {
        var s = ""
        for k in keys {
            if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
        }
        return s.isEmpty ? "(top level)" : "'\(s)'"
    }

    /// JSON has no NaN or infinity: such values become null. Only Swift floating-point
    /// values are touched: an NSNumber read back from JSON (a boolean, a 64-bit integer)
    /// casts to Double too, and must keep its type and every digit.
    static func sanitize(_ v: Any) -> Any {
        if type(of: v) == Double.self { let d = v as! Double; return d.isFinite ? d : NSNull() }
        if type(of: v) == Float.self { let f = v as! Float; return f.isFinite ? Double(f) : NSNull() }
        switch v {
        case let a as [Any]: return a.map(sanitize)
        case let m as [String: Any]: return m.mapValues(sanitize)
        default: return v
        }
    }
}
