import XCTest
import Emulation
import Tensor

final class CostModelTests: XCTestCase {
    let device = DeviceProfile(name: "test", peakFLOPS: 100e12, memoryBytes: 40e9, memoryBandwidth: 1e12,
                               flopsEfficiency: 0.5, memoryEfficiency: 0.8, kernelLaunchSeconds: 0,
                               intraNode: LinkClass(alpha: 2e-6, beta: 200e9), interNode: LinkClass(alpha: 10e-6, beta: 20e9))
    var cost: CostModel { CostModel(device: device, bytesPerElement: 2, links: LinkModel(intraNode: device.intraNode, interNode: device.interNode, gpusPerNode: 4)) }

    /// A compute-bound GEMM costs exactly FLOPs / (peak x efficiency).
    func testGemmOfKnownShape() {
        let m = 4096.0, n = 4096.0, k = 4096.0
        let flops = 2 * m * n * k
        let elements = m * k + k * n + m * n
        XCTAssertEqual(cost.kernel(flops: flops, elements: elements), flops / (100e12 * 0.5), accuracy: 1e-15)
        // A memory-bound kernel costs bytes / (bandwidth x efficiency).
        XCTAssertEqual(cost.kernel(flops: 1e6, elements: 1e9), 1e9 * 2 / (1e12 * 0.8), accuracy: 1e-15)
    }

    /// The clock in modeled mode charges a real GEMM exactly its roofline time.
    func testClockChargesTheGemmItRan() {
        let clock = DeviceClock(mode: .modeled, cost: cost)
        let m = 64, n = 32, k = 16
        let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [k, n]), c = Tensor(zeros: [m, n])
        Kernels.with(KernelContext(accountant: clock)) {
            clock.compute(.forward, "gemm") {
                Kernels.gemm(transA: false, transB: false, m: m, n: n, k: k, a: a.ptr, lda: k, b: b.ptr, ldb: n, c: c.ptr, ldc: n)
            }
        }
        let expected = max(2.0 * Double(m * n * k) / (100e12 * 0.5), Double(m * k + k * n + m * n) * 2 / (1e12 * 0.8))
        XCTAssertEqual(clock.now, expected)
        XCTAssertEqual(clock.spans.count, 1)
        XCTAssertEqual(clock.spans[0].kind, .forward)
        XCTAssertEqual(clock.executedFLOPs, 2.0 * Double(m * n * k))
    }

    /// Ring all-reduce: 2(n-1)/n x bytes/beta + 2(n-1) x alpha.
    func testRingAllReduce() {
        let link = LinkClass(alpha: 5e-6, beta: 100e9)
        for n in [2, 3, 4, 8, 16] {
            let bytes = 64e6
            let want = 2 * Double(n - 1) / Double(n) * bytes / 100e9 + 2 * Double(n - 1) * 5e-6
            XCTAssertEqual(cost.collective(.allReduce, bytes: bytes, ranks: n, link: link), want, accuracy: 1e-15)
            let half = Double(n - 1) / Double(n) * bytes / 100e9 + Double(n - 1) * 5e-6
            XCTAssertEqual(cost.collective(.reduceScatter, bytes: bytes, ranks: n, link: link), half, accuracy: 1e-15)
            XCTAssertEqual(cost.collective(.allGather, bytes: bytes, ranks: n, link: link), half, accuracy: 1e-15)
        }
        XCTAssertEqual(cost.collective(.allReduce, bytes: 1e6, ranks: 1, link: link), 0)
    }

    /// Point-to-point: alpha + bytes/beta; intra- and inter-node pairs differ.
    func testPointToPointAndLinkClasses() {
        let links = cost.links
        XCTAssertEqual(links.link(for: [0, 3]), device.intraNode)
        XCTAssertEqual(links.link(for: [3, 4]), device.interNode)
        XCTAssertEqual(links.link(for: [4, 5, 6, 7]), device.intraNode)
        XCTAssertEqual(links.link(for: [0, 1, 2, 3, 4]), device.interNode)
        let bytes = 1e6
        let intra = cost.pointToPoint(bytes: bytes, link: links.link(for: [0, 1]))
        let inter = cost.pointToPoint(bytes: bytes, link: links.link(for: [0, 4]))
        XCTAssertEqual(intra, 2e-6 + bytes / 200e9, accuracy: 1e-15)
        XCTAssertEqual(inter, 10e-6 + bytes / 20e9, accuracy: 1e-15)
        XCTAssertGreaterThan(inter, intra)
        XCTAssertEqual(LinkClass.ideal.seconds(1e9), 0)
    }

    /// Receive: idle until the sender sent, then the transfer; collectives wait for the slowest.
    func testReceiveAndCollectiveSpans() {
        let clock = DeviceClock(mode: .modeled, cost: cost)
        clock.receive(sentAt: 3, transfer: 0.5, detail: "x", wallStart: 0)
        XCTAssertEqual(clock.now, 3.5)
        XCTAssertEqual(clock.spans.map(\.kind), [.idle, .recvWait])
        XCTAssertEqual(clock.spans[0].duration, 3)
        clock.collective(.allReduce, groupStart: 4, duration: 1, detail: "ar", wallStart: 0)
        XCTAssertEqual(clock.now, 5)
        XCTAssertEqual(clock.spans.map(\.kind), [.idle, .recvWait, .idle, .allReduce])
        let totals = SpanTotals(clock.spans)
        XCTAssertEqual(totals.idle, 3.5, accuracy: 1e-12)
        XCTAssertEqual(totals.communication, 1.5, accuracy: 1e-12)
    }

    func testShippedDeviceProfilesLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["a100-40gb", "a100-80gb", "h100-sxm"] {
            let p = try DeviceProfile.load(path: root.appendingPathComponent("configs/devices/\(name).json").path)
            XCTAssertEqual(p.name, name)
            XCTAssertFalse(p.source.isEmpty)
            XCTAssertGreaterThan(p.intraNode.beta, p.interNode.beta)
        }
        let a100 = try DeviceProfile.load(path: root.appendingPathComponent("configs/devices/a100-40gb.json").path)
        XCTAssertEqual(a100.peakFLOPS, 312e12)
        // The calibrated profile: collectives reach the link's bandwidth times its efficiency,
        // and every fitted or default constant says where it comes from.
        let fitted = try DeviceProfile.load(path: root.appendingPathComponent("configs/devices/a100-80gb.json").path)
        XCTAssertEqual(fitted.intraNode.beta, 300e9 * fitted.intraNodeEfficiency, accuracy: 1)
        XCTAssertLessThan(fitted.intraNodeEfficiency, 1)
        XCTAssertEqual(fitted.withIntraNodeEfficiency(1).intraNode.beta, 300e9, accuracy: 1)
        XCTAssertEqual(Set(fitted.calibration.keys), ["flops_efficiency", "intra_node.efficiency", "memory_efficiency", "inter_node", "attention"])
    }
}
