/// A generated, lowered and validated schedule for `stages` pipeline ranks holding
/// `virtualStages` model chunks each.
public struct PipelineSchedule: Sendable {
    public let kind: ScheduleKind
    public let microbatches: Int
    /// Per pipeline rank: the compute actions, and the full list with its messages.
    public let compute: [[Action]]
    public let lowered: [[Action]]
    /// The simulator's view with uniform costs (forward 1, backward 2): in-flight micro-batches.
    public let uniform: Simulator.Result

    /// The executor's message tags cover this many micro-batches and virtual stages (MPI
    /// guarantees tags up to 32767); projections, which send nothing, have no such bound.
    public static let executorLimits = (microbatches: 250, virtualStages: 64)

    public init(_ kind: ScheduleKind, stages: Int, virtualStages: Int, microbatches M: Int) throws {
        compute = try Generators.generate(kind, stages: stages, microbatches: M, virtualStages: virtualStages)
        lowered = Lowering.lower(compute, virtualStages: virtualStages)
        // The validator: every rule, and no deadlock under blocking receives.
        uniform = try Simulator.run(lowered, virtualStages: virtualStages, microbatches: M)
        self.kind = kind
        microbatches = M
    }
}
