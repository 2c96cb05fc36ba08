//! Writing a loaded model as a GGUF file that llama.cpp runs: tensor names from the one names
//! table, metadata as llama.cpp's converter writes it, weights in ggml's byte layouts.
//!
//! Matrices are written at a target format through the same dtype policy loading uses
//! (embeddings and the router as stored, lm_head wider under 4-bit formats, norms in f32), so loading the
//! written file gives the model a folder load at that format gives, without converting again.

use std::path::Path;

use super::gguf::{Value, Writer};
use super::names::{Naming, Tensor};
use crate::config::{Config, ModelType, RopeScaling, ScoringFunc, TopkMethod};
use crate::error::{Error, Result};
use crate::model::llama::{LlamaModel, Projection};
use crate::model::{FeedForward, KvUp, Linear, Mlp, Network, QProj, RopeLayout, Transformer};
use crate::quant::{GgmlType, Weight, WeightDtype};

/// Writes `network` to `path` as GGUF, its matrices converted to `dtype` (`Auto`: as loaded;
/// FP8, which ggml cannot store, becomes BF16), with `vocab` (the `tokenizer.*` metadata) added.
pub fn save_gguf(
    network: &Network,
    dtype: WeightDtype,
    vocab: Vec<(String, Value)>,
    threads: usize,
    path: &Path,
) -> Result<()> {
    let layers = match network {
        Network::Deepseek(m) => m.config.num_hidden_layers,
        Network::Llama(m) => m.config.num_hidden_layers,
    };
    let mut out = Out {
        w: Writer::new(),
        dtype,
        threads,
        layers,
    };
    match network {
        Network::Deepseek(m) => deepseek(&mut out, m)?,
        Network::Llama(m) => llama(&mut out, m)?,
    }
    for (k, v) in vocab {
        out.w.set(&k, v);
    }
    out.w.write(path)
}

/// The writer and the conversion the tensors go through.
struct Out<'a> {
    w: Writer<'a>,
    dtype: WeightDtype,
    threads: usize,
    /// Decoder layers (the Q4_K_M rule picks layers by position).
    layers: usize,
}

fn name(t: Tensor) -> String {
    t.locate(Naming::Gguf)
        .expect("every tensor has a GGUF name")
        .name
}

/// `w` converted to `target` as ggml type and bytes (FP8, which ggml cannot store, as BF16).
fn ggml_bytes(w: &Weight, target: WeightDtype, threads: usize) -> (GgmlType, Vec<u8>) {
    let w = w.convert_with_threads(target, threads);
    let w = match w.to_ggml() {
        Some(_) => w,
        None => w.convert_with_threads(WeightDtype::BF16, threads),
    };
    let (ty, bytes) = w.to_ggml().expect("BF16 has a ggml type");
    (ty, bytes.into_owned())
}

impl<'a> Out<'a> {
    fn meta(&mut self, arch: &str, key: &str, v: Value) {
        self.w.set(&format!("{arch}.{key}"), v);
    }

    /// The policy's target for tensor `t` (as in loading; the file is always in GGUF's split
    /// MLA layout).
    fn target(&self, t: Tensor) -> WeightDtype {
        super::weights::target(self.dtype, t, self.layers, Naming::Gguf)
    }

    /// The matrix `make` gives, converted when the writer reaches it (so a whole model is never
    /// held converted in memory). `rows x cols` are its dims.
    fn matrix_with(
        &mut self,
        t: Tensor,
        rows: usize,
        cols: usize,
        make: impl FnOnce() -> Result<Weight> + 'a,
    ) {
        let (target, threads) = (self.target(t), self.threads);
        self.w.add_lazy(
            &name(t),
            &[cols as u64, rows as u64],
            Box::new(move || Ok(ggml_bytes(&make()?, target, threads))),
        );
    }

    fn matrix(&mut self, t: Tensor, w: &'a Weight) {
        self.matrix_with(t, w.rows(), w.cols(), move || Ok(w.clone()));
    }

