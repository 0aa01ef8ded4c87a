import Foundation
import Formats
import Tensor

/// Chrome trace-event JSON (the format Perfetto and chrome://tracing open): one process
/// per rank, spans as complete ("X") events in emulated microseconds. With `wall`, each
/// rank gets a second process holding the same spans on wall-clock time.
/// The output is byte-for-byte deterministic for the same spans.
public enum TraceWriter {
    public struct Track {
        public let rank: Int
        public let name: String
        public let spans: [Span]
        public init(rank: Int, name: String, spans: [Span]) { self.rank = rank; self.name = name; self.spans = spans }
    }

    public static func json(_ tracks: [Track], wall: Bool) -> String {
        var events: [String] = []
        let wallPidOffset = 100_000
        for t in tracks {
            events.append(meta(pid: t.rank, name: "process_name", value: "rank \(t.rank) (\(t.name))"))
            events.append(meta(pid: t.rank, name: "process_sort_index", number: t.rank))
            if t.spans.contains(where: { $0.stream == .communication }) {
                for stream in Stream.allCases {
                    events.append(meta(pid: t.rank, tid: tid(stream), name: "thread_name", value: "\(stream.rawValue) stream"))
                }
            }
            if wall {
                events.append(meta(pid: wallPidOffset + t.rank, name: "process_name", value: "rank \(t.rank) wall clock"))
                events.append(meta(pid: wallPidOffset + t.rank, name: "process_sort_index", number: wallPidOffset + t.rank))
            }
        }
        for t in tracks {
            for s in t.spans {
                events.append(event(pid: t.rank, s, start: s.start, end: s.end))
            }
            if wall {
                for s in t.spans { events.append(event(pid: wallPidOffset + t.rank, s, start: s.wallStart, end: s.wallEnd)) }
            }
        }
        return "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + events.joined(separator: ",\n") + "\n]}\n"
    }

    /// Whole nanoseconds, printed as microseconds with three decimals. Start and end are
    /// rounded first and the duration is their difference, so a span that ends where the
    /// next begins still does after rounding.
    static func nanoseconds(_ seconds: Double) -> Int64 { Int64((seconds * 1e9).rounded()) }

    static func microseconds(_ ns: Int64) -> String {
        let sign = ns < 0 ? "-" : ""
        let a = abs(ns)
        let frac = String(a % 1000)
        return "\(sign)\(a / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }

    static func event(pid: Int, _ s: Span, start: Double, end: Double) -> String {
        let t0 = nanoseconds(start), t1 = max(nanoseconds(end), t0)
        return "{\"name\":\(quote(s.kind.rawValue)),\"cat\":\(quote(s.kind.category.rawValue)),\"ph\":\"X\",\"pid\":\(pid),\"tid\":\(tid(s.stream)),"
            + "\"ts\":\(microseconds(t0)),\"dur\":\(microseconds(t1 - t0)),\"args\":{\"detail\":\(quote(s.detail))}}"
    }

    static func meta(pid: Int, tid: Int = 0, name: String, value: String) -> String {
        "{\"name\":\(quote(name)),\"ph\":\"M\",\"pid\":\(pid),\"tid\":\(tid),\"args\":{\"name\":\(quote(value))}}"
    }

    /// Chrome trace thread of a stream: 0 compute, 1 communication.
    static func tid(_ stream: Stream) -> Int { stream == .compute ? 0 : 1 }

    static func meta(pid: Int, name: String, number: Int) -> String {
        "{\"name\":\(quote(name)),\"ph\":\"M\",\"pid\":\(pid),\"tid\":0,\"args\":{\"sort_index\":\(number)}}"
    }

    static func quote(_ s: String) -> String { SafeTensors.jsonString(s) }

    // MARK: - Spans as bytes, for gathering over MPI

    /// Packs spans into doubles: kind index (plus the kinds' count on the communication
    /// stream), start, end, wall start, wall end, detail length, detail bytes.
    public static func pack(_ spans: [Span]) -> [UInt8] {
        var out = [UInt8]()
        func put(_ d: Double) { withUnsafeBytes(of: d.bitPattern.littleEndian) { out += $0 } }
        let kinds = SpanKind.allCases
        put(Double(spans.count))
        for s in spans {
            put(Double(kinds.firstIndex(of: s.kind)! + (s.stream == .communication ? kinds.count : 0))); put(s.start); put(s.end); put(s.wallStart); put(s.wallEnd)
            let d = Array(s.detail.utf8)
            put(Double(d.count)); out += d
        }
        return out
    }

    public static func unpack(_ bytes: ArraySlice<UInt8>) -> [Span] {
        var i = bytes.startIndex
        func get() -> Double {
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
            i += 8
            return Double(bitPattern: bits)
        }
        let kinds = SpanKind.allCases
        let n = Int(get())
        var spans: [Span] = []
        spans.reserveCapacity(n)
        for _ in 0..<n {
            let index = Int(get())
            let kind = kinds[index % kinds.count]
            let start = get(), end = get(), ws = get(), we = get()
            let len = Int(get())
            let detail = String(decoding: bytes[i..<(i + len)], as: UTF8.self)
            i += len
            spans.append(Span(kind: kind, start: start, end: end, detail: detail, wallStart: ws, wallEnd: we,
                              stream: index >= kinds.count ? .communication : .compute))
        }
        return spans
    }
}
