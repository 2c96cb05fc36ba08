//! The Qwen2 / Llama / Qwen3 transformer (the R1-Distill models), top-down: embedding, decoder
//! layers (RMSNorm -> grouped-query attention -> residual, RMSNorm -> SwiGLU -> residual), final
//! norm, lm_head.
//!
//! One model for the three families: what differs (q/k/v biases, Qwen3's per-head q/k norm, the
//! RoPE scaling) is data from the config. Never a file, a tensor name, a storage format or SIMD.

use super::Scratch;
use super::{
    add_assign, attend_cache, grow, AttnWork, Ctx, LayerCache, Linear, Mlp, RmsNorm, Rope,
};
use crate::config::Config;
use crate::kernels::Pool;
use crate::quant::Weight;

/// A linear layer with an optional bias (Qwen2's q/k/v, `attention_bias` of Llama and Qwen3).
#[derive(Debug, Clone)]
pub struct Projection {
    /// The weight.
    pub linear: Linear,
    /// `[out_features]`, added to every output row.
    pub bias: Option<Vec<f32>>,
}

impl Projection {
    /// `y: [n, out] = x: [n, in] W^T + b`.
    pub fn forward(&self, pool: &Pool, x: &[f32], n: usize, y: &mut [f32]) {
        self.linear.forward(pool, x, n, y);
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                add_assign(row, b);
            }
        }
    }

    fn storage_bytes(&self) -> usize {
        self.linear.weight.storage_bytes()
    }
}

/// Qwen3's RMSNorms over each head of the queries and keys, applied before RoPE.
#[derive(Debug, Clone)]
pub struct QkNorm {
    /// Norm over one query head (`head_dim` weights shared by all heads).
    pub q_norm: RmsNorm,
    /// Norm over one key head.
    pub k_norm: RmsNorm,
}

/// Grouped-query attention: `num_attention_heads` query heads share `num_key_value_heads` K/V
/// heads in contiguous groups (query head `h` reads KV head `h / (heads / kv_heads)`).
#[derive(Debug, Clone)]
pub struct Gqa {
    /// `[heads * head_dim, hidden]`.
    pub q_proj: Projection,
    /// `[kv_heads * head_dim, hidden]`.
    pub k_proj: Projection,
    /// `[kv_heads * head_dim, hidden]`.
    pub v_proj: Projection,
    /// `[hidden, heads * head_dim]`.
    pub o_proj: Projection,
    /// Per-head q/k norms (Qwen3).
    pub qk_norm: Option<QkNorm>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of every head.
    pub head_dim: usize,
    /// `head_dim^-0.5`.
    pub softmax_scale: f32,
}

/// Buffers for [`Gqa::forward`], kept across calls.
#[derive(Debug, Default)]
pub struct GqaScratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    rows: Vec<f32>,
    queries: Vec<f32>,
    out: Vec<f32>,
    attn: Vec<f32>,
    work: AttnWork,
}

impl Gqa {
    /// Width of one cached token: roped K then V of every KV head.
    pub fn cache_width(&self) -> usize {
        2 * self.num_key_value_heads * self.head_dim
    }

    /// The parts of a cached row: each KV head's roped K, then each one's V.
    pub fn cache_parts(&self) -> Vec<usize> {
        vec![self.head_dim; 2 * self.num_key_value_heads]
    }