    fn vector(&mut self, t: Tensor, v: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.w
            .add_tensor(&name(t), &[v.len() as u64], GgmlType::F32, bytes)
    }

    /// `n` matrices of `[rows, cols]` that `make` gives, stacked as one `[n, rows, cols]`
    /// tensor (GGUF's experts and split kv_b).
    fn stacked(
        &mut self,
        t: Tensor,
        [n, rows, cols]: [usize; 3],
        make: impl FnOnce() -> Result<Vec<Weight>> + 'a,
    ) {
        let (target, threads, label) = (self.target(t), self.threads, name(t));
        let produce = move || {
            let (mut ty, mut bytes) = (None, Vec::new());
            for p in make()? {
                let (pt, b) = ggml_bytes(&p, target, threads);
                if ty.is_some_and(|t| t != pt) {
                    return Err(Error::InvalidArgument(format!(
                        "{label}: stacked parts have different formats"
                    )));
                }
                ty = Some(pt);
                bytes.extend_from_slice(&b);
            }
            let ty =
                ty.ok_or_else(|| Error::InvalidArgument(format!("{label}: nothing to stack")))?;
            Ok((ty, bytes))
        };
        self.w.add_lazy(
            &name(t),
            &[cols as u64, rows as u64, n as u64],
            Box::new(produce),
        );
    }

    fn mlp(&mut self, [g, u, d]: [Tensor; 3], m: &'a Mlp) {
        self.matrix(g, &m.gate_proj.weight);
        self.matrix(u, &m.up_proj.weight);
        self.matrix(d, &m.down_proj.weight);
    }

    fn common(&mut self, arch: &str, c: &Config) {
        self.w
            .set("general.architecture", Value::String(arch.into()));
        let u = |n: usize| Value::U32(n as u32);
        self.meta(arch, "block_count", u(c.num_hidden_layers));
        self.meta(arch, "context_length", u(c.max_position_embeddings));
        self.meta(arch, "embedding_length", u(c.hidden_size));
        self.meta(arch, "feed_forward_length", u(c.intermediate_size));
        self.meta(arch, "attention.head_count", u(c.num_attention_heads));
        self.meta(arch, "rope.freq_base", Value::F32(c.rope_theta as f32));
        self.meta(
            arch,
            "attention.layer_norm_rms_epsilon",
            Value::F32(c.rms_norm_eps as f32),
        );
        self.meta(arch, "vocab_size", u(c.vocab_size));
    }
}

