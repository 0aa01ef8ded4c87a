import Comm
import Schedule
import Plan
import Emulation
import Model
import Tensor

/// Runs one rank's lowered action list for a step, with real messages: non-blocking sends
/// (completed at the end of the step), blocking receives where the schedule puts them (the
/// validator has shown that this order cannot deadlock), activations stashed per
/// micro-batch and chunk until their backward, gradients accumulated into the parameters.
/// It holds no schedule-specific logic: it runs whatever list it is given.
public final class PipelineExecutor {
    let model: Transformer
    let plan: StagePlan
    let pp: Communicator
    let actions: [Action]
    let clock: DeviceClock
    let rank: Int
    /// With `time_as`: told where each action begins and ends, to charge the timed model's work.
    public var timedAs: TimedAs?

    public init(model: Transformer, plan: StagePlan, pp: Communicator, actions: [Action], clock: DeviceClock) {
        self.model = model
        self.plan = plan
        self.pp = pp
        self.actions = actions
        self.clock = clock
        rank = pp.rank
    }

    public struct StepResult {
        public var stats: MicroBatchStats
        /// Largest number of activation floats held at once during the step.
        public var peakActivationFloats: Int
        /// Emulated time of this rank's first and last pipeline action.
        public var start: Double
        public var end: Double
        /// Emulated duration of each compute action (for replaying the step in the simulator).
        public var durations: [Action: Double]
    }

    struct Slot: Hashable { let mb: Int; let chunk: Int }


    /// Message tags: unique per (payload, micro-batch, receiving virtual stage), so that a
    /// send and its receive agree whatever chunk each side calls it; under MPI's guaranteed
    /// tag bound of 32767 for up to 250 micro-batches and 64 virtual stages.
    func tag(_ a: Action) -> Int {
        let activation = a.kind == .sendActivation || a.kind == .recvActivation
        let peer = Lowering.peer(of: a, rank: rank, stages: plan.stages)
        let receiver = a.kind.isSend ? peer.chunk * plan.stages + peer.rank : plan.virtualStage(rank: rank, chunk: a.chunk)
        return (a.microbatch * 64 + receiver) * 2 + (activation ? 0 : 1)
    }

    /// What the data-parallel side hears during a step (every hook runs inside the compute of
    /// the action it belongs to).
    public struct Hooks {
        /// Each `GradientUnit` whose gradients the step has completed: in the last backward of
        /// each chunk (the last micro-batch's), as its backward finishes the unit (overlapped
        /// gradient reduction starts there).
        public var gradientsReady: ((GradientUnit) -> Void)?
        /// Each unit just before a forward first reads its parameters (overlapped parameter
        /// gathers wait there; ZeRO-3 gathers them).
        public var parametersNeeded: ((GradientUnit) -> Void)?
        /// The same before each unit's backward (ZeRO-3 gathers its parameters again).
        public var parametersNeededInBackward: ((GradientUnit) -> Void)?
        /// Each unit every backward completes (each micro-batch's), and the end of every
        /// backward action (ZeRO-2 and 3 reduce each unit's gradients per micro-batch).
        public var unitCompleted: ((GradientUnit) -> Void)?
        public var backwardCompleted: (() -> Void)?
        /// A forward or backward action begins, reading these units in this order; and ends.
        public var passBegins: (([GradientUnit]) -> Void)?
        public var passEnds: (() -> Void)?
        public init() {}
    }

