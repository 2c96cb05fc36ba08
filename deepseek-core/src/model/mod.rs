//! The DeepSeek V2/V3 transformer, top-down as in the papers: embedding, decoder layers
//! (RMSNorm -> MLA -> residual, RMSNorm -> dense MLP or MoE -> residual), final norm, lm_head;
//! the R1-Distill families (Qwen2, Llama, Qwen3) in [`llama`]; [`Network`] is either.
//!
//! Knows the architecture and the checkpoint's tensor names; never a storage format or SIMD.

mod cache;
mod linear;
pub mod llama;
mod mla;
mod mlp;
mod moe;
mod norm;
mod rope;
pub mod router;

use std::collections::HashSet;
use std::path::Path;

pub use cache::KvCache;
pub use linear::Linear;
pub use llama::{Gqa, GqaScratch, LlamaLayer, LlamaModel};
pub use mla::{AttentionPath, Mla, MlaScratch, QProj};
pub use mlp::{Mlp, MlpScratch};
pub use moe::{Moe, MoeScratch};
pub use norm::RmsNorm;
pub use rope::{Rope, RopeLayout};

use crate::config::{Architecture, Config};
use crate::error::{Error, Result};
use crate::kernels::Pool;
use crate::loader::{Checkpoint, TensorView};
use crate::quant::{Weight, WeightDtype};

/// The latent norms of MLA use a fixed epsilon, not `rms_norm_eps`.
const LATENT_NORM_EPS: f64 = 1e-6;

/// A layer's feed-forward block.
#[derive(Debug, Clone)]
pub enum FeedForward {
    /// A dense SwiGLU (the first `first_k_dense_replace` layers).
    Dense(Mlp),
    /// Routed + shared experts.
    Moe(Moe),
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Multi-head latent attention.
    pub self_attn: Mla,
    /// Norm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm,
    /// Dense MLP or MoE.
    pub mlp: FeedForward,
}

/// Buffers one forward pass reuses, owned by the session.
#[derive(Debug, Default)]
pub struct Scratch {
    normed: Vec<f32>,
    delta: Vec<f32>,
    attn: MlaScratch,
    gqa: GqaScratch,
    mlp: MlpScratch,
    moe: MoeScratch,
}

impl DecoderLayer {
    /// `h: [n, hidden]` += attention, then += feed-forward, for tokens at `pos0..pos0+n`.
    pub fn forward(
        &self,
        ctx: &Ctx<'_>,
        h: &mut [f32],
        n: usize,
        pos0: usize,
        cache: &mut Vec<f32>,
        s: &mut Scratch,
    ) {
        let normed = grow(&mut s.normed, h.len());
        let delta = grow(&mut s.delta, h.len());
        self.input_layernorm.forward(h, normed);
        self.self_attn.forward(
            ctx.pool,
            ctx.rope,
            ctx.path,
            normed,
            n,
            pos0,
            cache,
            &mut s.attn,
            delta,
        );
        add_assign(h, delta);
        self.post_attention_layernorm.forward(h, normed);
        match &self.mlp {
            FeedForward::Dense(mlp) => mlp.forward(ctx.pool, normed, n, &mut s.mlp, delta),
            FeedForward::Moe(moe) => moe.forward(ctx.pool, normed, n, &mut s.moe, delta),
        }
        add_assign(h, delta);
    }
}

/// A decoder layer of any family, as the layer stack runs it.
pub(crate) trait Layer {
    /// `h: [n, hidden]` through the layer for tokens at `pos0..pos0+n`, appending to `cache`.
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        h: &mut [f32],
        n: usize,
        pos0: usize,
        cache: &mut Vec<f32>,
        s: &mut Scratch,
    );
}

impl Layer for DecoderLayer {
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        h: &mut [f32],
        n: usize,
        pos0: usize,
        cache: &mut Vec<f32>,
        s: &mut Scratch,
    ) {
        DecoderLayer::forward(self, ctx, h, n, pos0, cache, s)
    }
}

/// Embedding, layers and final norm: the part every family runs the same way.
pub(crate) struct Stack<'a, L> {
    pub(crate) embed_tokens: &'a Weight,
    pub(crate) layers: &'a [L],
    pub(crate) norm: &'a RmsNorm,
}

