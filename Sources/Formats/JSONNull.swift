import Foundation

/// A number that may legitimately not be finite (a diverged loss, a skipped step's gradient
/// norm). JSON has no NaN or infinity: it is written as null and null reads back as NaN. The
/// key itself is always written and always required.
@propertyWrapper
public struct NullIfNotFinite<Value: NonFiniteAsNull>: Codable, Sendable {
    public var wrappedValue: Value
    public init(wrappedValue: Value) { self.wrappedValue = wrappedValue }
    public init(from decoder: Decoder) throws { wrappedValue = try Value(nullAsNaN: decoder) }
    public func encode(to encoder: Encoder) throws { try wrappedValue.encodeNonFiniteAsNull(to: encoder) }
}

/// The values `NullIfNotFinite` can hold: a Double or an array of them.
public protocol NonFiniteAsNull: Sendable {
    init(nullAsNaN decoder: Decoder) throws
    func encodeNonFiniteAsNull(to encoder: Encoder) throws
}

extension Double: NonFiniteAsNull {
    public init(nullAsNaN decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        self = c.decodeNil() ? .nan : try c.decode(Double.self)
    }

    public func encodeNonFiniteAsNull(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if isFinite { try c.encode(self) } else { try c.encodeNil() }
    }
}

extension Array: NonFiniteAsNull where Element == Double {
    public init(nullAsNaN decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        var out: [Double] = []
        while !c.isAtEnd { out.append(try c.decodeNil() ? .nan : try c.decode(Double.self)) }
        self = out
    }

    public func encodeNonFiniteAsNull(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        for x in self { if x.isFinite { try c.encode(x) } else { try c.encodeNil() } }
    }
}

/// An optional value whose key is always written: null when there is none (the entropy floor
/// of a text file). Reading requires the key; null reads back as nil.
@propertyWrapper
public struct NullIfNil<Wrapped: Codable & Sendable>: Codable, Sendable {
    public var wrappedValue: Wrapped?
    public init(wrappedValue: Wrapped?) { self.wrappedValue = wrappedValue }
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        wrappedValue = c.decodeNil() ? nil : try c.decode(Wrapped.self)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}
