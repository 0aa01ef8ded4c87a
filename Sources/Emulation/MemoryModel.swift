/// The emulated precision of a run: what one parameter, gradient, activation and
/// optimizer-state element costs in bytes on the GPU being played.
public enum Precision: String, Sendable, CaseIterable, Codable {
    /// Mixed precision: bf16 parameters, gradients, activations and messages; fp32 master
    /// weights and Adam moments (16 bytes per parameter, the ZeRO paper's accounting).
    case bf16
    /// Plain fp32: parameters are their own master copy.
    case fp32

    public var elementBytes: Double { self == .bf16 ? 2 : 4 }
    /// Optimizer-state bytes per parameter: master copy (bf16 only) and two moments.
    public var optimizerBytesPerParameter: Double { self == .bf16 ? 12 : 8 }
    /// HBM traffic of one AdamW update per parameter: read parameter, gradient, master and
    /// moments; write parameter, master and moments.
    public var optimizerStepBytesPerParameter: Double {
        self == .bf16 ? 2 + 2 + 12 + 2 + 12 : 4 + 4 + 8 + 4 + 8
    }
}

/// Bytes one rank holds, by purpose, in the emulated precision.
public struct MemoryBreakdown: Sendable, Equatable {
    public var parameters: Double
    public var gradients: Double
    public var optimizerState: Double
    public var activations: Double
    public var communication: Double
    public var total: Double { parameters + gradients + optimizerState + activations + communication }

    /// Parameters held by the rank (`parameterElements` when ZeRO-3 holds fewer at once), its
    /// gradient elements (as many as the parameters, unless ZeRO-2 or 3 shards them), the parameters whose optimizer state it holds (all of them, or its
    /// ZeRO shard), activation and communication-buffer elements.
    public init(precision: Precision, parametersHeld: Int, parameterElements: Int? = nil, gradientElements: Int? = nil,
                optimizerParameters: Int, activationElements: Int, communicationElements: Int) {
        let e = precision.elementBytes
        parameters = Double(parameterElements ?? parametersHeld) * e
        gradients = Double(gradientElements ?? parametersHeld) * e
        optimizerState = Double(optimizerParameters) * precision.optimizerBytesPerParameter
        activations = Double(activationElements) * e
        communication = Double(communicationElements) * e
    }

    public var json: [String: Any] {
        ["parameters": parameters, "gradients": gradients, "optimizer_state": optimizerState,
         "activations": activations, "communication": communication, "total": total]
    }

    /// "12.3 MiB" style.
    public static func human(_ bytes: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = bytes, i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[i])
    }
}
