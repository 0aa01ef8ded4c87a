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
            XCTAssertTrue(r.stdout.contains(waits == "block" ? "waits: MPI's blocking calls" : "waits: sleeping"), r.output)
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
    /// Ranks that would choose differently (here by their environment; in a job across hosts,
    /// by their hosts' cores) must all wait the same way, or a two-rank reduction would be an
    /// exchange on one rank and MPI's call on the other: the job sleeps if any rank would.
    func testRanksThatWouldChooseDifferentlyAgree() throws {
        let bin = try Subprocess.binary
        let r = try Subprocess.mpirun(np: 1, ["comm-check", ":", "-np", "1", "-x", "MOE_TRAIN_WAIT=sleep", bin, "comm-check"],
                                      extraMPIArgs: ["-x", "MOE_TRAIN_WAIT=block"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        // One rank chose each way (each app context got its own MOE_TRAIN_WAIT), and the job sleeps.
        XCTAssertTrue(r.stdout.contains("on 2 ranks") && r.stdout.contains("waits: sleeping (non-blocking calls), 1 of 2 ranks could block")
                      && r.stdout.contains("all passed"), r.output)
    }
    func testFourRanksTPxPP() throws { try check(np: 4, ["--tp", "2", "--pp", "2"]) }
    /// The transport used between hosts, on loopback.
    func testFourRanksOverTCP() throws {
        try check(np: 4, ["--tp", "2", "--ep", "2"], extraMPIArgs: ["--mca", "btl", "self,tcp"])
    }
}