fn deepseek<'a>(out: &mut Out<'a>, m: &'a Transformer) -> Result<()> {
    let c = &m.config;
    let d = c.deepseek().expect("a DeepSeek model");
    let arch = "deepseek2";
    let u = |n: usize| Value::U32(n as u32);
    out.common(arch, c);
    // MLA is described as one KV head of the latent, the per-head sizes in the *_mla keys.
    out.meta(arch, "attention.head_count_kv", u(1));
    // 0 for a plain q_proj: llama.cpp requires the key except for V2-Lite's layer counts.
    out.meta(arch, "attention.q_lora_rank", u(d.q_lora_rank.unwrap_or(0)));
    out.meta(arch, "attention.kv_lora_rank", u(d.kv_lora_rank));
    out.meta(
        arch,
        "attention.key_length",
        u(d.kv_lora_rank + d.qk_rope_head_dim),
    );
    out.meta(arch, "attention.value_length", u(d.kv_lora_rank));
    out.meta(arch, "attention.key_length_mla", u(d.qk_head_dim()));
    out.meta(arch, "attention.value_length_mla", u(d.v_head_dim));
    out.meta(arch, "rope.dimension_count", u(d.qk_rope_head_dim));
    out.meta(
        arch,
        "leading_dense_block_count",
        u(d.first_k_dense_replace),
    );
    if d.moe_layer_freq != 1 {
        return Err(Error::InvalidArgument(format!(
            "moe_layer_freq {} cannot be written to GGUF (llama.cpp assumes 1)",
            d.moe_layer_freq
        )));
    }
    if let Some(moe) = &d.moe {
        out.meta(arch, "expert_count", u(moe.n_routed_experts));
        out.meta(arch, "expert_used_count", u(moe.num_experts_per_tok));
        out.meta(
            arch,
            "expert_feed_forward_length",
            u(moe.moe_intermediate_size),
        );
        out.meta(arch, "expert_shared_count", u(moe.n_shared_experts));
        out.meta(
            arch,
            "expert_weights_scale",
            Value::F32(moe.routed_scaling_factor),
        );
        if moe.norm_topk_prob {
            out.meta(arch, "expert_weights_norm", Value::Bool(true));
        }
        let gating = match moe.scoring_func {
            ScoringFunc::Softmax => 1,
            ScoringFunc::Sigmoid => 2,
        };
        out.meta(arch, "expert_gating_func", Value::U32(gating));
        // Greedy routing has one group (llama.cpp then selects over all experts).
        let (groups, used) = match moe.topk_method {
            TopkMethod::Greedy => (1, 1),
            _ => (moe.n_group, moe.topk_group),
        };
        out.meta(arch, "expert_group_count", u(groups));
        out.meta(arch, "expert_group_used_count", u(used));
    }
    if let Some(y) = &d.rope_scaling {
        if (y.mscale - y.mscale_all_dim).abs() > 1e-6 {
            return Err(Error::InvalidArgument(format!(
                "YaRN mscale {} differs from mscale_all_dim {}: GGUF cannot describe it",
                y.mscale, y.mscale_all_dim
            )));
        }
        out.meta(arch, "rope.scaling.type", Value::String("yarn".into()));
        out.meta(arch, "rope.scaling.factor", Value::F32(y.factor as f32));
        out.meta(
            arch,
            "rope.scaling.original_context_length",
            u(y.original_max_position_embeddings),
        );
        out.meta(
            arch,
            "rope.scaling.yarn_log_multiplier",
            Value::F32((0.1 * y.mscale_all_dim) as f32),
        );
        out.meta(
            arch,
            "rope.scaling.yarn_beta_fast",
            Value::F32(y.beta_fast as f32),
        );
        out.meta(
            arch,
            "rope.scaling.yarn_beta_slow",
            Value::F32(y.beta_slow as f32),
        );
    }
    if c.model_type == ModelType::DeepseekV2 && d.moe.as_ref().is_some_and(|m| m.norm_topk_prob) {
        return Err(Error::InvalidArgument(
            "DeepSeek-V2 with norm_topk_prob cannot be written to GGUF (llama.cpp would normalise)"
                .into(),
        ));
    }

    out.matrix(Tensor::TokenEmbd, &m.embed_tokens);
    out.vector(Tensor::OutputNorm, m.norm.weight())?;
    if !c.tie_word_embeddings {
        out.matrix(Tensor::Output, &m.lm_head.weight);
    }
    let (nh, dn, dv, kv) = (
        c.num_attention_heads,
        d.qk_nope_head_dim,
        d.v_head_dim,
        d.kv_lora_rank,
    );
    for (l, layer) in m.layers.iter().enumerate() {
        out.vector(Tensor::AttnNorm(l), layer.input_layernorm.weight())?;
        let a = &layer.self_attn;
        match &a.q {
            QProj::Plain(q) => out.matrix(Tensor::AttnQ(l), &q.weight),
            QProj::Lora {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                out.matrix(Tensor::AttnQA(l), &q_a_proj.weight);
                out.vector(Tensor::AttnQANorm(l), q_a_layernorm.weight())?;
                out.matrix(Tensor::AttnQB(l), &q_b_proj.weight);
            }
        }
        out.matrix(Tensor::AttnKvAMqa(l), &a.kv_a_proj_with_mqa.weight);
        out.vector(Tensor::AttnKvANorm(l), a.kv_a_layernorm.weight())?;
        match &a.kv_up {
            KvUp::Split { k_b, v_b } => {
                out.stacked(Tensor::AttnKB(l), [nh, kv, dn], move || {
                    split_heads(&k_b.weight, nh)
                });
                out.stacked(Tensor::AttnVB(l), [nh, dv, kv], move || {
                    split_heads(&v_b.weight, nh)
                });
            }
            KvUp::Fused(kvb) => {
                out.stacked(Tensor::AttnKB(l), [nh, kv, dn], move || {
                    Ok(kv_b_keys(&kvb.weight, nh, dn, dv, kv))
                });
                out.stacked(Tensor::AttnVB(l), [nh, dv, kv], move || {
                    Ok(kv_b_values(&kvb.weight, nh, dn, dv, kv))
                });
            }
        }
        out.matrix(Tensor::AttnOutput(l), &a.o_proj.weight);
        out.vector(Tensor::FfnNorm(l), layer.post_attention_layernorm.weight())?;
        match &layer.mlp {
            FeedForward::Dense(mlp) => out.mlp(
                [Tensor::FfnGate(l), Tensor::FfnUp(l), Tensor::FfnDown(l)],
                mlp,
            ),
            FeedForward::Moe(moe) => {
                out.matrix(Tensor::FfnGateInp(l), &moe.gate.weight);
                if let Some(b) = &moe.e_score_correction_bias {
                    out.vector(Tensor::ExpProbsB(l), b)?;
                }
                let (e, inter) = (moe.experts.len(), moe.experts[0].intermediate_size());
                let hs = c.hidden_size;
                let pick = move |f: fn(&Mlp) -> &Linear| {
                    move || Ok(moe.experts.iter().map(|e| f(e).weight.clone()).collect())
                };
                out.stacked(
                    Tensor::FfnGateExp(l, 0),
                    [e, inter, hs],
                    pick(|e| &e.gate_proj),
                );
                out.stacked(Tensor::FfnUpExp(l, 0), [e, inter, hs], pick(|e| &e.up_proj));
                out.stacked(
                    Tensor::FfnDownExp(l, 0),
                    [e, hs, inter],
                    pick(|e| &e.down_proj),
                );
                if let Some(sh) = &moe.shared_experts {
                    out.mlp(
                        [
                            Tensor::FfnGateShexp(l),
                            Tensor::FfnUpShexp(l),
                            Tensor::FfnDownShexp(l),
                        ],
                        sh,
                    );
                }
            }
        }
    }
    Ok(())
}