impl<L: Layer> Stack<'_, L> {
    /// Runs `tokens` (already validated) at positions `pos0..` through every layer, leaving the
    /// final-normed hidden states in `h: [n, hidden]`. `trace` receives each layer's input and
    /// the last layer's output (before the final norm) when given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_hidden(
        &self,
        ctx: &Ctx<'_>,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
        s: &mut Scratch,
        h: &mut [f32],
        mut trace: Option<&mut Vec<Vec<f32>>>,
    ) {
        let hs = self.embed_tokens.cols();
        let n = tokens.len();
        for (t, &id) in tokens.iter().enumerate() {
            self.embed_tokens
                .decode(id as usize, 0, &mut h[t * hs..][..hs]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push(h.to_vec());
            }
            layer.forward(ctx, h, n, pos0, cache.layer_mut(l), s);
        }
        if let Some(tr) = trace {
            tr.push(h.to_vec());
        }
        cache.set_len(pos0 + n);
        self.norm.forward_inplace(h);
    }
}

/// What every layer's forward needs besides its own weights.
pub struct Ctx<'a> {
    /// Worker threads.
    pub pool: &'a Pool,
    /// The rotary table.
    pub rope: &'a Rope,
    /// Which attention path to use.
    pub path: AttentionPath,
}

/// A loaded DeepSeek V2/V3 model: immutable weights, shareable across threads and sessions.
#[derive(Debug)]
pub struct Transformer {
    /// The validated config.
    pub config: Config,
    /// `[vocab, hidden]` token embeddings.
    pub embed_tokens: Weight,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// `[vocab, hidden]` output projection.
    pub lm_head: Linear,
    /// Rotary table (shared by all layers).
    pub rope: Rope,
}

