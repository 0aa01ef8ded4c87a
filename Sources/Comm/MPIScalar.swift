import CMPI

/// Element types the Communicator can move, with their MPI datatype.
public protocol MPIScalar {
    static var mpiType: MPI_Datatype { get }
}
extension Float: MPIScalar { public static var mpiType: MPI_Datatype { cmpi_float() } }
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
