//! Assembles the model types of `model/` from a checkpoint's weights, checking every tensor's
//! shape against the config. The model receives finished weights and never sees a file.

use super::names::{Naming, Tensor};
use super::weights::Weights;
use crate::config::{Config, TopkMethod};
use crate::error::{Error, Result};
use crate::model::llama::{Projection, QkNorm};
use crate::model::router::RouterConfig;
use crate::model::{
    DecoderLayer, FeedForward, Gqa, KvUp, Linear, LlamaLayer, LlamaModel, Mla, Moe, Network, QProj,
    Rope, RopeLayout, Transformer,
};

/// The latent norms of MLA use a fixed epsilon, not `rms_norm_eps`.
const LATENT_NORM_EPS: f64 = 1e-6;

/// How the checkpoint's weights differ in arrangement from Hugging Face's, where the model
/// must know: llama.cpp permutes Llama's q/k rows so RoPE pairs are interleaved.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Arrangement {
    /// RoPE pair layout of the query/key weights, when it differs from the family's default.
    pub rope_layout: Option<RopeLayout>,
}

/// Builds the model `config` describes from `w`.
pub(crate) fn network(config: Config, w: &mut Weights<'_>, arr: Arrangement) -> Result<Network> {
    Ok(match config.deepseek() {
        Some(_) => Network::Deepseek(deepseek(config, w)?),
        None => Network::Llama(llama(config, w, arr)?),
    })
}