impl Transformer {
    /// Builds the model from an opened checkpoint, validating every tensor against `config`.
    /// Matrices are converted to `dtype` as they load, one tensor at a time; the router stays
    /// exact and, under 4-bit formats, lm_head takes 8 bits (as llama.cpp keeps it wider too).
    pub fn load(
        config: Config,
        ckpt: &Checkpoint,
        dtype: WeightDtype,
        threads: usize,
    ) -> Result<Self> {
        let Some(d) = config.deepseek().cloned() else {
            return Err(Error::UnsupportedArchitecture(
                config.model_type.as_str().to_string(),
            ));
        };
        let mut src = Source::new(ckpt, &config, dtype, threads);
        let c = &config;
        let (hs, nh) = (c.hidden_size, c.num_attention_heads);
        // Embeddings are read one row per token, never streamed: keep them exact.
        let embed_tokens = src.weight_as(
            "model.embed_tokens.weight",
            c.vocab_size,
            hs,
            WeightDtype::Auto,
        )?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let a = format!("{p}.self_attn");
            let q = match d.q_lora_rank {
                None => {
                    QProj::Plain(src.linear(&format!("{a}.q_proj"), nh * d.qk_head_dim(), hs)?)
                }
                Some(r) => QProj::Lora {
                    q_a_proj: src.linear(&format!("{a}.q_a_proj"), r, hs)?,
                    q_a_layernorm: src.norm(&format!("{a}.q_a_layernorm"), r, LATENT_NORM_EPS)?,
                    q_b_proj: src.linear(&format!("{a}.q_b_proj"), nh * d.qk_head_dim(), r)?,
                },
            };
            let self_attn = Mla {
                q,
                kv_a_proj_with_mqa: src.linear(
                    &format!("{a}.kv_a_proj_with_mqa"),
                    d.kv_lora_rank + d.qk_rope_head_dim,
                    hs,
                )?,
                kv_a_layernorm: src.norm(
                    &format!("{a}.kv_a_layernorm"),
                    d.kv_lora_rank,
                    LATENT_NORM_EPS,
                )?,
                kv_b_proj: src.linear(
                    &format!("{a}.kv_b_proj"),
                    nh * (d.qk_nope_head_dim + d.v_head_dim),
                    d.kv_lora_rank,
                )?,
                o_proj: src.linear(&format!("{a}.o_proj"), hs, nh * d.v_head_dim)?,
                num_heads: nh,
                qk_nope_head_dim: d.qk_nope_head_dim,
                qk_rope_head_dim: d.qk_rope_head_dim,
                v_head_dim: d.v_head_dim,
                kv_lora_rank: d.kv_lora_rank,
                softmax_scale: d.softmax_scale(),
            };
            let mlp = match (&d.moe, d.is_moe_layer(l)) {
                (Some(moe), true) => {
                    let m = format!("{p}.mlp");
                    let e = moe.n_routed_experts;
                    let bias_name = format!("{m}.gate.e_score_correction_bias");
                    let bias = match moe.topk_method {
                        crate::config::TopkMethod::NoauxTc => Some(src.vector(&bias_name, e)?),
                        _ => None,
                    };
                    let experts = (0..e)
                        .map(|i| {
                            src.mlp(&format!("{m}.experts.{i}"), moe.moe_intermediate_size, hs)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let shared_experts = match moe.n_shared_experts {
                        0 => None,
                        k => Some(src.mlp(
                            &format!("{m}.shared_experts"),
                            moe.moe_intermediate_size * k,
                            hs,
                        )?),
                    };
                    let gate =
                        src.weight_as(&format!("{m}.gate.weight"), e, hs, WeightDtype::Auto)?;
                    FeedForward::Moe(Moe {
                        gate: Linear { weight: gate },
                        e_score_correction_bias: bias,
                        router: router::RouterConfig::new(moe, c.model_type),
                        experts,
                        shared_experts,
                    })
                }
                _ => FeedForward::Dense(src.mlp(&format!("{p}.mlp"), c.intermediate_size, hs)?),
            };
            layers.push(DecoderLayer {
                input_layernorm: src.norm(&format!("{p}.input_layernorm"), hs, c.rms_norm_eps)?,
                self_attn,
                post_attention_layernorm: src.norm(
                    &format!("{p}.post_attention_layernorm"),
                    hs,
                    c.rms_norm_eps,
                )?,
                mlp,
            });
        }
        let norm = src.norm("model.norm", hs, c.rms_norm_eps)?;
        let lm_head = src.lm_head(c, &embed_tokens)?;
        src.check_all_used(c.num_hidden_layers, d.num_nextn_predict_layers)?;
        Ok(Transformer {
            rope: Rope::new(&config),
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// Weight bytes one decoded token reads: every matrix except the embedding (one row) and
    /// the routed experts, of which `num_experts_per_tok` per MoE layer (their average size).
    /// Decode speed is bounded by memory bandwidth divided by this.
    pub fn weight_bytes_per_token(&self) -> usize {
        let mlp = |m: &Mlp| {
            m.gate_proj.weight.storage_bytes()
                + m.up_proj.weight.storage_bytes()
                + m.down_proj.weight.storage_bytes()
        };
        let mut total = self.lm_head.weight.storage_bytes();
        for l in &self.layers {
            let a = &l.self_attn;
            total += match &a.q {
                QProj::Plain(q) => q.weight.storage_bytes(),
                QProj::Lora {
                    q_a_proj, q_b_proj, ..
                } => q_a_proj.weight.storage_bytes() + q_b_proj.weight.storage_bytes(),
            };
            total += a.kv_a_proj_with_mqa.weight.storage_bytes()
                + a.kv_b_proj.weight.storage_bytes()
                + a.o_proj.weight.storage_bytes();
            total += match &l.mlp {
                FeedForward::Dense(m) => mlp(m),
                FeedForward::Moe(moe) => {
                    let experts: usize = moe.experts.iter().map(mlp).sum();
                    moe.gate.weight.storage_bytes()
                        + experts / moe.experts.len().max(1) * moe.router.top_k
                        + moe.shared_experts.as_ref().map_or(0, mlp)
                }
            };
        }
        total
    }
}

/// Hands out checkpoint tensors by name, checking shapes, and remembers which were used.
struct Source<'a> {
    ckpt: &'a Checkpoint,
    used: HashSet<String>,
    fp8_block: Option<[usize; 2]>,
    dtype: WeightDtype,
    /// Threads that convert large matrices to `dtype`.
    threads: usize,
}

impl<'a> Source<'a> {
    fn new(ckpt: &'a Checkpoint, config: &Config, dtype: WeightDtype, threads: usize) -> Self {
        Source {
            ckpt,
            used: HashSet::new(),
            fp8_block: config.quantization.map(|q| q.weight_block_size),
            dtype,
            threads,
        }
    }

    fn take(&mut self, name: &str) -> Result<TensorView> {
        let t = self.ckpt.get(name)?;
        self.used.insert(name.to_string());
        Ok(t)
    }

    fn weight(&mut self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        self.weight_as(name, rows, cols, self.dtype)
    }

    fn weight_as(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        dtype: WeightDtype,
    ) -> Result<Weight> {
        let t = self.take(name)?;
        t.expect_shape(&[rows, cols])?;
        let scale_name = format!("{name}_scale_inv");
        let scale = match (self.ckpt.contains(&scale_name), self.fp8_block) {
            (true, Some(block)) => Some((self.take(&scale_name)?, block)),
            (true, None) => {
                return Err(Error::config(
                    "quantization_config",
                    format!("missing, but the checkpoint has block scales ({scale_name})"),
                ))
            }
            (false, _) => None,
        };
        Ok(Weight::from_view(t, scale)?.convert_with_threads(dtype, self.threads))
    }

    fn linear(&mut self, prefix: &str, rows: usize, cols: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.weight(&format!("{prefix}.weight"), rows, cols)?,
        })
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.take(name)?;
        t.expect_shape(&[len])?;
        if t.dtype == crate::loader::DType::F8E4M3 {
            return Err(Error::Dtype {
                name: name.to_string(),
                dtype: "F8_E4M3".into(),
            });
        }
        Ok(t.to_f32())
    }

    fn norm(&mut self, prefix: &str, len: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm::new(
            self.vector(&format!("{prefix}.weight"), len)?,
            eps,
        ))
    }

