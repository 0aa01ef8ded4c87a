/// Range checks of settings a user typed, with the one message shape every check uses:
/// `--layers must be between 1 and 1024 (got 0)`. NaN is outside every range (its
/// comparisons are false), so a non-finite value is refused wherever a finite range is given.
public enum Validation {
    public struct OutOfRange: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// `name` is the flag (or, for settings without one, the config key); `note` says what
    /// a special value means, e.g. "0 meaning never".
    public static func require<T: Comparable>(_ value: T, in range: ClosedRange<T>, _ name: String, note: String? = nil) throws {
        guard range.contains(value) else {
            throw OutOfRange("\(name) must be between \(range.lowerBound) and \(range.upperBound)\(note.map { ", \($0)" } ?? "") (got \(value))")
        }
    }

    /// Any requirement, stated in words, with the offending value.
    public static func require(_ ok: Bool, _ message: @autoclosure () -> String) throws {
        if !ok { throw OutOfRange(message()) }
    }

    /// Largest value of a count that feeds derived sizes: products of a few of them stay
    /// far below Int.max, so the sizes computed from them cannot overflow.
    public static let maxCount = 1 << 20
}
