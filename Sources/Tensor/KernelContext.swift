#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The hooks kernels report to: who costs them (`accountant`, the emulated device clock of
/// a trainer), who profiles them (`profiler`, `gemmShapes`: benchmarks), and where the
/// weight-gradient GEMMs of a zero-bubble backward are set aside (`deferredWeightGrads`).
///
/// A context is a value and is never global: `Kernels.with(context) { ... }` installs it on
/// the calling thread for the duration of the closure and restores the enclosing one after
/// (nesting works), so two trainers in one process, each running its steps inside its own
/// context, cannot see each other's kernels. Outside any `with`, kernels report to nobody.
public struct KernelContext {
    public var accountant: KernelAccountant?
    /// Benchmark hooks (nil in training): `profiler` hears every kernel boundary with the
    /// source file that ran it, `gemmShapes` every GEMM's shape.
    public var profiler: KernelProfiler?
    public var gemmShapes: ((GemmShape) -> Void)?
    /// When set, the weight-gradient GEMMs of `Kernels.linearBackward` are queued here
    /// instead of run: the zero-bubble split of a backward into input gradients now (I)
    /// and weight gradients later (W).
    public var deferredWeightGrads: WeightGradQueue?

    public init(accountant: KernelAccountant? = nil, profiler: KernelProfiler? = nil,
                gemmShapes: ((GemmShape) -> Void)? = nil, deferredWeightGrads: WeightGradQueue? = nil) {
        self.accountant = accountant
        self.profiler = profiler
        self.gemmShapes = gemmShapes
        self.deferredWeightGrads = deferredWeightGrads
    }
}

extension Kernels {
    /// The context installed on this thread by the innermost enclosing `with` (empty outside any).
    public static var context: KernelContext { KernelContextSlot.current.context }

    /// Runs `body` with `context` installed on this thread, then restores the one it replaced.
    @inline(__always)
    public static func with<R>(_ context: KernelContext, _ body: () throws -> R) rethrows -> R {
        let slot = KernelContextSlot.current
        let saved = slot.context
        slot.context = context
        defer { slot.context = saved }
        return try body()
    }

    /// Runs `body` with accounting off (the other hooks stay): for loops of small GEMMs
    /// that a GPU runs as one batched kernel, which the caller then reports once with `account`.
    @inline(__always)
    public static func unaccounted<R>(_ body: () throws -> R) rethrows -> R {
        var c = context
        c.accountant = nil
        return try with(c, body)
    }
}

/// One thread's installed context. Kept in thread-local storage (a pthread key whose
/// destructor releases it when the thread ends), so a context installed on one thread is
/// never seen by another.
final class KernelContextSlot {
    var context = KernelContext()

    static let key: pthread_key_t = {
        var key = pthread_key_t()
        #if canImport(Glibc)
        let rc = pthread_key_create(&key) { if let p = $0 { Unmanaged<KernelContextSlot>.fromOpaque(p).release() } }
        #else
        let rc = pthread_key_create(&key) { Unmanaged<KernelContextSlot>.fromOpaque($0).release() }
        #endif
        precondition(rc == 0, "pthread_key_create failed (\(rc))")
        return key
    }()

    /// This thread's slot, created on first use.
    static var current: KernelContextSlot {
        @inline(__always) get {
            if let p = pthread_getspecific(key) { return Unmanaged<KernelContextSlot>.fromOpaque(p).takeUnretainedValue() }
            let slot = KernelContextSlot()
            pthread_setspecific(key, Unmanaged.passRetained(slot).toOpaque())
            return slot
        }
    }
}
