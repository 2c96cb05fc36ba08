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

pub use cache::{KvCache, LayerCache, RowLayout, PAGE};
pub use linear::Linear;
pub use llama::{Gqa, GqaScratch, LlamaLayer, LlamaModel};
pub use mla::{AttentionPath, KvUp, Mla, MlaScratch, QProj};
pub use mlp::{Mlp, MlpScratch};
pub use moe::{Moe, MoeScratch};
pub use norm::RmsNorm;
pub use rope::{Rope, RopeLayout};

use crate::config::Config;
use crate::kernels::attention::{self, CacheDtype, Queries, QueryBlock, Seg};
use crate::kernels::Pool;
use crate::profile::{self, Part};
use crate::quant::{Weight, QK};

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
        cache: &mut LayerCache,
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
        cache: &mut LayerCache,
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
        cache: &mut LayerCache,
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

/// Buffers of attention over a layer's cache, kept across calls: per-unit softmax states and
/// the queries quantised for Q8_0 caches.
#[derive(Debug, Default)]
pub(crate) struct AttnWork {
    states: Vec<f32>,
    bounds: Vec<usize>,
    blocks: Vec<QueryBlock>,
}

/// Positions per decode chunk: at most 16 chunks, whole pages, so a decoded token's attention
/// splits across threads along the cache (flash-decoding) the same way whatever the thread
/// count (the merge order is fixed, so the logits are too).
fn decode_chunk(total: usize) -> usize {
    total.div_ceil(16).next_multiple_of(PAGE)
}

/// Attention of `n` new tokens (positions `pos0..`) over `cache`, which already holds them.
///
/// Queries `q: [n, groups * per, kw]` (laid out as the cache's rows, see
/// [`RowLayout::place`]); the `per` queries of group `g` share the keys and values
/// `segs(g)` (MLA: one group, every head; GQA: a KV head's query heads), so each cached row is
/// read once for all of them. Writes `out: [n, groups * per, dv]`. A decoded token (`n == 1`)
/// splits the cache into chunks whose states are merged; longer inputs split by token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_cache<S>(
    pool: &Pool,
    cache: &LayerCache,
    n: usize,
    pos0: usize,
    groups: usize,
    per: usize,
    segs: S,
    q: &[f32],
    scale: f32,
    w: &mut AttnWork,
    out: &mut [f32],
) where
    S: Fn(usize) -> (Seg, Seg) + Sync,
{
    let dtype = cache.layout().dtype();
    let (key, value) = segs(0);
    let (kw, dv, sl) = (key.width, value.width, attention::state_len(value.width));
    let nq = groups * per;
    debug_assert!(q.len() == n * nq * kw && out.len() == n * nq * dv);
    let kb = kw / QK;
    let blocks: &[QueryBlock] = if dtype == CacheDtype::Q8_0 {
        if w.blocks.len() < n * nq * kb {
            w.blocks.resize(n * nq * kb, QueryBlock::default());
        }
        attention::quantize_queries(q, &mut w.blocks[..n * nq * kb]);
        &w.blocks[..n * nq * kb]
    } else {
        &[]
    };
    let queries = |g: usize| Queries {
        n: n * per,
        per,
        values: &q[g * per * kw..],
        outer: nq * kw,
        inner: kw,
        blocks: if blocks.is_empty() {
            blocks
        } else {
            &blocks[g * per * kb..]
        },
        block_outer: nq * kb,
        block_inner: kb,
        visible: pos0 + 1,
    };
    let total = pos0 + n;
    w.bounds.clear();
    if n == 1 {
        // Decode: (group, chunk of positions) units, merged in chunk order.
        let chunk = decode_chunk(total);
        let chunks = total.div_ceil(chunk);
        w.bounds.extend((0..=groups * chunks).map(|u| u * per * sl));
        let states = grow(&mut w.states, groups * chunks * per * sl);
        pool.for_each_part(states, &w.bounds, chunk * per * (kw + dv), |u, part| {
            let (g, c) = (u / chunks, u % chunks);
            let (key, value) = segs(g);
            attention::init_states(part, dv);
            for run in cache.rows(c * chunk..total.min((c + 1) * chunk)) {
                attention::attend(dtype, run, key, value, &queries(g), scale, part);
            }
        });
        for g in 0..groups {
            let (first, rest) =
                states[g * chunks * per * sl..][..chunks * per * sl].split_at_mut(per * sl);
            for part in rest.chunks_exact(per * sl) {
                attention::merge_states(first, part, dv);
            }
            attention::finish_states(first, dv, &mut out[g * per * dv..], dv);
        }
        return;
    }
    // Prefill: (group, block of tokens) units, each reading the rows its last token sees.
    let tb = n.div_ceil(4 * pool.threads()).clamp(1, 64);
    let blocks_n = n.div_ceil(tb);
    w.bounds.push(0);
    for u in 0..groups * blocks_n {
        let b = u % blocks_n;
        let tokens = (n.min((b + 1) * tb)) - b * tb;
        let last = *w.bounds.last().unwrap_or(&0);
        w.bounds.push(last + tokens * per * sl);
    }
    let states = grow(&mut w.states, groups * n * per * sl);
    let macs = tb * per * (pos0 + n / 2) * (kw + dv);
    pool.for_each_part(states, &w.bounds, macs, |u, part| {
        let (g, b) = (u / blocks_n, u % blocks_n);
        let (t0, t1) = (b * tb, n.min((b + 1) * tb));
        let (key, value) = segs(g);
        let qs = queries(g).tokens(t0, t1);
        attention::init_states(part, dv);
        for run in cache.rows(0..pos0 + t1) {
            attention::attend(dtype, run, key, value, &qs, scale, part);
        }
    });
    for u in 0..groups * blocks_n {
        let (g, b) = (u / blocks_n, u % blocks_n);
        let part = &states[w.bounds[u]..w.bounds[u + 1]];
        for (k, st) in part.chunks_exact(per * sl).enumerate() {
            let t = b * tb + k;
            attention::finish_states(st, dv, &mut out[(t * nq + g * per) * dv..], dv);
        }
    }
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

    /// The parts of one token's row in one layer's cache, in values: MLA's latent and RoPE key,
    /// or K then V of each KV head.
    pub fn cache_parts(&self) -> Vec<usize> {
        match self {
            Network::Deepseek(m) => m
                .layers
                .first()
                .map_or_else(Vec::new, |l| l.self_attn.cache_parts()),
            Network::Llama(m) => m.cache_parts(),
        }
    }

    /// Values one token occupies in one layer's cache (before any padding of the format).
    pub fn cache_width(&self) -> usize {
        self.cache_parts().iter().sum()
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
