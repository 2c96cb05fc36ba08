//! Multi-head latent attention (DeepSeek-V2 paper, section 2.1).
//!
//! Keys and values are compressed into one `kv_lora_rank` latent per token plus a RoPE key
//! shared by all heads; only those are cached. Two exact ways to attend:
//! - absorbed: fold `kv_b_proj`'s key half into the query and apply its value half after the
//!   softmax, so history is read as latents and per-head K/V never exist (decode);
//! - expanded: rebuild per-head K/V from the latents with `kv_b_proj` (cheaper for long prompts).

use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use super::{grow, softmax_inplace, HeadWork};
use crate::kernels::{self, axpy, dot, Pool};

/// Which way to evaluate attention over the latent cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// Whichever needs fewer multiply-adds for this call (absorbed for decode).
    #[default]
    Auto,
    /// Always fold `kv_b_proj` into the query and output.
    Absorbed,
    /// Always expand per-head K/V from the latents.
    Expanded,
}

/// The query projection: direct (V2-Lite) or through a low-rank latent (V2, V3, R1).
#[derive(Debug, Clone)]
pub enum QProj {
    /// `q_proj`.
    Plain(Linear),
    /// `q_b_proj(q_a_layernorm(q_a_proj(x)))`.
    Lora {
        /// Down-projection to `q_lora_rank`.
        q_a_proj: Linear,
        /// RMSNorm on the query latent.
        q_a_layernorm: RmsNorm,
        /// Up-projection to all heads.
        q_b_proj: Linear,
    },
}

/// The up-projection of the latent to per-head keys (no position) and values, `kv_b_proj`.
#[derive(Debug, Clone)]
pub enum KvUp {
    /// `kv_b_proj` `[heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]`: per head, K-nope
    /// rows then V rows (Hugging Face).
    Fused(Linear),
    /// The same split per head (llama.cpp's GGUF): `W_UK^T` as `k_b`
    /// `[heads * kv_lora_rank, qk_nope_head_dim]`, the orientation the absorbed query needs, and
    /// `W_UV` as `v_b` `[heads * v_head_dim, kv_lora_rank]`.
    Split {
        /// Per head, `W_UK^T`.
        k_b: Linear,
        /// Per head, `W_UV`.
        v_b: Linear,
    },
}

impl KvUp {
    /// Bytes of the matrices (what one full pass reads).
    pub fn storage_bytes(&self) -> usize {
        match self {
            KvUp::Fused(l) => l.weight.storage_bytes(),
            KvUp::Split { k_b, v_b } => k_b.weight.storage_bytes() + v_b.weight.storage_bytes(),
        }
    }
}

/// One MLA block.
#[derive(Debug, Clone)]
pub struct Mla {
    /// Query projection.
    pub q: QProj,
    /// `[kv_lora_rank + qk_rope_head_dim, hidden]`: the latent and the shared RoPE key.
    pub kv_a_proj_with_mqa: Linear,
    /// RMSNorm on the latent.
    pub kv_a_layernorm: RmsNorm,
    /// The latent's up-projection to per-head K-nope and V.
    pub kv_up: KvUp,
    /// `[hidden, heads * v_head_dim]`.
    pub o_proj: Linear,
    /// Attention heads.
    pub num_heads: usize,
    /// Per-head key/query width without position.
    pub qk_nope_head_dim: usize,
    /// Per-head key/query width with RoPE.
    pub qk_rope_head_dim: usize,
    /// Per-head value width.
    pub v_head_dim: usize,
    /// Latent width.
    pub kv_lora_rank: usize,
    /// Softmax scale (YaRN's mscale included).
    pub softmax_scale: f32,
}

/// Buffers for [`Mla::forward`], kept across calls.
#[derive(Debug, Default)]
pub struct MlaScratch {
    q: Vec<f32>,
    qa: Vec<f32>,
    kv: Vec<f32>,
    attn: Vec<f32>,
    heads: AttnScratch,
}

/// Buffers of the attention step proper.
#[derive(Debug, Default)]
struct AttnScratch {
    head_in: Vec<f32>,
    head_lat: Vec<f32>,
    head_out: Vec<f32>,
    latents: Vec<f32>,
    kv_full: Vec<f32>,
    heads: HeadWork,
}

impl Mla {
    /// Width of one cached token: latent then roped `k_pe`.
    pub fn cache_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Attends `n` new tokens `x: [n, hidden]` at positions `pos0..pos0+n` over `cache`
    /// (`pos0` cached tokens of `cache_width()` values), appends their latents to it, and
    /// writes `out: [n, hidden]`.
    pub fn forward(
        &self,
        pool: &Pool,
        rope: &Rope,
        path: AttentionPath,
        x: &[f32],
        n: usize,
        pos0: usize,
        cache: &mut Vec<f32>,
        s: &mut MlaScratch,
        out: &mut [f32],
    ) {
        let (nh, dn, dr, c) = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.kv_lora_rank,
        );
        let qk = dn + dr;
        let w = self.cache_width();

