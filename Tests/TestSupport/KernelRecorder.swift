import Tensor

/// An accountant that keeps every kernel reported to it, in order: what a test compares
/// with another run or with the kernel inventory.
public final class KernelRecorder: KernelAccountant {
    public struct Kernel: Hashable, CustomStringConvertible {
        public let flops: Double
        public let elements: Double
        public init(flops: Double, elements: Double) { self.flops = flops; self.elements = elements }
        public var description: String { "kernel(flops: \(flops), elements: \(elements))" }
    }
    public private(set) var kernels: [Kernel] = []
    public init() {}
    public func kernel(flops: Double, elements: Double) { kernels.append(Kernel(flops: flops, elements: elements)) }
    public func reset() { kernels.removeAll() }
    /// A context that reports to this recorder only.
    public var context: KernelContext { KernelContext(accountant: self) }
}
