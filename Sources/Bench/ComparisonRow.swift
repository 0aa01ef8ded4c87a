import Formats

/// One schedule's row of `compare.json`: the run's summary, whose `schedule` key names the row.
public struct ComparisonRow: Codable, Sendable {
    public var schedule: String
    public var summary: RunSummary

    public init(schedule: String, summary: RunSummary) {
        self.schedule = schedule
        self.summary = summary
    }

    public init(from decoder: Decoder) throws {
        summary = try RunSummary(from: decoder)
        schedule = summary.schedule
    }

    public func encode(to encoder: Encoder) throws {
        var s = summary
        s.schedule = schedule
        try s.encode(to: encoder)
    }
}

/// `compare.json`: one row per schedule, in the order run.
public struct ComparisonReport: Codable, Sendable {
    public var schedules: [ComparisonRow]

    public init(schedules: [ComparisonRow]) { self.schedules = schedules }
}
