//! The one table of tensor names: what each tensor is, and what Hugging Face checkpoints and
//! llama.cpp's GGUF files call it, for every family.

/// A checkpoint's naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face (`model.layers.0.self_attn.q_a_proj.weight`).
    Hf,
    /// llama.cpp's GGUF (`blk.0.attn_q_a.weight`).
    Gguf,
}

/// What a tensor is, independent of how a file names it. Layer indices are decoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tensor {
    /// Token embeddings `[vocab, hidden]`.
    TokenEmbd,
    /// The final norm.
    OutputNorm,
    /// lm_head `[vocab, hidden]`.
    Output,
    /// Per-pair divisors of the RoPE inverse frequencies (GGUF's Llama 3 scaling).
    RopeFreqs,
    /// Norm before attention.
    AttnNorm(usize),
    /// Query projection without a low-rank latent (MLA of V2-Lite, and GQA).
    AttnQ(usize),
    /// MLA query down-projection.
    AttnQA(usize),
    /// MLA query latent norm.
    AttnQANorm(usize),
    /// MLA query up-projection.
    AttnQB(usize),
    /// MLA down-projection to the KV latent and the shared RoPE key.
    AttnKvAMqa(usize),
    /// MLA latent norm.
    AttnKvANorm(usize),
    /// MLA up-projection of the latent to per-head K-nope and V (HF layout, legacy GGUF).
    AttnKvB(usize),
    /// MLA per-head `W_UK^T` (`[heads, kv_lora, nope]`), llama.cpp's split of `kv_b_proj`.
    AttnKB(usize),
    /// MLA per-head `W_UV` (`[heads, v, kv_lora]`), llama.cpp's split of `kv_b_proj`.
    AttnVB(usize),
    /// GQA key projection.
    AttnK(usize),
    /// GQA value projection.
    AttnV(usize),
    /// Attention output projection.
    AttnOutput(usize),
    /// Query bias (Qwen2, `attention_bias`).
    AttnQBias(usize),
    /// Key bias.
    AttnKBias(usize),
    /// Value bias.
    AttnVBias(usize),
    /// Output bias (`attention_bias` of Llama and Qwen3).
    AttnOutputBias(usize),
    /// Qwen3's per-head query norm.
    AttnQNorm(usize),
    /// Qwen3's per-head key norm.
    AttnKNorm(usize),
    /// Norm before the feed-forward block.
    FfnNorm(usize),
    /// Dense SwiGLU gate.
    FfnGate(usize),
    /// Dense SwiGLU up.
    FfnUp(usize),
    /// Dense SwiGLU down.
    FfnDown(usize),
    /// The MoE router `[experts, hidden]`.
    FfnGateInp(usize),
    /// V3's `e_score_correction_bias`.
    ExpProbsB(usize),
    /// Routed expert `e`'s gate.
    FfnGateExp(usize, usize),
    /// Routed expert `e`'s up.
    FfnUpExp(usize, usize),
    /// Routed expert `e`'s down.
    FfnDownExp(usize, usize),
    /// Shared experts' gate.
    FfnGateShexp(usize),
    /// Shared experts' up.
    FfnUpShexp(usize),
    /// Shared experts' down.
    FfnDownShexp(usize),
}

/// Where a tensor lives in a file: a whole tensor, or one expert of a stacked 3-D tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file's tensor name.
    pub name: String,
    /// The expert to slice out of `[experts, rows, cols]`, for GGUF's stacked experts.
    pub expert: Option<usize>,
}

