/// Runs lowered schedules as events, without math: the one simulator used to validate
/// schedules (does every rule hold, can it deadlock?), to check bubbles against closed
/// forms, and to project schedules to cluster scale.
///
/// Each rank executes its list in order with its own clock. A compute action takes its
/// duration; a send is asynchronous (the sender does not wait) and its message is ready at
/// send time + transfer; a receive blocks until its message is ready. A schedule in which
/// no rank can move while some have actions left is a deadlock.
public enum Simulator {
    public struct Timed: Sendable {
        public let action: Action
        public let start: Double
        public let end: Double
    }

    /// Durations of compute actions and transfer times of messages.
    public struct Costs {
        public var compute: (_ rank: Int, _ action: Action) -> Double
        public var transfer: (_ rank: Int, _ action: Action) -> Double
        public init(compute: @escaping (Int, Action) -> Double, transfer: @escaping (Int, Action) -> Double = { _, _ in 0 }) {
            self.compute = compute; self.transfer = transfer
        }
        /// Forward 1, backward 2 (input and weight gradients 1 each), free messages.
        public static let uniform = Costs(compute: { _, a in
            switch a.kind { case .forward: return 1; case .backward: return 2; case .backwardInput, .backwardWeight: return 1; default: return 0 }
        })
    }

    public struct ValidationError: Error, CustomStringConvertible {
        public let rule: String
        public let stage: Int
        public let index: Int
        public let action: Action?
        public let grid: String
        public var description: String {
            "invalid schedule: \(rule) (stage \(stage), action #\(index)\(action.map { " \($0)" } ?? ""))\n\(grid)"
        }
    }

    public struct Result: Sendable {
        public let timelines: [[Timed]]
        /// From the first action's start to the last action's end, over all ranks.
        public let phaseStart: Double
        public let phaseEnd: Double
        public var phase: Double { phaseEnd - phaseStart }
        /// Per rank: time spent in compute actions.
        public var compute: [Double] {
            timelines.map { $0.filter { $0.action.kind.isCompute }.reduce(0) { $0 + $1.end - $1.start } }
        }
        /// Per rank: time spent receiving (waiting for transfers after the message was sent).
        public let transfer: [Double]
        /// Per rank: share of the phase with neither compute nor transfer: the bubble.
        public var bubblePerStage: [Double] {
            zip(compute, transfer).map { phase > 0 ? max(0, (phase - $0 - $1) / phase) : 0 }
        }
        public var bubble: Double { bubblePerStage.reduce(0, +) / Double(max(bubblePerStage.count, 1)) }
        /// Largest number of micro-batch chunks whose forward ran and whose backward (or input
        /// gradient, for split backwards) has not: the activations held for the backward.
        public var peakInFlight: [Int] {
            timelines.map { t in
                var live = 0, peak = 0
                for x in t {
                    switch x.action.kind {
                    case .forward: live += 1; peak = max(peak, live)
                    case .backward, .backwardInput: live -= 1
                    default: break
                    }
                }
                return peak
            }
        }
    }

    /// Checks every rule, then simulates. Throws the first violated rule.
    /// `start`: each rank's clock when the step begins (all zero by default).
    public static func run(_ lowered: [[Action]], virtualStages v: Int, microbatches M: Int, costs: Costs = .uniform,
                           start: [Double]? = nil) throws -> Result {
        try validateStructure(lowered, virtualStages: v, microbatches: M)
        let P = lowered.count
        // A message is identified by its payload (activation or gradient), micro-batch and
        // receiving virtual stage.
        struct Key: Hashable { let activation: Bool; let mb: Int; let stage: Int }
        func key(_ a: Action, rank: Int) -> Key {
            let activation = a.kind == .sendActivation || a.kind == .recvActivation
            let peer = Lowering.peer(of: a, rank: rank, stages: P)
            let receiver = a.kind.isSend ? peer.chunk * P + peer.rank : a.chunk * P + rank
            return Key(activation: activation, mb: a.microbatch, stage: receiver)
        }
        var messages: [Key: (sent: Double, transfer: Double)] = [:]
        var pc = [Int](repeating: 0, count: P)
        var clock = start ?? [Double](repeating: 0, count: P)
        var transfer = [Double](repeating: 0, count: P)
        var timelines = [[Timed]](repeating: [], count: P)
        var remaining = lowered.reduce(0) { $0 + $1.count }
        while remaining > 0 {
            var progressed = false
            for r in 0..<P {
                while pc[r] < lowered[r].count {
                    let a = lowered[r][pc[r]]
                    let start = clock[r]
                    if a.kind.isRecv {
                        guard let m = messages[key(a, rank: r)] else { break }
                        // Idle until the sender sent; from then until arrival it is receiving.
                        clock[r] = max(clock[r], m.sent + m.transfer)
                        transfer[r] += max(0, clock[r] - max(start, m.sent))
                    } else if a.kind.isSend {
                        messages[key(a, rank: r)] = (clock[r], costs.transfer(r, a))
                    } else {
                        clock[r] += costs.compute(r, a)
                    }
                    timelines[r].append(Timed(action: a, start: start, end: clock[r]))
                    pc[r] += 1
                    remaining -= 1
                    progressed = true
                }
            }
            if !progressed {
                let stuck = (0..<P).filter { pc[$0] < lowered[$0].count }
                let r = stuck[0]
                throw ValidationError(rule: "deadlock: every unfinished stage waits for a message that is never sent (stuck: "
                                      + stuck.map { "stage \($0) at \(lowered[$0][pc[$0]])" }.joined(separator: ", ") + ")",
                                      stage: r, index: pc[r], action: lowered[r][pc[r]], grid: grid(lowered, mark: (r, pc[r])))
            }
        }
        let computeTimes = timelines.flatMap { $0 }.filter { $0.action.kind.isCompute }
        let start = computeTimes.map(\.start).min() ?? 0, end = computeTimes.map(\.end).max() ?? 0
        return Result(timelines: timelines, phaseStart: start, phaseEnd: end, transfer: transfer)
    }

