import CMPI

/// Element types the Communicator can move, with their MPI datatype.
public protocol MPIScalar {
    static var mpiType: MPI_Datatype { get }
    /// Whether the order of a reduction's operands can change its result (`Float`, `Double`).
    static var isFloatingPoint: Bool { get }
    /// a[i] = op(a[i], b[i]) for i < count, equal to op(b[i], a[i]) bit for bit, so that two
    /// ranks that each combine their own values with the other's agree (the two-rank
    /// all-reduce): a sum is commutative in IEEE arithmetic except for which NaN it returns,
    /// so every NaN result becomes the one quiet NaN; max and min return that NaN if either is
    /// NaN and order +0 above -0.
    static func combine(into a: UnsafeMutablePointer<Self>, _ b: UnsafePointer<Self>, count: Int, _ op: ReduceOp)
}

/// `combine` for floating-point elements (one loop per operator, so that the sum vectorises).
@inline(__always)
func combineFloating<F: BinaryFloatingPoint>(_ a: UnsafeMutablePointer<F>, _ b: UnsafePointer<F>, _ n: Int, _ op: ReduceOp) {
    switch op {
    case .sum:
        for i in 0..<n { let s = a[i] + b[i]; a[i] = s != s ? .nan : s }
    case .max, .min:
        let wantMax = op == .max
        for i in 0..<n {
            let x = a[i], y = b[i]
            if x.isNaN || y.isNaN { a[i] = .nan }
            else if x == y { a[i] = (x.sign == .minus) == wantMax ? y : x }  // +0 / -0
            else { a[i] = (x > y) == wantMax ? x : y }
        }
    }
}

@inline(__always)
func combineInteger<I: FixedWidthInteger>(_ a: UnsafeMutablePointer<I>, _ b: UnsafePointer<I>, _ n: Int, _ op: ReduceOp) {
    switch op {
    case .sum: for i in 0..<n { a[i] &+= b[i] }
    case .max: for i in 0..<n { a[i] = Swift.max(a[i], b[i]) }
    case .min: for i in 0..<n { a[i] = Swift.min(a[i], b[i]) }
    }
}

extension Float: MPIScalar {
    public static var mpiType: MPI_Datatype { cmpi_float() }
    public static func combine(into a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int, _ op: ReduceOp) {
        guard op == .sum else { return combineFloating(a, b, count, op) }
        // The sum eight lanes at a time, each NaN made the one quiet NaN in the same pass (a
        // scalar NaN test per element made 2-rank all-reduces twice as slow).
        var i = 0
        while i + 8 <= count {
            var v = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            v.replace(with: .nan, where: v .!= v)
            UnsafeMutableRawPointer(a + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        if i < count { combineFloating(a + i, b + i, count - i, op) }
    }
}
// Every other element type: the shared loops above.
extension MPIScalar where Self: BinaryFloatingPoint {
    public static var isFloatingPoint: Bool { true }
    public static func combine(into a: UnsafeMutablePointer<Self>, _ b: UnsafePointer<Self>, count: Int, _ op: ReduceOp) {
        combineFloating(a, b, count, op)
    }
}
extension MPIScalar where Self: FixedWidthInteger {
    public static var isFloatingPoint: Bool { false }
    public static func combine(into a: UnsafeMutablePointer<Self>, _ b: UnsafePointer<Self>, count: Int, _ op: ReduceOp) {
        combineInteger(a, b, count, op)
    }
}
extension Double: MPIScalar { public static var mpiType: MPI_Datatype { cmpi_double() } }
extension Int32: MPIScalar { public static var mpiType: MPI_Datatype { cmpi_int32() } }
extension Int64: MPIScalar { public static var mpiType: MPI_Datatype { cmpi_int64() } }
extension UInt8: MPIScalar { public static var mpiType: MPI_Datatype { cmpi_uint8() } }

/// Reduction operators.
public enum ReduceOp: Sendable {
    case sum, max, min
    var mpi: MPI_Op {
        switch self {
        case .sum: return cmpi_op_sum()
        case .max: return cmpi_op_max()
        case .min: return cmpi_op_min()
        }
    }
}
