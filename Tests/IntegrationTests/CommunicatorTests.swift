import Foundation
import XCTest
import TestSupport

/// Every Communicator operation over real MPI, on the world and on tp/pp/dp/ep sub-groups.
final class CommunicatorTests: XCTestCase {
    func check(np: Int, _ args: [String], extraMPIArgs: [String] = [], waits: String? = nil) throws {
        let r = try Subprocess.mpirun(np: np, ["comm-check"] + args, extraMPIArgs: extraMPIArgs, timeout: 120,
                                      environment: waits.map { ["MOE_TRAIN_WAIT": $0] } ?? [:])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("all passed"), r.output)
        XCTAssertFalse(r.stdout.contains("FAIL"), r.output)
        if let waits {
            XCTAssertTrue(r.stdout.contains(waits == "block" ? "blocking calls" : "sleeping waits"), r.output)
        }
    }

    func testTwoRanks() throws { try check(np: 2, ["--tp", "2"]) }
    /// Both ways of waiting, whatever this host's cores: MPI's blocking calls (every rank has
    /// a core) and the non-blocking calls with sleeping waits (ranks outnumber cores), where
    /// two ranks reduce by an exchange of their own.
    func testTwoRanksSleeping() throws { try check(np: 2, ["--tp", "2"], waits: "sleep") }
    func testTwoRanksBlocking() throws { try check(np: 2, ["--tp", "2"], waits: "block") }
    func testFourRanksBlocking() throws { try check(np: 4, ["--tp", "2", "--pp", "2"], waits: "block") }
    func testFourRanksTPxDPwithEP() throws { try check(np: 4, ["--tp", "2", "--ep", "4"]) }
    func testFourRanksTPxPP() throws { try check(np: 4, ["--tp", "2", "--pp", "2"]) }
    /// The transport used between hosts, on loopback.
    func testFourRanksOverTCP() throws {
        try check(np: 4, ["--tp", "2", "--ep", "2"], extraMPIArgs: ["--mca", "btl", "self,tcp"])
    }
}
