import Foundation
import XCTest
import Tensor
import TestSupport

/// The kernel hooks are scoped, never global: `Kernels.with` installs a context for a
/// closure on the calling thread only, and restores the enclosing one after.
final class KernelContextTests: XCTestCase {
    final class Boundaries: KernelProfiler {
        var files: [String] = []
        func boundary(file: StaticString) { files.append("\(file)") }
    }

    func gemm(_ m: Int) {
        let a = Tensor(zeros: [m, 2]), b = Tensor(zeros: [2, 3]), c = Tensor(zeros: [m, 3])
        Kernels.gemm(transA: false, transB: false, m: m, n: 3, k: 2, a: a.ptr, lda: 2, b: b.ptr, ldb: 3, c: c.ptr, ldc: 3)
    }

    func testNestingRestoresTheEnclosingContext() {
        let outer = KernelRecorder(), inner = KernelRecorder()
        gemm(1)                                   // outside any context: reported to nobody
        Kernels.with(outer.context) {
            Kernels.account(flops: 1, elements: 1)
            Kernels.with(inner.context) {
                gemm(4)
                Kernels.unaccounted { gemm(5) }   // accounting off, inside the inner context
                Kernels.account(flops: 2, elements: 2)
            }
            Kernels.account(flops: 3, elements: 3)
        }
        Kernels.account(flops: 9, elements: 9)     // outside again
        XCTAssertEqual(outer.kernels.map(\.flops), [1, 3])
        XCTAssertEqual(inner.kernels.map(\.flops), [2 * 4 * 3 * 2 as Double, 2])
        XCTAssertNil(Kernels.context.accountant)
    }

    /// `unaccounted` silences the accountant only: a benchmark's profiler still hears the GEMMs.
    func testUnaccountedKeepsTheOtherHooks() {
        let recorder = KernelRecorder(), profiler = Boundaries()
        var shapes: [GemmShape] = []
        let context = KernelContext(accountant: recorder, profiler: profiler, gemmShapes: { shapes.append($0) })
        Kernels.with(context) { Kernels.unaccounted { gemm(3) } }
        XCTAssertTrue(recorder.kernels.isEmpty)
        XCTAssertEqual(shapes.map(\.m), [3])
        XCTAssertEqual(profiler.files.first, "GEMM")
    }

    /// A context installed on one thread is not seen by another, which runs with its own.
    func testContextsArePerThread() {
        let main = KernelRecorder(), other = KernelRecorder()
        let started = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        let thread = Thread {
            Kernels.account(flops: -1, elements: 0)   // main's context is installed, but not here: nobody hears this
            Kernels.with(other.context) {
                started.signal()
                proceed.wait()                     // main reports while this thread's context is installed
                self.gemm(2)
            }
            done.signal()
        }
        Kernels.with(main.context) {
            thread.start()
            started.wait()
            gemm(7)
            proceed.signal()
            done.wait()
            gemm(8)
        }
        func flops(_ m: Double) -> Double { 2 * m * 3 * 2 }
        XCTAssertEqual(main.kernels.map(\.flops), [flops(7), flops(8)])
        XCTAssertEqual(other.kernels.map(\.flops), [flops(2)])
    }

    /// A context that defers weight gradients queues them; running the queue later reports
    /// them to whichever context is installed then.
    func testDeferredWeightGradientsRunInTheLaterContext() {
        let now = KernelRecorder(), later = KernelRecorder()
        let x = Tensor(zeros: [4, 3]), w = Tensor(zeros: [2, 3]), dy = Tensor(zeros: [4, 2])
        let dx = Tensor(zeros: [4, 3]), dw = Tensor(zeros: [2, 3])
        let queue = WeightGradQueue()
        var deferring = now.context
        deferring.deferredWeightGrads = queue
        Kernels.with(deferring) { Kernels.linearBackward(x, w, dy, dx: dx, dw: dw) }
        XCTAssertEqual(now.kernels.count, 1)       // dx only
        XCTAssertEqual(queue.floats, x.count + dy.count)
        Kernels.with(later.context) { queue.run() }
        XCTAssertEqual(later.kernels, [KernelRecorder.Kernel(flops: 2 * 2 * 3 * 4, elements: 2 * 4 + 4 * 3 + 2 * 2 * 3)])
        XCTAssertTrue(queue.isEmpty)
    }
}