    /// Attends `n` new tokens `x: [n, hidden]` at positions `pos0..pos0+n` over `cache`
    /// (`pos0` cached tokens), appends their K/V to it, and writes `out: [n, hidden]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &Pool,
        rope: &Rope,
        x: &[f32],
        n: usize,
        pos0: usize,
        cache: &mut LayerCache,
        s: &mut GqaScratch,
        out: &mut [f32],
    ) {
        let (nh, kvh, hd) = (self.num_heads, self.num_key_value_heads, self.head_dim);
        let (group, kw) = (nh / kvh, kvh * hd);

        // q: [n, heads, head_dim]; k, v: [n, kv_heads, head_dim]
        let q = grow(&mut s.q, n * nh * hd);
        let k = grow(&mut s.k, n * kw);
        let v = grow(&mut s.v, n * kw);
        self.q_proj.forward(pool, x, n, q);
        self.k_proj.forward(pool, x, n, k);
        self.v_proj.forward(pool, x, n, v);
        if let Some(norm) = &self.qk_norm {
            norm.q_norm.forward_inplace(q);
            norm.k_norm.forward_inplace(k);
        }

        // cache rows: [k (kv_heads * head_dim) | v (kv_heads * head_dim)]
        let rows = grow(&mut s.rows, n * 2 * kw);
        for t in 0..n {
            for qh in q[t * nh * hd..][..nh * hd].chunks_exact_mut(hd) {
                rope.apply(qh, pos0 + t);
            }
            for kh in k[t * kw..][..kw].chunks_exact_mut(hd) {
                rope.apply(kh, pos0 + t);
            }
            rows[t * 2 * kw..][..kw].copy_from_slice(&k[t * kw..][..kw]);
            rows[(t * 2 + 1) * kw..][..kw].copy_from_slice(&v[t * kw..][..kw]);
        }
        cache.append(pos0, rows);

        // attn: [n, heads, head_dim], causal over the cache; a KV head's query group reads each
        // of its rows once. Queries and outputs take the cache's padded head width.
        let layout = cache.layout();
        let hp = layout.seg(0).width;
        let (queries, outs) = if hp == hd {
            (&q[..], grow(&mut s.attn, n * nh * hd))
        } else {
            let qp = grow(&mut s.queries, n * nh * hp);
            for (dst, src) in qp.chunks_exact_mut(hp).zip(q.chunks_exact(hd)) {
                dst[..hd].copy_from_slice(src);
                dst[hd..].fill(0.0);
            }
            (&qp[..], grow(&mut s.out, n * nh * hp))
        };
        attend_cache(
            pool,
            cache,
            n,
            pos0,
            kvh,
            group,
            |g| (layout.seg(g), layout.seg(kvh + g)),
            queries,
            self.softmax_scale,
            &mut s.work,
            outs,
        );
        let attn = if hp == hd {
            &s.attn[..n * nh * hd]
        } else {
            let attn = grow(&mut s.attn, n * nh * hd);
            for (dst, src) in attn.chunks_exact_mut(hd).zip(s.out.chunks_exact(hp)) {
                dst.copy_from_slice(&src[..hd]);
            }
            &attn[..]
        };
        self.o_proj.forward(pool, attn, n, out);
    }
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct LlamaLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Grouped-query attention.
    pub self_attn: Gqa,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// SwiGLU.
    pub mlp: Mlp,
}

impl LlamaLayer {
    /// `h: [n, hidden]` += attention, then += MLP, for tokens at `pos0..pos0+n`.
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
        self.self_attn.forward(
            ctx.pool, ctx.rope, normed, n, pos0, cache, &mut s.gqa, delta,
        );
        add_assign(h, delta);
        self.post_attention_layernorm.forward(h, normed);
        self.mlp.forward(ctx.pool, normed, n, &mut s.mlp, delta);
        add_assign(h, delta);
    }
}

/// A loaded Qwen2 / Llama / Qwen3 model: immutable weights, shareable across threads.
#[derive(Debug)]
pub struct LlamaModel {
    /// The validated config.
    pub config: Config,
    /// `[vocab, hidden]` token embeddings.
    pub embed_tokens: Weight,
    /// Decoder layers.
    pub layers: Vec<LlamaLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// `[vocab, hidden]` output projection (the embedding when tied).
    pub lm_head: Linear,
    /// Rotary table (shared by all layers).
    pub rope: Rope,
}

impl LlamaModel {
    /// Width of one cached token per layer: K and V of every KV head.
    pub fn cache_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.self_attn.cache_width())
    }

    /// The parts of a cached row: each KV head's K, then each one's V.
    pub fn cache_parts(&self) -> Vec<usize> {
        self.layers
            .first()
            .map_or_else(Vec::new, |l| l.self_attn.cache_parts())
    }

    /// Weight bytes one decoded token reads: every matrix except the embedding (one row).
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut total = self.lm_head.weight.storage_bytes();
        for l in &self.layers {
            let a = &l.self_attn;
            total += a.q_proj.storage_bytes()
                + a.k_proj.storage_bytes()
                + a.v_proj.storage_bytes()
                + a.o_proj.storage_bytes();
            total += l.mlp.gate_proj.weight.storage_bytes()
                + l.mlp.up_proj.weight.storage_bytes()
                + l.mlp.down_proj.weight.storage_bytes();
        }
        total
    }
}

impl super::Layer for LlamaLayer {
    fn forward(
        &self,
        ctx: &Ctx<'_>,
        h: &mut [f32],
        n: usize,
        pos0: usize,
        cache: &mut LayerCache,
        s: &mut Scratch,
    ) {
        LlamaLayer::forward(self, ctx, h, n, pos0, cache, s)
    }
}