impl Tensor {
    /// The tensor's name (and expert slice) under `naming`; `None` where that scheme has no
    /// such tensor (Hugging Face stores no split `kv_b_proj`).
    pub fn locate(self, naming: Naming) -> Option<Location> {
        use Tensor::*;
        let (hf, gguf, expert): (Option<String>, String, Option<usize>) = match self {
            TokenEmbd => (
                Some("model.embed_tokens.weight".into()),
                "token_embd.weight".into(),
                None,
            ),
            OutputNorm => (
                Some("model.norm.weight".into()),
                "output_norm.weight".into(),
                None,
            ),
            Output => (Some("lm_head.weight".into()), "output.weight".into(), None),
            RopeFreqs => (None, "rope_freqs.weight".into(), None),
            AttnNorm(l) => (
                hf(l, "input_layernorm.weight"),
                blk(l, "attn_norm.weight"),
                None,
            ),
            AttnQ(l) => (
                hf(l, "self_attn.q_proj.weight"),
                blk(l, "attn_q.weight"),
                None,
            ),
            AttnQA(l) => (
                hf(l, "self_attn.q_a_proj.weight"),
                blk(l, "attn_q_a.weight"),
                None,
            ),
            AttnQANorm(l) => (
                hf(l, "self_attn.q_a_layernorm.weight"),
                blk(l, "attn_q_a_norm.weight"),
                None,
            ),
            AttnQB(l) => (
                hf(l, "self_attn.q_b_proj.weight"),
                blk(l, "attn_q_b.weight"),
                None,
            ),
            AttnKvAMqa(l) => (
                hf(l, "self_attn.kv_a_proj_with_mqa.weight"),
                blk(l, "attn_kv_a_mqa.weight"),
                None,
            ),
            AttnKvANorm(l) => (
                hf(l, "self_attn.kv_a_layernorm.weight"),
                blk(l, "attn_kv_a_norm.weight"),
                None,
            ),
            AttnKvB(l) => (
                hf(l, "self_attn.kv_b_proj.weight"),
                blk(l, "attn_kv_b.weight"),
                None,
            ),
            AttnKB(l) => (None, blk(l, "attn_k_b.weight"), None),
            AttnVB(l) => (None, blk(l, "attn_v_b.weight"), None),
            AttnK(l) => (
                hf(l, "self_attn.k_proj.weight"),
                blk(l, "attn_k.weight"),
                None,
            ),
            AttnV(l) => (
                hf(l, "self_attn.v_proj.weight"),
                blk(l, "attn_v.weight"),
                None,
            ),
            AttnOutput(l) => (
                hf(l, "self_attn.o_proj.weight"),
                blk(l, "attn_output.weight"),
                None,
            ),
            AttnQBias(l) => (hf(l, "self_attn.q_proj.bias"), blk(l, "attn_q.bias"), None),
            AttnKBias(l) => (hf(l, "self_attn.k_proj.bias"), blk(l, "attn_k.bias"), None),
            AttnVBias(l) => (hf(l, "self_attn.v_proj.bias"), blk(l, "attn_v.bias"), None),
            AttnOutputBias(l) => (
                hf(l, "self_attn.o_proj.bias"),
                blk(l, "attn_output.bias"),
                None,
            ),
            AttnQNorm(l) => (
                hf(l, "self_attn.q_norm.weight"),
                blk(l, "attn_q_norm.weight"),
                None,
            ),
            AttnKNorm(l) => (
                hf(l, "self_attn.k_norm.weight"),
                blk(l, "attn_k_norm.weight"),
                None,
            ),
            FfnNorm(l) => (
                hf(l, "post_attention_layernorm.weight"),
                blk(l, "ffn_norm.weight"),
                None,
            ),
            FfnGate(l) => (
                hf(l, "mlp.gate_proj.weight"),
                blk(l, "ffn_gate.weight"),
                None,
            ),
            FfnUp(l) => (hf(l, "mlp.up_proj.weight"), blk(l, "ffn_up.weight"), None),
            FfnDown(l) => (
                hf(l, "mlp.down_proj.weight"),
                blk(l, "ffn_down.weight"),
                None,
            ),
            FfnGateInp(l) => (
                hf(l, "mlp.gate.weight"),
                blk(l, "ffn_gate_inp.weight"),
                None,
            ),
            ExpProbsB(l) => (
                hf(l, "mlp.gate.e_score_correction_bias"),
                blk(l, "exp_probs_b.bias"),
                None,
            ),
            FfnGateExp(l, e) => (
                hf(l, &format!("mlp.experts.{e}.gate_proj.weight")),
                blk(l, "ffn_gate_exps.weight"),
                Some(e),
            ),
            FfnUpExp(l, e) => (
                hf(l, &format!("mlp.experts.{e}.up_proj.weight")),
                blk(l, "ffn_up_exps.weight"),
                Some(e),
            ),
            FfnDownExp(l, e) => (
                hf(l, &format!("mlp.experts.{e}.down_proj.weight")),
                blk(l, "ffn_down_exps.weight"),
                Some(e),
            ),
            FfnGateShexp(l) => (
                hf(l, "mlp.shared_experts.gate_proj.weight"),
                blk(l, "ffn_gate_shexp.weight"),
                None,
            ),
            FfnUpShexp(l) => (
                hf(l, "mlp.shared_experts.up_proj.weight"),
                blk(l, "ffn_up_shexp.weight"),
                None,
            ),
            FfnDownShexp(l) => (
                hf(l, "mlp.shared_experts.down_proj.weight"),
                blk(l, "ffn_down_shexp.weight"),
                None,
            ),
        };
        match naming {
            Naming::Hf => hf.map(|name| Location { name, expert: None }),
            Naming::Gguf => Some(Location { name: gguf, expert }),
        }
    }
}

fn hf(layer: usize, rest: &str) -> Option<String> {
    Some(format!("model.layers.{layer}.{rest}"))
}

fn blk(layer: usize, rest: &str) -> String {
    format!("blk.{layer}.{rest}")
}

/// The layer a tensor name belongs to under `naming`, if it is a layer tensor.
pub fn layer_of(name: &str, naming: Naming) -> Option<usize> {
    let rest = match naming {
        Naming::Hf => name.strip_prefix("model.layers.")?,
        Naming::Gguf => name.strip_prefix("blk.")?,
    };
    rest.split('.').next()?.parse().ok()
}

/// Names a checkpoint may carry that no forward pass reads (RoPE tables some exporters save).
pub fn is_ignorable(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_experts_locate_to_one_tensor_with_a_slice() {
        let g = Tensor::FfnUpExp(3, 7).locate(Naming::Gguf).unwrap();
        assert_eq!(
            (g.name.as_str(), g.expert),
            ("blk.3.ffn_up_exps.weight", Some(7))
        );
        let h = Tensor::FfnUpExp(3, 7).locate(Naming::Hf).unwrap();
        assert_eq!(Tensor::AttnKB(0).locate(Naming::Hf), None);
        assert_eq!(h.name, "model.layers.3.mlp.experts.7.up_proj.weight");
        assert_eq!(layer_of(&h.name, Naming::Hf), Some(3));
        assert_eq!(layer_of(&g.name, Naming::Gguf), Some(3));
        assert_eq!(layer_of("output.weight", Naming::Gguf), None);
    }
}