/// `w` `[heads * rows, cols]` as one `[rows, cols]` matrix per head (bytes shared).
fn split_heads(w: &Weight, heads: usize) -> Result<Vec<Weight>> {
    let (ty, bytes) = w.to_ggml().ok_or_else(|| {
        Error::InvalidArgument("a split kv_b in a format ggml cannot store".into())
    })?;
    let rows = w.rows() / heads;
    let per = bytes.len() / heads;
    let format = crate::quant::Format::from_ggml(ty).expect("a format we run");
    (0..heads)
        .map(|h| {
            let part = crate::bytes::Bytes::owned(bytes[h * per..(h + 1) * per].to_vec());
            Weight::new(rows, w.cols(), format.clone(), part)
        })
        .collect()
}

/// Hugging Face's `kv_b_proj` key half as llama.cpp's converter splits it: head `h`'s K-nope
/// rows transposed (`[kv_lora, nope]`). Float formats keep their format exactly; block
/// formats are re-encoded from float32.
fn kv_b_keys(kvb: &Weight, heads: usize, nope: usize, v: usize, kv_lora: usize) -> Vec<Weight> {
    let mut row = vec![0f32; kv_lora];
    (0..heads)
        .map(|h| {
            let mut kt = vec![0f32; kv_lora * nope];
            for i in 0..nope {
                kvb.decode(h * (nope + v) + i, 0, &mut row);
                for (j, &x) in row.iter().enumerate() {
                    kt[j * nope + i] = x;
                }
            }
            Weight::from_f32(kv_lora, nope, &kt).convert(same_dtype(kvb))
        })
        .collect()
}