    /// `lm_head.weight`, or the embedding when tied and the file has no separate head. Under
    /// 4-bit formats the head takes 8 bits (as llama.cpp keeps it wider too).
    fn lm_head(&mut self, c: &Config, embed_tokens: &Weight) -> Result<Linear> {
        if c.tie_word_embeddings && !self.ckpt.contains("lm_head.weight") {
            return Ok(Linear {
                weight: embed_tokens.clone(),
            });
        }
        let head_dtype = match self.dtype {
            WeightDtype::Q4_0 => WeightDtype::Q8_0,
            d => d,
        };
        Ok(Linear {
            weight: self.weight_as("lm_head.weight", c.vocab_size, c.hidden_size, head_dtype)?,
        })
    }

    fn mlp(&mut self, prefix: &str, inter: usize, hidden: usize) -> Result<Mlp> {
        Ok(Mlp {
            gate_proj: self.linear(&format!("{prefix}.gate_proj"), inter, hidden)?,
            up_proj: self.linear(&format!("{prefix}.up_proj"), inter, hidden)?,
            down_proj: self.linear(&format!("{prefix}.down_proj"), hidden, inter)?,
        })
    }

    /// Fails on a tensor the model does not use, except the multi-token-prediction layers
    /// (`model.layers.N`, `num_hidden_layers <= N < num_hidden_layers + num_nextn_predict_layers`)
    /// that plain decoding skips: an unexpected tensor means the config does not describe this
    /// checkpoint.
    fn check_all_used(&self, num_layers: usize, mtp_layers: usize) -> Result<()> {
        let mut unused: Vec<&str> = self
            .ckpt
            .names()
            .filter(|n| !self.used.contains(*n))
            .filter(|n| {
                let layer = n
                    .strip_prefix("model.layers.")
                    .and_then(|r| r.split('.').next()?.parse::<usize>().ok());
                !matches!(layer, Some(l) if (num_layers..num_layers + mtp_layers).contains(&l))
                    && !n.ends_with("rotary_emb.inv_freq")
            })
            .collect();
        unused.sort_unstable();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::config(
                "num_hidden_layers",
                format!(
                    "the checkpoint has {} tensor(s) this config does not use, e.g. `{first}`: config and weights disagree",
                    unused.len()
                ),
            )),
        }
    }
}

/// `v[..n]`, growing `v` if needed: scratch reused across calls, so steady-state decoding
/// allocates nothing.
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Per-head attention buffers, so the heads of one layer can be attended on the pool at once.
#[derive(Debug, Default)]
pub(crate) struct HeadWork {
    buf: Vec<f32>,
    bounds: Vec<usize>,
    stride: usize,
    per_group: usize,
    out_len: usize,
}

impl HeadWork {
    /// Runs `f(heads, outs, scores)` over groups of consecutive heads, one group per pool
    /// thread (so a group reads each cached row once for all its heads), in parallel when
    /// `macs_per_head` (multiply-adds) makes it worth it. `outs` holds `out_len` floats per head
    /// of the group and `scores` `scores_len` per head, all the group's own.
    pub(crate) fn run<F>(
        &mut self,
        pool: &Pool,
        heads: usize,
        out_len: usize,
        scores_len: usize,
        macs_per_head: usize,
        f: F,
    ) where
        F: Fn(std::ops::Range<usize>, &mut [f32], &mut [f32]) + Sync,
    {
        let per = heads.div_ceil(pool.threads().clamp(1, heads.max(1))).max(1);
        let groups = heads.div_ceil(per);
        self.per_group = per;
        self.out_len = out_len;
        self.stride = per * (out_len + scores_len);
        self.bounds.clear();
        self.bounds.extend((0..=groups).map(|g| g * self.stride));
        let buf = grow(&mut self.buf, groups * self.stride);
        pool.for_each_part(buf, &self.bounds, per * macs_per_head, |g, part| {
            let (outs, scores) = part.split_at_mut(per * out_len);
            f(g * per..((g + 1) * per).min(heads), outs, scores)
        });
    }

