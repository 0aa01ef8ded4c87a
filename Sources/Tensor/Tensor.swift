import CBLAS

/// Flat fp32 storage with named, shaped views.
///
/// All parameters of a model live in one `Storage` (as in llm.c), so that a parameter
/// is an offset and a shape, and sharding (tensor parallel slices, ZeRO-1 partitions)
/// is arithmetic on offsets. Activations use their own small storages.

/// How the process allocates large buffers.
public enum Allocation {
    /// glibc serves allocations from 128 KiB up by mapping fresh pages (raising that threshold
    /// only after such a block is freed, and returning heap memory above 128 KiB at its top),
    /// so a step's activations and gradients, and Open MPI's temporary buffers, fault in new
    /// zeroed pages again and again. Call once at start: allocations up to 32 MiB (glibc's
    /// largest threshold on 64-bit) come from the heap, and up to 64 MiB of freed memory at
    /// its top is kept for reuse. Returns false if glibc refused (then nothing is changed).
    @discardableResult
    public static func keepLargeBuffersInHeap() -> Bool {
        moe_keep_large_allocations_in_heap(32 << 20, 64 << 20) != 0
    }
}

/// An owned block of `Float`s, zero-initialised unless made with `init(uninitializedCount:)`. The pointer never escapes the
/// lifetime of the object: every `Tensor` that views it holds a strong reference.
public final class Storage: @unchecked Sendable {
    public let count: Int
    public let base: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "negative storage size")
        self.count = count
        base = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        base.initialize(repeating: 0, count: max(count, 1))
    }

    /// A block whose values are unspecified: for outputs that a kernel writes whole before
    /// anything reads them (a GEMM with beta 0, an elementwise map), so that no pass zeroes them.
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "negative storage size")
        self.count = count
        base = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    }

    deinit { base.deallocate() }
}

/// A row-major view of `shape` into a `Storage`, starting at `offset`.
public struct Tensor: @unchecked Sendable {
    public let storage: Storage
    public let offset: Int
    public let shape: [Int]
    public let count: Int

    /// A fresh zero tensor of the given shape.
    public init(zeros shape: [Int]) {
        let n = shape.reduce(1, *)
        self.storage = Storage(count: n)
        self.offset = 0
        self.shape = shape
        self.count = n
    }

    /// A tensor whose values are unspecified until written (`Storage(uninitializedCount:)`):
    /// only for outputs written whole before they are read.
    public init(uninitialized shape: [Int]) {
        let n = shape.reduce(1, *)
        self.storage = Storage(uninitializedCount: n)
        self.offset = 0
        self.shape = shape
        self.count = n
    }

    /// A view of `shape` elements of `storage` starting at `offset`.
    public init(view storage: Storage, offset: Int, shape: [Int]) {
        let n = shape.reduce(1, *)
        precondition(offset >= 0 && offset + n <= storage.count, "view out of range")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.count = n
    }

    /// A tensor holding a copy of `values`.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "shape does not match value count")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress { ptr.update(from: s, count: values.count) }
        }
    }

    /// Pointer to the first element. Valid while this tensor (or its storage) lives.
    @inline(__always) public var ptr: UnsafeMutablePointer<Float> { storage.base + offset }

    @inline(__always) public subscript(i: Int) -> Float {
        get { ptr[i] }
        nonmutating set { ptr[i] = newValue }
    }

    /// Rows x columns when the tensor is read as a matrix (all leading dimensions folded).
    public var rows: Int { shape.count <= 1 ? 1 : count / shape.last! }
    public var cols: Int { shape.last ?? 1 }

    public var array: [Float] { Array(UnsafeBufferPointer(start: ptr, count: count)) }

    public func fill(_ value: Float) { ptr.update(repeating: value, count: count) }
    public func zero() { fill(0) }

    /// A deep copy with its own storage.
    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.ptr.update(from: ptr, count: count)
        return t
    }

    /// A view of rows `[start, start+n)` of this tensor read as a matrix.
    public func rowSlice(_ start: Int, _ n: Int) -> Tensor {
        precondition(start >= 0 && start + n <= rows, "row slice out of range")
        return Tensor(view: storage, offset: offset + start * cols, shape: [n, cols])
    }
}