fn deepseek(config: Config, w: &mut Weights<'_>) -> Result<Transformer> {
    let c = &config;
    let d = c.deepseek().expect("a DeepSeek config").clone();
    let (hs, nh) = (c.hidden_size, c.num_attention_heads);
    let embed_tokens = w.matrix(Tensor::TokenEmbd, &[c.vocab_size, hs])?;
    // No capacity from the config: a layer count no checkpoint backs fails at its first
    // missing tensor, not in an allocation.
    let mut layers = Vec::new();
    for l in 0..c.num_hidden_layers {
        let q = match d.q_lora_rank {
            None => QProj::Plain(w.linear(Tensor::AttnQ(l), nh * d.qk_head_dim(), hs)?),
            Some(r) => QProj::Lora {
                q_a_proj: w.linear(Tensor::AttnQA(l), r, hs)?,
                q_a_layernorm: w.norm(Tensor::AttnQANorm(l), r, LATENT_NORM_EPS)?,
                q_b_proj: w.linear(Tensor::AttnQB(l), nh * d.qk_head_dim(), r)?,
            },
        };
        let kv_a_proj_with_mqa = w.linear(
            Tensor::AttnKvAMqa(l),
            d.kv_lora_rank + d.qk_rope_head_dim,
            hs,
        )?;
        let kv_a_layernorm = w.norm(Tensor::AttnKvANorm(l), d.kv_lora_rank, LATENT_NORM_EPS)?;
        // llama.cpp's GGUF splits kv_b_proj per head into W_UK^T and W_UV; HF and legacy GGUF
        // files keep it whole.
        let split =
            w.has(Tensor::AttnKB(l)) || (w.naming() == Naming::Gguf && !w.has(Tensor::AttnKvB(l)));
        let kv_up = if split {
            KvUp::Split {
                k_b: Linear {
                    weight: w
                        .matrix(Tensor::AttnKB(l), &[nh, d.kv_lora_rank, d.qk_nope_head_dim])?,
                },
                v_b: Linear {
                    weight: w.matrix(Tensor::AttnVB(l), &[nh, d.v_head_dim, d.kv_lora_rank])?,
                },
            }
        } else {
            KvUp::Fused(w.linear(
                Tensor::AttnKvB(l),
                nh * (d.qk_nope_head_dim + d.v_head_dim),
                d.kv_lora_rank,
            )?)
        };
        let self_attn = Mla {
            q,
            kv_a_proj_with_mqa,
            kv_a_layernorm,
            kv_up,
            o_proj: w.linear(Tensor::AttnOutput(l), hs, nh * d.v_head_dim)?,
            num_heads: nh,
            qk_nope_head_dim: d.qk_nope_head_dim,
            qk_rope_head_dim: d.qk_rope_head_dim,
            v_head_dim: d.v_head_dim,
            kv_lora_rank: d.kv_lora_rank,
            softmax_scale: d.softmax_scale(),
        };
        let mlp = match (&d.moe, d.is_moe_layer(l)) {
            (Some(moe), true) => {
                let e = moe.n_routed_experts;
                let bias = match moe.topk_method {
                    TopkMethod::NoauxTc => Some(w.vector(Tensor::ExpProbsB(l), e)?),
                    _ => None,
                };
                let inter = moe.moe_intermediate_size;
                let experts = (0..e)
                    .map(|i| {
                        w.mlp(
                            [
                                Tensor::FfnGateExp(l, i),
                                Tensor::FfnUpExp(l, i),
                                Tensor::FfnDownExp(l, i),
                            ],
                            inter,
                            hs,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let shared_experts = match moe.n_shared_experts {
                    0 => None,
                    k => Some(w.mlp(
                        [
                            Tensor::FfnGateShexp(l),
                            Tensor::FfnUpShexp(l),
                            Tensor::FfnDownShexp(l),
                        ],
                        inter * k,
                        hs,
                    )?),
                };
                FeedForward::Moe(Moe {
                    gate: w.linear(Tensor::FfnGateInp(l), e, hs)?,
                    e_score_correction_bias: bias,
                    router: RouterConfig::new(moe, c.model_type),
                    experts,
                    shared_experts,
                })
            }
            _ => FeedForward::Dense(w.mlp(
                [Tensor::FfnGate(l), Tensor::FfnUp(l), Tensor::FfnDown(l)],
                c.intermediate_size,
                hs,
            )?),
        };
        layers.push(DecoderLayer {
            input_layernorm: w.norm(Tensor::AttnNorm(l), hs, c.rms_norm_eps)?,
            self_attn,
            post_attention_layernorm: w.norm(Tensor::FfnNorm(l), hs, c.rms_norm_eps)?,
            mlp,
        });
    }
    let norm = w.norm(Tensor::OutputNorm, hs, c.rms_norm_eps)?;
    let lm_head = w.lm_head(c, &embed_tokens)?;
    w.finish(c.num_hidden_layers, d.num_nextn_predict_layers)?;
    // Built last: its size comes from config fields the tensors above have now confirmed.
    let rope = Rope::new(&config);
    Ok(Transformer {
        rope,
        config,
        embed_tokens,
        layers,
        norm,
        lm_head,
    })
}

fn llama(config: Config, w: &mut Weights<'_>, arr: Arrangement) -> Result<LlamaModel> {
    let c = &config;
    let l = c.llama().expect("a Llama-family config").clone();
    let (hs, nh, kvh, hd) = (
        c.hidden_size,
        c.num_attention_heads,
        l.num_key_value_heads,
        l.head_dim,
    );
    let embed_tokens = w.matrix(Tensor::TokenEmbd, &[c.vocab_size, hs])?;
    let mut layers = Vec::new();
    for i in 0..c.num_hidden_layers {
        let mut proj = |t: Tensor, bias: Option<Tensor>, rows: usize, cols: usize| {
            Ok::<_, Error>(Projection {
                linear: w.linear(t, rows, cols)?,
                bias: match bias {
                    Some(b) => Some(w.vector(b, rows)?),
                    None => None,
                },
            })
        };
        let qkv_bias = |b: Tensor| l.qkv_bias.then_some(b);
        let q_proj = proj(
            Tensor::AttnQ(i),
            qkv_bias(Tensor::AttnQBias(i)),
            nh * hd,
            hs,
        )?;
        let k_proj = proj(
            Tensor::AttnK(i),
            qkv_bias(Tensor::AttnKBias(i)),
            kvh * hd,
            hs,
        )?;
        let v_proj = proj(
            Tensor::AttnV(i),
            qkv_bias(Tensor::AttnVBias(i)),
            kvh * hd,
            hs,
        )?;
        let o_bias = l.o_bias.then_some(Tensor::AttnOutputBias(i));
        let o_proj = proj(Tensor::AttnOutput(i), o_bias, hs, nh * hd)?;
        let qk_norm = match l.qk_norm {
            true => Some(QkNorm {
                q_norm: w.norm(Tensor::AttnQNorm(i), hd, c.rms_norm_eps)?,
                k_norm: w.norm(Tensor::AttnKNorm(i), hd, c.rms_norm_eps)?,
            }),
            false => None,
        };
        layers.push(LlamaLayer {
            input_layernorm: w.norm(Tensor::AttnNorm(i), hs, c.rms_norm_eps)?,
            self_attn: Gqa {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                qk_norm,
                num_heads: nh,
                num_key_value_heads: kvh,
                head_dim: hd,
                softmax_scale: l.softmax_scale(),
            },
            post_attention_layernorm: w.norm(Tensor::FfnNorm(i), hs, c.rms_norm_eps)?,
            mlp: w.mlp(
                [Tensor::FfnGate(i), Tensor::FfnUp(i), Tensor::FfnDown(i)],
                c.intermediate_size,
                hs,
            )?,
        });
    }
    let norm = w.norm(Tensor::OutputNorm, hs, c.rms_norm_eps)?;
    let lm_head = w.lm_head(c, &embed_tokens)?;
    let mut rope = Rope::new(&config);
    if let Some(layout) = arr.rope_layout {
        rope = rope.with_layout(layout);
    }
    if w.has(Tensor::RopeFreqs) {
        let factors = w.vector(Tensor::RopeFreqs, hd / 2)?;
        if factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
            return Err(Error::Dtype {
                name: "rope_freqs.weight".into(),
                dtype: "factors must be finite and > 0".into(),
            });
        }
        rope = rope
            .with_freq_factors(&factors)
            .expect("one factor per pair: the shape was checked");
    }
    w.finish(c.num_hidden_layers, 0)?;
    Ok(LlamaModel {
        rope,
        config,
        embed_tokens,
        layers,
        norm,
        lm_head,
    })
}
