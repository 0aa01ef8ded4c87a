/// Bubble fractions in closed form, for uniform stage costs and free messages
/// (forward t_F, backward t_B = t_I + t_W):
///
///     GPipe, 1F1B        (P-1) / (M + P - 1)                  Huang et al. 2019; Narayanan et al. 2021
///     interleaved        (P-1) / (v M + P - 1)                Narayanan et al. 2021, section 2.2
///     ZB-H1              (P-1)(t_F + t_I - t_W) / (M (t_F + t_I + t_W) + (P-1)(t_F + t_I - t_W))
///                                                             Qi et al. 2024, section 3 (1/3 of 1F1B's bubble
///                                                             time when t_F = t_I = t_W)
public enum ClosedForm {
    public static func bubble(_ kind: ScheduleKind, stages P: Int, microbatches M: Int, virtualStages v: Int = 1,
                              forward tF: Double = 1, backwardInput tI: Double = 1, backwardWeight tW: Double = 1) -> Double {
        let p = Double(P - 1), m = Double(M)
        switch kind {
        case .gpipe, .oneFOneB: return p / (m + p)
        case .interleaved: return p / (Double(v) * m + p)
        case .zbH1:
            let idle = p * (tF + tI - tW)
            return idle / (m * (tF + tI + tW) + idle)
        }
    }
}
