import Foundation

/// An SVG picture of one step of a pipeline: stages as rows, emulated time across,
/// forward / backward / weight-gradient / communication / idle in distinct colours, each
/// compute block labelled with its micro-batch, in the manner of the schedule figures of
/// the GPipe, Megatron-LM and zero-bubble papers.
public enum TimelineSVG {
    public static func render(title: String, stages: [[Span]], from start: Double, to end: Double) -> String {
        let width = 1100.0, left = 70.0, rowHeight = 34.0, top = 46.0
        let plot = width - left - 20
        let scale = end > start ? plot / (end - start) : 1
        let height = top + Double(stages.count) * rowHeight + 56
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="22" font-size="14" font-weight="bold">\(escape(title))</text>

        """
        for (row, spans) in stages.enumerated() {
            let y = top + Double(row) * rowHeight
            out += "<text x=\"8\" y=\"\(fmt(y + rowHeight / 2 + 4))\">stage \(row)</text>\n"
            out += "<rect x=\"\(fmt(left))\" y=\"\(fmt(y))\" width=\"\(fmt(plot))\" height=\"\(fmt(rowHeight - 6))\" fill=\"\(color(.idle))\"/>\n"
            var labelled = Set<String>()  // a compute action split by messages is labelled once
            for s in spans where s.end > start && s.start < end && s.kind != .idle && s.stream == .compute {
                let x0 = left + (max(s.start, start) - start) * scale, x1 = left + (min(s.end, end) - start) * scale
                let w = max(x1 - x0, 0.5)
                out += "<rect x=\"\(fmt(x0))\" y=\"\(fmt(y))\" width=\"\(fmt(w))\" height=\"\(fmt(rowHeight - 6))\" fill=\"\(color(s.kind))\" stroke=\"white\" stroke-width=\"0.5\"><title>\(escape(s.kind.rawValue + " " + s.detail))</title></rect>\n"
                if s.kind.category == .compute, w > 14, !labelled.contains(s.detail), let label = microbatchLabel(s.detail) {
                    labelled.insert(s.detail)
                    out += "<text x=\"\(fmt(x0 + w / 2))\" y=\"\(fmt(y + rowHeight / 2 + 1))\" text-anchor=\"middle\" fill=\"white\">\(escape(label))</text>\n"
                }
            }
        }
        let legendY = top + Double(stages.count) * rowHeight + 18
        var x = left
        for (name, kind) in [("forward", SpanKind.forward), ("backward", .backward), ("weight gradient", .weightGrad),
                             ("communication", .allReduce), ("optimizer", .optimizer), ("idle (bubble)", .idle)] {
            out += "<rect x=\"\(fmt(x))\" y=\"\(fmt(legendY))\" width=\"12\" height=\"12\" fill=\"\(color(kind))\"/>"
            out += "<text x=\"\(fmt(x + 16))\" y=\"\(fmt(legendY + 10))\">\(name)</text>\n"
            x += 130
        }
        out += "<text x=\"\(fmt(left))\" y=\"\(fmt(legendY + 30))\" fill=\"#555\">emulated time: \(fmt((end - start) * 1e3)) ms from the first pipeline action to the step's end</text>\n"
        return out + "</svg>\n"
    }

    static func color(_ k: SpanKind) -> String {
        switch k {
        case .forward: return "#3b6fd4"
        case .backward: return "#2e9e5b"
        case .weightGrad: return "#17a2a2"
        case .optimizer: return "#8e5cc2"
        case .idle: return "#eeeeee"
        case .checkpoint: return "#999999"
        default: return "#f08c2e"
        }
    }

    /// "F3" -> "3", "B12.1" -> "12", "I0" -> "0".
    static func microbatchLabel(_ detail: String) -> String? {
        let digits = detail.drop { !$0.isNumber }.prefix { $0.isNumber }
        return digits.isEmpty ? nil : String(digits)
    }

    static func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
