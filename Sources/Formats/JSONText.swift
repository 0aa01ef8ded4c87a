import Foundation

/// Deterministic JSON text (sorted keys, pretty printed) from plain dictionaries and arrays.
public enum JSONText {
    public static func encode(_ object: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: sanitize(object), options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
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