    /// The structural rules: every (micro-batch, chunk) forward exactly once and backward
    /// exactly once (B, or I followed by W); forward before backward, I before W; each
    /// message received before the compute that needs it and sent after the compute that
    /// makes it; every send matched by exactly one receive on the neighbouring stage.
    public static func validateStructure(_ lowered: [[Action]], virtualStages v: Int, microbatches M: Int) throws {
        let P = lowered.count
        let last = P * v - 1
        func fail(_ rule: String, _ r: Int, _ i: Int) -> ValidationError {
            ValidationError(rule: rule, stage: r, index: i, action: i < lowered[r].count ? lowered[r][i] : nil,
                            grid: grid(lowered, mark: (r, i)))
        }
        var sends: [String: Int] = [:], recvs: [String: Int] = [:]
        for r in 0..<P {
            var seen = Set<Action>()
            for (i, a) in lowered[r].enumerated() {
                guard a.microbatch < M, a.chunk < v else {
                    throw fail("micro-batch or chunk out of range (M = \(M), v = \(v))", r, i)
                }
                let stage = a.chunk * P + r
                func had(_ k: Action.Kind) -> Bool { seen.contains(Action(k, a.microbatch, chunk: a.chunk)) }
                guard !seen.contains(a) else { throw fail("\(a) appears twice", r, i) }
                switch a.kind {
                case .forward:
                    if stage > 0 && !had(.recvActivation) { throw fail("forward before its activation is received", r, i) }
                case .backward, .backwardInput:
                    if !had(.forward) { throw fail("backward before its forward", r, i) }
                    if had(.backward) || had(.backwardInput) { throw fail("second backward of the same micro-batch", r, i) }
                    if stage < last && !had(.recvGradient) { throw fail("backward before its gradient is received", r, i) }
                case .backwardWeight:
                    if !had(.backwardInput) { throw fail("weight gradient (W) before its input gradient (I)", r, i) }
                case .sendActivation:
                    if !had(.forward) { throw fail("activation sent before its forward", r, i) }
                    if stage == last { throw fail("the last stage has no next stage to send to", r, i) }
                case .sendGradient:
                    if !had(.backward) && !had(.backwardInput) { throw fail("gradient sent before its backward", r, i) }
                    if stage == 0 { throw fail("the first stage has no previous stage to send to", r, i) }
                case .recvActivation:
                    if stage == 0 { throw fail("the first stage has no previous stage to receive from", r, i) }
                case .recvGradient:
                    if stage == last { throw fail("the last stage has no next stage to receive from", r, i) }
                }
                seen.insert(a)
                if a.kind.isSend || a.kind.isRecv {
                    let peer = Lowering.peer(of: a, rank: r, stages: P)
                    let payload = (a.kind == .sendActivation || a.kind == .recvActivation) ? "act" : "grad"
                    let receiver = a.kind.isSend ? peer.chunk * P + peer.rank : stage
                    let id = "\(payload) \(a.microbatch) -> stage \(receiver)"
                    if a.kind.isSend { sends[id, default: 0] += 1 } else { recvs[id, default: 0] += 1 }
                }
            }
            for mb in 0..<M {
                for c in 0..<v {
                    let stage = c * P + r
                    let end = lowered[r].count
                    guard seen.contains(Action(.forward, mb, chunk: c)) else { throw fail("forward of micro-batch \(mb) chunk \(c) missing", r, end) }
                    let full = seen.contains(Action(.backward, mb, chunk: c))
                    let split = seen.contains(Action(.backwardInput, mb, chunk: c)) && seen.contains(Action(.backwardWeight, mb, chunk: c))
                    guard full != split else { throw fail("backward of micro-batch \(mb) chunk \(c) missing or done twice", r, end) }
                    if stage < last && !seen.contains(Action(.sendActivation, mb, chunk: c)) { throw fail("activation of \(mb) never sent", r, end) }
                    if stage > 0 && !seen.contains(Action(.sendGradient, mb, chunk: c)) { throw fail("gradient of \(mb) never sent", r, end) }
                }
            }
        }
        for (id, n) in sends where recvs[id] != n {
            throw ValidationError(rule: "message \(id) sent \(n) times but received \(recvs[id] ?? 0) times", stage: 0, index: 0,
                                  action: nil, grid: "")
        }
        for (id, n) in recvs where sends[id] == nil {
            throw ValidationError(rule: "message \(id) received \(n) times but never sent", stage: 0, index: 0, action: nil, grid: "")
        }
    }

    /// The schedule as a step x stage grid (compute actions only), with the failing action marked.
    public static func grid(_ lowered: [[Action]], mark: (stage: Int, index: Int)) -> String {
        var lines: [String] = []
        for (r, actions) in lowered.enumerated() {
            var cells: [String] = []
            for (i, a) in actions.enumerated() where a.kind.isCompute || (r == mark.stage && i == mark.index) {
                let text = a.description
                cells.append(r == mark.stage && i == mark.index ? "[\(text)]" : text)
            }
            lines.append("  stage \(r): " + cells.joined(separator: " ") + (r == mark.stage ? "   <-- ERROR HERE" : ""))
        }
        return lines.joined(separator: "\n")
    }
}
