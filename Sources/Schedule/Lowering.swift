/// Adds the messages a list of compute actions needs. With P ranks and v chunks per rank,
/// chunk c of rank r is global virtual stage c*P + r; activations flow to the next
/// virtual stage, gradients to the previous one.
///
/// - before a forward that is not on the first virtual stage: receive its activation;
/// - after a forward that is not on the last virtual stage: send the activation;
/// - before a backward (B or I) that is not on the last virtual stage: receive its gradient;
/// - after a backward (B or I) that is not on the first virtual stage: send the gradient.
public enum Lowering {
    public static func lower(_ compute: [[Action]], virtualStages v: Int) -> [[Action]] {
        let P = compute.count
        let last = P * v - 1
        return compute.enumerated().map { rank, actions in
            var out: [Action] = []
            for a in actions {
                let stage = a.chunk * P + rank
                switch a.kind {
                case .forward:
                    if stage > 0 { out.append(Action(.recvActivation, a.microbatch, chunk: a.chunk)) }
                    out.append(a)
                    if stage < last { out.append(Action(.sendActivation, a.microbatch, chunk: a.chunk)) }
                case .backward, .backwardInput:
                    if stage < last { out.append(Action(.recvGradient, a.microbatch, chunk: a.chunk)) }
                    out.append(a)
                    if stage > 0 { out.append(Action(.sendGradient, a.microbatch, chunk: a.chunk)) }
                default:
                    out.append(a)
                }
            }
            return out
        }
    }

    /// The virtual stage a message of `action` (on `rank`) goes to or comes from.
    public static func peer(of action: Action, rank: Int, stages P: Int) -> (rank: Int, chunk: Int) {
        let stage = action.chunk * P + rank
        let other: Int
        switch action.kind {
        case .sendActivation, .recvGradient: other = stage + 1
        case .recvActivation, .sendGradient: other = stage - 1
        default: other = stage
        }
        return (other % P, other / P)
    }
}
