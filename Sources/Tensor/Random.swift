/// Deterministic random numbers.
///
/// Every random draw of moe-train is a pure function of a key (seed, purpose, indices),
/// never of the order in which ranks happen to ask. That is what makes parameter
/// initialisation and data sampling independent of the parallel layout: a tensor
/// shard draws element `i` of the full tensor from the same key as the single-rank run.

/// SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche behaviour.
@inline(__always)
public func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Combines words into one key; order matters.
public func hashKey(_ words: UInt64...) -> UInt64 {
    var h: UInt64 = 0x6A09_E667_F3BC_C908
    for w in words { h = mix64(h ^ mix64(w)) }
    return h
}

/// FNV-1a of a string, for turning names (parameter paths, purposes) into key words.
public func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}

/// A uniform in [0, 1) from the top 24 bits of a key (exactly representable in Float).
@inline(__always)
public func unitFloat(_ key: UInt64) -> Float { Float(key >> 40) * (1.0 / 16_777_216.0) }

@inline(__always)
public func unitDouble(_ key: UInt64) -> Double { Double(key >> 11) * (1.0 / 9_007_199_254_740_992.0) }

/// Standard normal for element `index` of the stream `key` (Box-Muller on two hashed uniforms).
@inline(__always)
public func normalAt(_ key: UInt64, _ index: UInt64) -> Float {
    let u1 = unitDouble(mix64(key ^ (index &* 2 &+ 1)))
    let u2 = unitDouble(mix64(key ^ (index &* 2 &+ 2)))
    let r = (-2.0 * _log(max(u1, 1e-300))).squareRoot()
    return Float(r * _cos(2.0 * Double.pi * u2))
}

/// A small sequential generator (SplitMix64 stream) for places where draws are consumed
/// in a fixed order from a key, such as sampling one data sequence.
public struct SplitMix: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(key: UInt64) { state = key }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func nextDouble() -> Double { unitDouble(next()) }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
