import Foundation

/// The run directory's logs, written by rank 0 (and the supervisor): `steps.jsonl` (one
/// `StepLogLine` per completed step of every attempt), `events.jsonl` (one `RunEvent` per
/// attempt start, first step, checkpoint saved or loaded, failure, kill, restart) and
/// `heartbeat` (the last step), which the supervisor watches to detect a hang.
public struct RunLog {
    public let dir: String

    public init(dir: String) { self.dir = dir }

    public var stepsPath: String { dir + "/steps.jsonl" }
    public var eventsPath: String { dir + "/events.jsonl" }
    public var heartbeatPath: String { dir + "/heartbeat" }

    /// Appends an event. Writing is best effort (no run directory: nothing is written); a
    /// record JSON cannot hold (a non-finite number where its type allows none) is an error.
    public func event(_ e: RunEvent) throws { try append(e, to: eventsPath) }

    /// Appends a step line, as `event`.
    public func step(_ line: StepLogLine) throws { try append(line, to: stepsPath) }

    public func heartbeat(step: Int) {
        guard FileManager.default.fileExists(atPath: dir) else { return }
        try? "\(step) \(Date().timeIntervalSince1970)\n".write(toFile: heartbeatPath, atomically: true, encoding: .utf8)
    }

    /// Every step line of every attempt, in the order written.
    public func steps() throws -> [StepLogLine] { try Self.read(StepLogLine.self, from: stepsPath) }

    /// Every event, in the order written.
    public func events() throws -> [RunEvent] { try Self.read(RunEvent.self, from: eventsPath) }

    /// One JSON object per line, appended with O_APPEND (a line is written whole or, if the
    /// process dies in the middle, ignored by readers as unparsable).
    func append<T: Encodable>(_ record: T, to path: String) throws {
        let data = try JSONText.line(record)
        guard FileManager.default.fileExists(atPath: dir) else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { return }
        var line = [UInt8](data)
        line.append(0x0A)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Reads a JSON-lines file (none yet: no lines). A line that is not JSON at all (torn by a
    /// crash while it was written) is skipped; a JSON line that does not decode as `T` (a
    /// missing or renamed key) is an error naming the file and the line.
    public static func read<T: Decodable>(_ type: T.Type, from path: String) throws -> [T] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw JSONText.DecodeError(source: path, reason: "cannot read the file")
        }
        var out: [T] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let data = Data(line.utf8)
            guard (try? JSONSerialization.jsonObject(with: data)) != nil else { continue }
            out.append(try JSONText.decode(type, from: data, source: "\(path) line \(i + 1)"))
        }
        return out
    }
}
