import Foundation

/// The run directory's logs, written by rank 0 (and the supervisor): `steps.jsonl` (one
/// line per completed step of every attempt), `events.jsonl` (attempt start, first step,
/// checkpoint saved or loaded, failure, kill, restart) and `heartbeat` (the last step),
/// which the supervisor watches to detect a hang.
public struct RunLog {
    public let dir: String

    public init(dir: String) { self.dir = dir }

    public var stepsPath: String { dir + "/steps.jsonl" }
    public var eventsPath: String { dir + "/events.jsonl" }
    public var heartbeatPath: String { dir + "/heartbeat" }

    public func event(_ kind: String, _ fields: [String: Any] = [:]) {
        var f = fields
        f["event"] = kind
        f["time"] = Date().timeIntervalSince1970
        append(f, to: eventsPath)
    }

    public func step(_ fields: [String: Any]) { append(fields, to: stepsPath) }

    public func heartbeat(step: Int) {
        guard FileManager.default.fileExists(atPath: dir) else { return }
        try? "\(step) \(Date().timeIntervalSince1970)\n".write(toFile: heartbeatPath, atomically: true, encoding: .utf8)
    }

    /// One JSON object per line, appended with O_APPEND (a line is written whole or, if the
    /// process dies in the middle, ignored by readers as unparsable).
    func append(_ object: [String: Any], to path: String) {
        guard FileManager.default.fileExists(atPath: dir),
              let data = try? JSONSerialization.data(withJSONObject: JSONText.sanitize(object), options: [.sortedKeys]) else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { return }
        var line = [UInt8](data)
        line.append(0x0A)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Reads a JSON-lines file, skipping lines that do not parse (a torn last line).
    public static func read(_ path: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }
}
