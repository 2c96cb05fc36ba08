//! The DeepSeek V2/V3 transformer, top-down as in the papers: embedding, decoder layers
//! (RMSNorm -> MLA -> residual, RMSNorm -> dense MLP or MoE -> residual), final norm, lm_head;
//! the R1-Distill families (Qwen2, Llama, Qwen3) in [`llama`]; [`Network`] is either.
//!
//! Knows the architecture; never a file, a tensor name, a storage format or SIMD: the loader
//! hands it finished weights.

mod cache;
mod linear;
pub mod llama;
mod mla;
mod mlp;
mod moe;
mod norm;
mod rope;
pub mod router;

pub use cache::KvCache;
pub use linear::Linear;
pub use llama::{Gqa, GqaScratch, LlamaLayer, LlamaModel};
pub use mla::{AttentionPath, KvUp, Mla, MlaScratch, QProj};
pub use mlp::{Mlp, MlpScratch};
pub use moe::{Moe, MoeScratch};
pub use norm::RmsNorm;
pub use rope::{Rope, RopeLayout};

use crate::config::Config;
use crate::kernels::Pool;
use crate::profile::{self, Part};
use crate::quant::Weight;

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
        let t = profile::start();
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
        profile::stop(Part::Attention, t);
        add_assign(h, delta);
        self.post_attention_layernorm.forward(h, normed);
        let t = profile::start();
        match &self.mlp {
            FeedForward::Dense(mlp) => {
                mlp.forward(ctx.pool, normed, n, &mut s.mlp, delta);
                profile::stop(Part::DenseMlp, t);
            }
            FeedForward::Moe(moe) => {
                moe.forward(ctx.pool, normed, n, &mut s.moe, delta);
                profile::stop(Part::Moe, t);
            }
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
                + a.kv_up.storage_bytes()
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