    /// Head `h`'s output from the last [`run`](Self::run) (`len` floats).
    pub(crate) fn out(&self, h: usize, len: usize) -> &[f32] {
        let (g, k) = (h / self.per_group, h % self.per_group);
        &self.buf[g * self.stride + k * self.out_len..][..len]
    }
}

/// In-place softmax in float32 (max-subtracted), as transformers computes attention weights.
pub(crate) fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

fn add_assign(h: &mut [f32], d: &[f32]) {
    for (a, b) in h.iter_mut().zip(d) {
        *a += b;
    }
}

/// A loaded model of any supported family.
#[derive(Debug)]
pub enum Network {
    /// DeepSeek V2 / V3 / R1.
    Deepseek(Transformer),
    /// Qwen2, Llama, Qwen3.
    Llama(LlamaModel),
}

impl Network {
    /// Builds the model `config` describes from an opened checkpoint.
    pub fn load(
        config: Config,
        ckpt: &Checkpoint,
        dtype: WeightDtype,
        threads: usize,
    ) -> Result<Self> {
        Ok(match config.architecture {
            Architecture::Deepseek(_) => {
                Network::Deepseek(Transformer::load(config, ckpt, dtype, threads)?)
            }
            Architecture::Llama(_) => {
                Network::Llama(LlamaModel::load(config, ckpt, dtype, threads)?)
            }
        })
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        match self {
            Network::Deepseek(m) => &m.config,
            Network::Llama(m) => &m.config,
        }
    }

    /// The output projection.
    pub fn lm_head(&self) -> &Linear {
        match self {
            Network::Deepseek(m) => &m.lm_head,
            Network::Llama(m) => &m.lm_head,
        }
    }

    /// Values one token occupies in one layer's cache.
    pub fn cache_width(&self) -> usize {
        match self {
            Network::Deepseek(m) => m.layers.first().map_or(0, |l| l.self_attn.cache_width()),
            Network::Llama(m) => m.cache_width(),
        }
    }

    /// Weight bytes one decoded token reads (decode speed is bounded by bandwidth / this).
    pub fn weight_bytes_per_token(&self) -> usize {
        match self {
            Network::Deepseek(m) => m.weight_bytes_per_token(),
            Network::Llama(m) => m.weight_bytes_per_token(),
        }
    }

    /// Runs `tokens` at `pos0..` through every layer, leaving the final-normed hidden states in
    /// `h: [n, hidden]` (see [`Stack::forward_hidden`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_hidden(
        &self,
        pool: &Pool,
        path: AttentionPath,
        tokens: &[u32],
        pos0: usize,
        cache: &mut KvCache,
        s: &mut Scratch,
        h: &mut [f32],
        trace: Option<&mut Vec<Vec<f32>>>,
    ) {
        // Both families run the same stack; only their layers and rotary tables differ.
        match self {
            Network::Deepseek(m) => {
                let ctx = Ctx {
                    pool,
                    rope: &m.rope,
                    path,
                };
                let stack = Stack {
                    embed_tokens: &m.embed_tokens,
                    layers: &m.layers,
                    norm: &m.norm,
                };
                stack.forward_hidden(&ctx, tokens, pos0, cache, s, h, trace)
            }
            Network::Llama(m) => {
                let ctx = Ctx {
                    pool,
                    rope: &m.rope,
                    path,
                };
                let stack = Stack {
                    embed_tokens: &m.embed_tokens,
                    layers: &m.layers,
                    norm: &m.norm,
                };
                stack.forward_hidden(&ctx, tokens, pos0, cache, s, h, trace)
            }
        }
    }
}

/// Opens `dir` (config.json + weights) as a [`Network`].
pub(crate) fn load_dir(dir: &Path, dtype: WeightDtype, threads: usize) -> Result<Network> {
    let config = Config::from_file(dir.join("config.json"))?;
    let ckpt = Checkpoint::open(dir)?;
    Network::load(config, &ckpt, dtype, threads)
}
