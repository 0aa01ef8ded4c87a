import Foundation

/// Rank and world size as the MPI launcher announces them in the environment, readable
/// before MPI is initialised: bad input is rejected by every rank before any MPI call, so
/// that no rank can hang waiting for another that already gave up.
public struct LaunchEnvironment: Sendable {
    public let rank: Int
    public let worldSize: Int

    public init(rank: Int, worldSize: Int) { self.rank = rank; self.worldSize = worldSize }

    public static var current: LaunchEnvironment {
        let env = ProcessInfo.processInfo.environment
        func int(_ keys: [String]) -> Int? { keys.lazy.compactMap { env[$0].flatMap(Int.init) }.first }
        return LaunchEnvironment(rank: int(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]) ?? 0,
                                 worldSize: int(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]) ?? 1)
    }
}

/// An error in what the user asked for. Printed once by rank 0; every rank exits with status 2.
public struct UsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
