import Model

/// Model FLOPs per token of training, the numerator of MFU: 6 x the parameters a token
/// uses in matmuls (experts it is routed to, attention, router, LM head; not the embedding
/// lookup) plus 12 x layers x T x d_model for attention scores and values (PaLM's
/// accounting, Chowdhery et al. 2022, appendix B).
public func modelFLOPsPerToken(_ c: ModelConfig, layout: ParameterLayout) -> Double {
    var matmulParams = Double(layout.activeCount(config: c))
    if !c.tieEmbeddings, let emb = layout["tok_emb"] { matmulParams -= Double(emb.count) }
    return 6 * matmulParams + 12 * Double(c.layers * c.seqLen * c.dModel)
}