        // q: [n, heads, nope + rope]; kv: [n, kv_lora + rope] -> cache rows [latent | k_pe].
        // Both down-projections read x: one dispatch computes them together.
        let q = grow(&mut s.q, n * nh * qk);
        let kv = grow(&mut s.kv, n * w);
        let kv_a = &self.kv_a_proj_with_mqa.weight;
        match &self.q {
            QProj::Plain(q_proj) => kernels::matmul_pair(pool, &q_proj.weight, kv_a, x, n, q, kv),
            QProj::Lora {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                let qa = grow(&mut s.qa, n * q_a_proj.out_features());
                kernels::matmul_pair(pool, &q_a_proj.weight, kv_a, x, n, qa, kv);
                q_a_layernorm.forward_inplace(qa);
                q_b_proj.forward(pool, qa, n, q);
            }
        }
        cache.truncate(pos0 * w);
        for t in 0..n {
            let row = &mut kv[t * w..][..w];
            self.kv_a_layernorm.forward_inplace(&mut row[..c]);
            rope.apply(&mut row[c..], pos0 + t);
            cache.extend_from_slice(row);
            for h in 0..nh {
                rope.apply(&mut q[(t * nh + h) * qk + dn..][..dr], pos0 + t);
            }
        }

        // attn: [n, heads * v]
        let attn = grow(&mut s.attn, n * nh * self.v_head_dim);
        let absorbed = match path {
            AttentionPath::Absorbed => true,
            AttentionPath::Expanded => false,
            AttentionPath::Auto => self.absorbed_is_cheaper(n, pos0 + n),
        };
        if absorbed {
            self.attend_absorbed(pool, q, n, pos0, cache, &mut s.heads, attn);
        } else {
            self.attend_expanded(pool, q, n, pos0, cache, &mut s.heads, attn);
        }
        self.o_proj.forward(pool, attn, n, out);
    }

    /// Multiply-add counts of the two paths for `n` queries over `total` cached tokens.
    fn absorbed_is_cheaper(&self, n: usize, total: usize) -> bool {
        let (nh, dn, dr, dv, c) = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
            self.kv_lora_rank,
        );
        let pairs = n * total; // upper bound of causal (query, key) pairs
        let absorbed = nh * (n * (dn + dv) * c + pairs * (2 * c + dr));
        let expanded = nh * (total * (dn + dv) * c + pairs * (dn + dr + dv));
        absorbed <= expanded
    }

    fn attend_absorbed(
        &self,
        pool: &Pool,
        q: &[f32],
        n: usize,
        pos0: usize,
        cache: &[f32],
        s: &mut AttnScratch,
        attn: &mut [f32],
    ) {
        let (nh, dn, dr, dv, c) = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
            self.kv_lora_rank,
        );
        let (qk, w) = (dn + dr, c + dr);

        // q_lat[h]: [n, kv_lora] = q_nope[h] W_UK[h]   (W_UK[h] = kv_b rows of head h's keys)
        let q_nope = grow(&mut s.head_in, nh * n * dn);
        for t in 0..n {
            for h in 0..nh {
                q_nope[(h * n + t) * dn..][..dn].copy_from_slice(&q[(t * nh + h) * qk..][..dn]);
            }
        }
        let q_lat = grow(&mut s.head_lat, nh * n * c);
        for h in 0..nh {
            let (x, y) = (
                &q_nope[h * n * dn..][..n * dn],
                &mut q_lat[h * n * c..][..n * c],
            );
            match &self.kv_up {
                KvUp::Fused(kvb) => {
                    let rows = h * (dn + dv)..h * (dn + dv) + dn;
                    kernels::matmul_t(pool, &kvb.weight, rows, x, n, y);
                }
                KvUp::Split { k_b, .. } => {
                    kernels::matmul(pool, &k_b.weight, h * c..(h + 1) * c, x, n, y);
                }
            }
        }

        // o_lat[h, t] = softmax_j(q_lat . latent_j + q_pe . k_pe_j) weighted sum of latents;
        // heads in parallel.
        let (total, scale, q_lat) = (pos0 + n, self.softmax_scale, &q_lat[..]);
        let macs = n * total * (2 * c + dr);
        s.heads
            .run(pool, nh, n * c, total, macs, |hs, outs, scores| {
                // Cached latents outer, heads inner: all heads share the one latent row (MQA-like),
                // so each row is read once for the whole group instead of once per head.
                for t in 0..n {
                    let len = pos0 + t + 1;
                    for j in 0..len {
                        let row = &cache[j * w..][..w];
                        for (k, h) in hs.clone().enumerate() {
                            let ql = &q_lat[(h * n + t) * c..][..c];
                            let qp = &q[(t * nh + h) * qk + dn..][..dr];
                            scores[k * total + j] =
                                (dot(ql, &row[..c]) + dot(qp, &row[c..])) * scale;
                        }
                    }
                    for k in 0..hs.len() {
                        softmax_inplace(&mut scores[k * total..][..len]);
                        outs[(k * n + t) * c..][..c].fill(0.0);
                    }
                    for j in 0..len {
                        let latent = &cache[j * w..][..c];
                        for k in 0..hs.len() {
                            axpy(
                                scores[k * total + j],
                                latent,
                                &mut outs[(k * n + t) * c..][..c],
                            );
                        }
                    }
                }
            });

        // out[h]: [n, v] = o_lat[h] W_UV[h]^T
        let out = grow(&mut s.head_out, nh * n * dv);
        for h in 0..nh {
            let (x, y) = (s.heads.out(h, n * c), &mut out[h * n * dv..][..n * dv]);
            let (v, rows) = match &self.kv_up {
                KvUp::Fused(kvb) => (kvb, h * (dn + dv) + dn..(h + 1) * (dn + dv)),
                KvUp::Split { v_b, .. } => (v_b, h * dv..(h + 1) * dv),
            };
            kernels::matmul(pool, &v.weight, rows, x, n, y);
        }
        for t in 0..n {
            for h in 0..nh {
                attn[(t * nh + h) * dv..][..dv].copy_from_slice(&out[(h * n + t) * dv..][..dv]);
            }
        }
    }

    fn attend_expanded(
        &self,
        pool: &Pool,
        q: &[f32],
        n: usize,
        pos0: usize,
        cache: &[f32],
        s: &mut AttnScratch,
        attn: &mut [f32],
    ) {
        let (nh, dn, dr, dv, c) = (
            self.num_heads,
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
            self.kv_lora_rank,
        );
        let (qk, w, total) = (dn + dr, c + dr, pos0 + n);

        // kv_full: [total, heads, nope + v] from the cached latents
        let latents = grow(&mut s.latents, total * c);
        for j in 0..total {
            latents[j * c..][..c].copy_from_slice(&cache[j * w..][..c]);
        }
        let kv_full = grow(&mut s.kv_full, total * nh * (dn + dv));
        match &self.kv_up {
            KvUp::Fused(kvb) => kvb.forward(pool, latents, total, kv_full),
            KvUp::Split { k_b, v_b } => {
                // Per head: k_nope = latents W_UK, v = latents W_UV^T, into the fused layout.
                let part = grow(&mut s.head_out, total * dn.max(dv));
                for h in 0..nh {
                    let k = &mut part[..total * dn];
                    kernels::matmul_t(pool, &k_b.weight, h * c..(h + 1) * c, latents, total, k);
                    for j in 0..total {
                        kv_full[(j * nh + h) * (dn + dv)..][..dn]
                            .copy_from_slice(&k[j * dn..][..dn]);
                    }
                    let v = &mut part[..total * dv];
                    kernels::matmul(pool, &v_b.weight, h * dv..(h + 1) * dv, latents, total, v);
                    for j in 0..total {
                        kv_full[(j * nh + h) * (dn + dv) + dn..][..dv]
                            .copy_from_slice(&v[j * dv..][..dv]);
                    }
                }
            }
        }

        // Heads in parallel, each into its own [n, v] output.
        let (scale, kv_full) = (self.softmax_scale, &kv_full[..]);
        let macs = n * total * (dn + dr + dv);
        s.heads
            .run(pool, nh, n * dv, total, macs, |hs, outs, scores| {
                for (k, h) in hs.enumerate() {
                    let (o_h, scores) =
                        (&mut outs[k * n * dv..][..n * dv], &mut scores[k * total..]);
                    for t in 0..n {
                        let len = pos0 + t + 1;
                        let qh = &q[(t * nh + h) * qk..][..qk];
                        for (j, sc) in scores[..len].iter_mut().enumerate() {
                            let k_nope = &kv_full[(j * nh + h) * (dn + dv)..][..dn];
                            let k_pe = &cache[j * w + c..][..dr];
                            *sc = (dot(&qh[..dn], k_nope) + dot(&qh[dn..], k_pe)) * scale;
                        }
                        softmax_inplace(&mut scores[..len]);
                        let o = &mut o_h[t * dv..][..dv];
                        o.fill(0.0);
                        for (j, &p) in scores[..len].iter().enumerate() {
                            axpy(p, &kv_full[(j * nh + h) * (dn + dv) + dn..][..dv], o);
                        }
                    }
                }
            });
        for h in 0..nh {
            let o_h = s.heads.out(h, n * dv);
            for t in 0..n {
                attn[(t * nh + h) * dv..][..dv].copy_from_slice(&o_h[t * dv..][..dv]);
            }
        }
    }
}