/// `kv_b_proj`'s value half per head (`[v, kv_lora]`), as [`kv_b_keys`].
fn kv_b_values(kvb: &Weight, heads: usize, nope: usize, v: usize, kv_lora: usize) -> Vec<Weight> {
    (0..heads)
        .map(|h| {
            let mut vv = vec![0f32; v * kv_lora];
            for (i, out) in vv.chunks_exact_mut(kv_lora).enumerate() {
                kvb.decode(h * (nope + v) + nope + i, 0, out);
            }
            Weight::from_f32(v, kv_lora, &vv).convert(same_dtype(kvb))
        })
        .collect()
}

/// The runtime dtype that re-encodes a matrix in `w`'s own format.
fn same_dtype(w: &Weight) -> WeightDtype {
    match w.format().info().ggml {
        Some(GgmlType::F32) => WeightDtype::F32,
        Some(GgmlType::F16) => WeightDtype::F16,
        Some(GgmlType::Q8_0) => WeightDtype::Q8_0,
        Some(GgmlType::Q4_0) => WeightDtype::Q4_0,
        Some(GgmlType::Q4_1) => WeightDtype::Q4_1,
        Some(GgmlType::Q4_K) => WeightDtype::Q4_K,
        Some(GgmlType::Q6_K) => WeightDtype::Q6_K,
        _ => WeightDtype::BF16,
    }
}