    public func runStep(width: Int, rows: Int, batch: (Int) -> (tokens: [Int32], targets: [Int32]), scale: LossScale,
                        hooks: Hooks = Hooks()) -> StepResult {
        let gradientsReady = hooks.gradientsReady, parametersNeeded = hooks.parametersNeeded
        let unitCompleted = hooks.unitCompleted, backwardCompleted = hooks.backwardCompleted
        var stats = MicroBatchStats(layers: model.config.layers, experts: model.config.experts)
        var passes: [Slot: Transformer.ChunkPass] = [:]
        var received: [Slot: Tensor] = [:]       // activations (forward inputs) and gradients (backward inputs)
        var gradients: [Slot: Tensor] = [:]
        var outgoing: [Slot: Tensor] = [:]       // input gradients waiting to be sent
        var queues: [Slot: WeightGradQueue] = [:]
        var pending: [(Communicator.Request, Tensor)] = []
        var live = 0, peak = 0
        func held(_ delta: Int) { live += delta; peak = max(peak, live) }
        var start = Double.infinity, end = 0.0
        var durations: [Action: Double] = [:]
        let lastStage = plan.virtualStageCount - 1
        var lastBackward: [Int: Int] = [:]   // chunk -> index of its last backward action
        for (i, a) in actions.enumerated() where a.kind == .backward { lastBackward[a.chunk] = i }
        for (index, a) in actions.enumerated() {
            let slot = Slot(mb: a.microbatch, chunk: a.chunk)
            let stage = plan.virtualStage(rank: rank, chunk: a.chunk)
            let peer = Lowering.peer(of: a, rank: rank, stages: plan.stages).rank
            switch a.kind {
            case .recvActivation, .recvGradient:
                let t = Tensor(zeros: [rows, width])
                pp.wait(pp.irecv(t.ptr, count: t.count, from: peer, tag: tag(a)))
                if a.kind == .recvActivation { received[slot] = t } else { gradients[slot] = t }
                held(t.count)
            case .sendActivation, .sendGradient:
                let t = a.kind == .sendActivation ? passes[slot]!.output : outgoing.removeValue(forKey: slot)!
                pending.append((pp.isend(UnsafePointer(t.ptr), count: t.count, to: peer, tag: tag(a)), t))
            case .forward:
                let layers = plan.layers(rank: rank, chunk: a.chunk)
                let io = batch(a.microbatch)
                let input: Transformer.ChunkInput = stage == 0 ? .tokens(io.tokens) : .activation(received.removeValue(forKey: slot)!)
                if stage > 0 { held(-rows * width) }   // from now on counted by the pass, as its input
                start = min(start, clock.now)
                let t0 = clock.now
                timedAs?.beginForward(chunk: a.chunk, microbatch: a.microbatch, layers: layers, embedding: stage == 0,
                                      head: stage == lastStage, name: a.description)
                let pass = clock.compute(.forward, a.description) {
                    hooks.passBegins?(plan.units(virtualStage: stage))
                    let pass = model.forwardChunk(layers: layers, input: input, targets: stage == lastStage ? io.targets : nil, scale: scale,
                                                  parametersNeeded: parametersNeeded)
                    hooks.passEnds?()
                    return pass
                }
                timedAs?.end()
                end = clock.now
                durations[a] = end - t0
                passes[slot] = pass
                held(pass.activationFloats)
                held(pass.transientFloats); held(-pass.transientFloats)   // a layer's working set while it ran
                stats.merge(pass.stats)
            case .backward, .backwardInput:
                let pass = passes.removeValue(forKey: slot)!
                let grad = gradients.removeValue(forKey: slot)
                if let grad { held(-grad.count) }
                let queue = a.kind == .backwardInput ? WeightGradQueue() : nil
                held(pass.transientFloats); held(-pass.transientFloats)   // a layer recomputed at a time
                start = min(start, clock.now)
                let t0 = clock.now
                var kernels = Kernels.context   // the caller's hooks, and this action's weight-gradient queue
                kernels.deferredWeightGrads = queue
                precondition(unitCompleted == nil || a.kind == .backward, "per-micro-batch gradient units need a backward that completes the weight gradients")
                let last = lastBackward[a.chunk] == index ? gradientsReady : nil
                let ready: ((GradientUnit) -> Void)? = last == nil && unitCompleted == nil ? nil : { unitCompleted?($0); last?($0) }
                timedAs?.beginBackward(chunk: a.chunk, microbatch: a.microbatch, layers: pass.layers, embedding: stage == 0,
                                       head: stage == lastStage, name: a.description)
                let dx = clock.compute(.backward, a.description) {
                    Kernels.with(kernels) {
                        hooks.passBegins?(plan.units(virtualStage: stage).reversed())
                        let dx = model.backwardChunk(pass, outputGradient: grad, scale: scale, gradientsReady: ready,
                                                     parametersNeeded: hooks.parametersNeededInBackward)
                        hooks.passEnds?()
                        backwardCompleted?()
                        return dx
                    }
                }
                timedAs?.end()
                end = clock.now
                durations[a] = end - t0
                held(-pass.activationFloats)
                if let queue { queues[slot] = queue; held(queue.floats) }
                if let dx { outgoing[slot] = dx }
            case .backwardWeight:
                let queue = queues.removeValue(forKey: slot)!
                let floats = queue.floats
                let t0 = clock.now
                clock.compute(.weightGrad, a.description) { queue.run() }
                end = clock.now
                durations[a] = end - t0
                held(-floats)
            }
        }
        for (request, _) in pending { pp.wait(request) }
        stats.peakActivationFloats = peak
        return StepResult(stats: stats, peakActivationFloats: peak, start: start.isFinite ? start : clock.now, end: end,
                          durations: durations)
    }
}
