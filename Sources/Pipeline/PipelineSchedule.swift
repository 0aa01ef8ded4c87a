/// A generated, lowered and validated schedule for a stage plan.
public struct PipelineSchedule: Sendable {
    public let kind: ScheduleKind
    public let microbatches: Int
    /// Per pipeline rank: the compute actions, and the full list with its messages.
    public let compute: [[Action]]
    public let lowered: [[Action]]
    /// The simulator's view with uniform costs (forward 1, backward 2): in-flight micro-batches.
    public let uniform: Simulator.Result

    public struct InvalidSchedule: Error, CustomStringConvertible { public let description: String }

    /// The executor's message tags cover this many micro-batches and virtual stages (MPI
    /// guarantees tags up to 32767); projections, which send nothing, have no such bound.
    public static let executorLimits = (microbatches: 250, virtualStages: 64)

    public init(_ kind: ScheduleKind, plan: StagePlan, microbatches M: Int) throws {
        compute = try Generators.generate(kind, stages: plan.stages, microbatches: M, virtualStages: plan.virtualStages)
        lowered = Lowering.lower(compute, virtualStages: plan.virtualStages)
        // The validator: every rule, and no deadlock under blocking receives.
        uniform = try Simulator.run(lowered, virtualStages: plan.virtualStages, microbatches: M)
        self.kind = kind
        microbatches = M
    }
}