fn llama<'a>(out: &mut Out<'a>, m: &'a LlamaModel) -> Result<()> {
    let c = &m.config;
    let l = c.llama().expect("a Llama-family model");
    let arch = match c.model_type {
        ModelType::Qwen2 => "qwen2",
        ModelType::Qwen3 => "qwen3",
        _ => "llama",
    };
    let u = |n: usize| Value::U32(n as u32);
    out.common(arch, c);
    out.meta(arch, "attention.head_count_kv", u(l.num_key_value_heads));
    out.meta(arch, "rope.dimension_count", u(l.head_dim));
    out.meta(arch, "attention.key_length", u(l.head_dim));
    out.meta(arch, "attention.value_length", u(l.head_dim));
    match &l.rope_scaling {
        None | Some(RopeScaling::Llama3(_)) => {}
        Some(RopeScaling::Yarn(y)) => {
            out.meta(arch, "rope.scaling.type", Value::String("yarn".into()));
            out.meta(arch, "rope.scaling.factor", Value::F32(y.factor as f32));
            out.meta(
                arch,
                "rope.scaling.original_context_length",
                u(y.original_max_position_embeddings),
            );
            out.meta(
                arch,
                "rope.scaling.yarn_beta_fast",
                Value::F32(y.beta_fast as f32),
            );
            out.meta(
                arch,
                "rope.scaling.yarn_beta_slow",
                Value::F32(y.beta_slow as f32),
            );
            let default = crate::config::yarn_get_mscale(y.factor, 1.0);
            out.meta(
                arch,
                "rope.scaling.yarn_attn_factor",
                Value::F32((y.attention_factor / default) as f32),
            );
        }
    }
    // llama.cpp runs Llama with interleaved RoPE pairs: its converter permutes q/k rows.
    let permute = arch == "llama" && m.rope.layout() == RopeLayout::Halves;
    let (nh, kvh, hd) = (c.num_attention_heads, l.num_key_value_heads, l.head_dim);

    out.matrix(Tensor::TokenEmbd, &m.embed_tokens);
    out.vector(Tensor::OutputNorm, m.norm.weight())?;
    if !c.tie_word_embeddings {
        out.matrix(Tensor::Output, &m.lm_head.weight);
    }
    if arch == "llama" {
        // Llama 3 scaling travels as per-pair divisors of the base frequencies.
        let base: Vec<f64> = (0..hd / 2)
            .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f64 / hd as f64))
            .collect();
        let factors: Vec<f32> = base
            .iter()
            .zip(m.rope.inv_freq())
            .map(|(b, &f)| (*b / f as f64) as f32)
            .collect();
        if factors.iter().any(|f| (f - 1.0).abs() > 1e-6) {
            out.vector(Tensor::RopeFreqs, &factors)?;
        }
    }
    for (i, layer) in m.layers.iter().enumerate() {
        out.vector(Tensor::AttnNorm(i), layer.input_layernorm.weight())?;
        let a = &layer.self_attn;
        let proj = |out: &mut Out<'a>, p: &'a Projection, t: Tensor, b: Tensor, heads: usize| {
            if permute {
                let order = interleave_order(heads, hd);
                let (w, rows) = (&p.linear.weight, order.clone());
                out.matrix_with(t, w.rows(), w.cols(), move || permute_rows(w, &rows));
                if let Some(bias) = &p.bias {
                    let bias: Vec<f32> = order.iter().map(|&r| bias[r]).collect();
                    out.vector(b, &bias)?;
                }
            } else {
                out.matrix(t, &p.linear.weight);
                if let Some(bias) = &p.bias {
                    out.vector(b, bias)?;
                }
            }
            Ok::<_, Error>(())
        };
        proj(out, &a.q_proj, Tensor::AttnQ(i), Tensor::AttnQBias(i), nh)?;
        proj(out, &a.k_proj, Tensor::AttnK(i), Tensor::AttnKBias(i), kvh)?;
        out.matrix(Tensor::AttnV(i), &a.v_proj.linear.weight);
        if let Some(b) = &a.v_proj.bias {
            out.vector(Tensor::AttnVBias(i), b)?;
        }
        out.matrix(Tensor::AttnOutput(i), &a.o_proj.linear.weight);
        if let Some(b) = &a.o_proj.bias {
            out.vector(Tensor::AttnOutputBias(i), b)?;
        }
        if let Some(n) = &a.qk_norm {
            out.vector(Tensor::AttnQNorm(i), n.q_norm.weight())?;
            out.vector(Tensor::AttnKNorm(i), n.k_norm.weight())?;
        }
        out.vector(Tensor::FfnNorm(i), layer.post_attention_layernorm.weight())?;
        out.mlp(
            [Tensor::FfnGate(i), Tensor::FfnUp(i), Tensor::FfnDown(i)],
            &layer.mlp,
        );
    }
    Ok(())
}

/// Row order that turns each head's `[first half | second half]` RoPE layout into interleaved
/// pairs: new row `2i` of a head is old row `i`, new row `2i + 1` is old row `i + d/2` (the
/// permutation llama.cpp's converter applies to Llama's q/k).
fn interleave_order(heads: usize, hd: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(heads * hd);
    for h in 0..heads {
        for i in 0..hd / 2 {
            order.push(h * hd + i);
            order.push(h * hd + i + hd / 2);
        }
    }
    order
}

/// `w` with its rows in `order` (whole ggml rows move; nothing is re-encoded).
fn permute_rows(w: &Weight, order: &[usize]) -> Result<Weight> {
    let (ty, bytes) = w.to_ggml().ok_or_else(|| {
        Error::InvalidArgument("permuting rows of a format ggml cannot store".into())
    })?;
    let per = bytes.len() / w.rows().max(1);
    let mut out = Vec::with_capacity(bytes.len());
    for &r in order {
        out.extend_from_slice(&bytes[r * per..(r + 1) * per]);
    }
    let format = crate::quant::Format::from_ggml(ty).expect("a format we run");
    Weight::new(w.rows(), w.cols(), format, crate::bytes::Bytes::owned(out))
}
