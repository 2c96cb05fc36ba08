//! Multi-head latent attention (DeepSeek-V2 paper, section 2.1).
//!
//! Keys and values are compressed into one `kv_lora_rank` latent per token plus a RoPE key
//! shared by all heads; only those are cached. Two exact ways to attend:
//! - absorbed: fold `kv_b_proj`'s key half into the query and apply its value half after the
//!   softmax, so history is read as latents and per-head K/V never exist (decode);
//! - expanded: rebuild per-head K/V from the latents with `kv_b_proj` (cheaper for long prompts).

use super::cache::LayerCache;
use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use super::{attend_cache, grow, AttnWork};
use crate::kernels::attention::{self, CacheDtype, KvRows, Queries, Seg};
use crate::kernels::{self, Pool};

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
    queries: Vec<f32>,
    o_lat: Vec<f32>,
    latents: Vec<f32>,
    k_pe: Vec<f32>,
    kv_tile: Vec<f32>,
    rows: Vec<f32>,
    row_bytes: Vec<u8>,
    states: Vec<f32>,
    k_nope: Vec<f32>,
    k_bounds: Vec<usize>,
    bounds: Vec<usize>,
    work: AttnWork,
}

thread_local! {
    /// One head's `W_UK` decoded to f32 for the expanded path (grown, never shrunk).
    static EXPAND_W: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Cached rows expanded to per-head keys and values at a time (expanded path): bounds the
/// expansion buffers whatever the context length.
const EXPAND_TILE: usize = 256;

impl Mla {
    /// Width of one cached token: latent then roped `k_pe`.
    pub fn cache_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// The parts of a cached row: the latent, then the roped `k_pe`.
    pub fn cache_parts(&self) -> Vec<usize> {
        vec![self.kv_lora_rank, self.qk_rope_head_dim]
    }

    /// Attends `n` new tokens `x: [n, hidden]` at positions `pos0..pos0+n` over `cache`
    /// (`pos0` cached tokens), appends their latents to it, and writes `out: [n, hidden]`.
    pub fn forward(
        &self,
        pool: &Pool,
        rope: &Rope,
        path: AttentionPath,
        x: &[f32],
        n: usize,
        pos0: usize,
        cache: &mut LayerCache,
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
        for t in 0..n {
            let row = &mut kv[t * w..][..w];
            self.kv_a_layernorm.forward_inplace(&mut row[..c]);
            rope.apply(&mut row[c..], pos0 + t);
            for h in 0..nh {
                rope.apply(&mut q[(t * nh + h) * qk + dn..][..dr], pos0 + t);
            }
        }
        cache.append(pos0, kv);
        let cache = &*cache;

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
        cache: &LayerCache,
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
        let qk = dn + dr;

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

        // queries: [n, heads, row] = [q_lat | q_pe] laid out as a cached row [latent | k_pe], so
        // a score is one dot product over the row; every head shares every row (one group).
        let layout = cache.layout();
        let (width, lat) = (layout.width(), layout.seg(0));
        let queries = grow(&mut s.queries, n * nh * width);
        let pe = layout.seg(1);
        for t in 0..n {
            for h in 0..nh {
                let dst = &mut queries[(t * nh + h) * width..][..width];
                dst[..c].copy_from_slice(&q_lat[(h * n + t) * c..][..c]);
                dst[c..pe.col].fill(0.0);
                dst[pe.col..pe.col + dr].copy_from_slice(&q[(t * nh + h) * qk + dn..][..dr]);
                dst[pe.col + dr..].fill(0.0);
            }
        }
        // o_lat: [n, heads, latent (padded)]
        let o_lat = grow(&mut s.o_lat, n * nh * lat.width);
        let row = layout.span(0..2);
        attend_cache(
            pool,
            cache,
            n,
            pos0,
            1,
            nh,
            |_| (row, lat),
            queries,
            self.softmax_scale,
            &mut s.work,
            o_lat,
        );

        // out[h]: [n, v] = o_lat[h] W_UV[h]^T
        let o_h = grow(&mut s.head_in, n * c);
        let out = grow(&mut s.head_out, nh * n * dv);
        for h in 0..nh {
            for t in 0..n {
                o_h[t * c..][..c].copy_from_slice(&o_lat[(t * nh + h) * lat.width..][..c]);
            }
            let y = &mut out[h * n * dv..][..n * dv];
            let (v, rows) = match &self.kv_up {
                KvUp::Fused(kvb) => (kvb, h * (dn + dv) + dn..(h + 1) * (dn + dv)),
                KvUp::Split { v_b, .. } => (v_b, h * dv..(h + 1) * dv),
            };
            kernels::matmul(pool, &v.weight, rows, o_h, n, y);
        }
        for t in 0..n {
            for h in 0..nh {
                attn[(t * nh + h) * dv..][..dv].copy_from_slice(&out[(h * n + t) * dv..][..dv]);
            }
        }
    }

    /// Per-head K/V rebuilt from the cached latents `EXPAND_TILE` rows at a time, each tile
    /// attended by every new token's heads (online softmax), so no buffer grows with the cache.
    fn attend_expanded(
        &self,
        pool: &Pool,
        q: &[f32],
        n: usize,
        pos0: usize,
        cache: &LayerCache,
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
        let (qk, total) = (dn + dr, pos0 + n);
        // An expanded row: per head [k_nope | k_pe | v], so a head's key is one segment.
        let hw = dn + dr + dv;
        let sl = attention::state_len(dv);
        let (lat_w, pe_w) = (cache.layout().seg(0).width, cache.layout().seg(1).width);

        // states: [heads, n] running softmax states, carried across tiles.
        s.bounds.clear();
        s.bounds.extend((0..=nh).map(|h| h * n * sl));
        let states = grow(&mut s.states, nh * n * sl);
        attention::init_states(states, dv);
        for r0 in (0..total).step_by(EXPAND_TILE) {
            let b = EXPAND_TILE.min(total - r0);
            // latents: [b, kv_lora], k_pe: [b, rope] decoded from the cache
            let latents = grow(&mut s.latents, b * lat_w);
            cache.decode(r0..r0 + b, 0, latents);
            if lat_w != c {
                for j in 1..b {
                    latents.copy_within(j * lat_w..j * lat_w + c, j * c);
                }
            }
            let latents = &latents[..b * c];
            let k_pe = grow(&mut s.k_pe, b * pe_w);
            cache.decode(r0..r0 + b, 1, k_pe);

            // kv: [b, heads, nope + v] = latents kv_b^T
            let kv = grow(&mut s.kv_tile, b * nh * (dn + dv));
            match &self.kv_up {
                KvUp::Fused(kvb) => kvb.forward(pool, latents, b, kv),
                KvUp::Split { k_b, v_b } => {
                    // k_nope[h] = latents W_UK[h]: k_b holds W_UK[h]^T ([kv_lora, nope] per
                    // head), so decode it and sum its rows weighted by the latents (heads in
                    // parallel); v = latents W_UV^T is a plain matmul.
                    s.k_bounds.clear();
                    s.k_bounds.extend((0..=nh).map(|h| h * b * dn));
                    let k_all = grow(&mut s.k_nope, nh * b * dn);
                    k_all.fill(0.0);
                    pool.for_each_part(k_all, &s.k_bounds, b * c * dn, |h, k| {
                        EXPAND_W.with(|wb| {
                            let mut wb = wb.borrow_mut();
                            if wb.len() < c * dn {
                                wb.resize(c * dn, 0.0);
                            }
                            for r in 0..c {
                                let row = &mut wb[r * dn..][..dn];
                                kernels::decode_with(
                                    kernels::Isa::detect(),
                                    &k_b.weight,
                                    h * c + r,
                                    0,
                                    row,
                                );
                            }
                            attention::weighted_sum(latents, &wb[..c * dn], b, c, dn, k);
                        })
                    });
                    let part = grow(&mut s.head_out, b * dv);
                    for h in 0..nh {
                        let k = &s.k_nope[h * b * dn..][..b * dn];
                        for j in 0..b {
                            kv[(j * nh + h) * (dn + dv)..][..dn]
                                .copy_from_slice(&k[j * dn..][..dn]);
                        }
                        let v = &mut part[..b * dv];
                        kernels::matmul(pool, &v_b.weight, h * dv..(h + 1) * dv, latents, b, v);
                        for j in 0..b {
                            kv[(j * nh + h) * (dn + dv) + dn..][..dv]
                                .copy_from_slice(&v[j * dv..][..dv]);
                        }
                    }
                }
            }
            let rows = grow(&mut s.rows, b * nh * hw);
            for j in 0..b {
                for h in 0..nh {
                    let (src, dst) = (
                        &kv[(j * nh + h) * (dn + dv)..][..dn + dv],
                        &mut rows[(j * nh + h) * hw..][..hw],
                    );
                    dst[..dn].copy_from_slice(&src[..dn]);
                    dst[dn..dn + dr].copy_from_slice(&k_pe[j * pe_w..][..dr]);
                    dst[dn + dr..].copy_from_slice(&src[dn..]);
                }
            }
            if s.row_bytes.len() < b * nh * hw * 4 {
                s.row_bytes.resize(b * nh * hw * 4, 0);
            }
            let bytes = &mut s.row_bytes[..b * nh * hw * 4];
            attention::encode(CacheDtype::F32, rows, bytes);
            let run = KvRows {
                data: bytes,
                row_bytes: nh * hw * 4,
                first: r0,
            };
            // Heads in parallel, each over the tile's rows for all new tokens.
            let (scale, macs) = (self.softmax_scale, n * b * (qk + dv));
            pool.for_each_part(states, &s.bounds, macs, |h, part| {
                let queries = Queries {
                    n,
                    per: 1,
                    values: &q[h * qk..],
                    outer: nh * qk,
                    inner: 0,
                    blocks: &[],
                    block_outer: 0,
                    block_inner: 0,
                    visible: pos0 + 1,
                };
                let key = Seg {
                    col: h * hw,
                    width: qk,
                };
                let value = Seg {
                    col: h * hw + qk,
                    width: dv,
                };
                attention::attend(CacheDtype::F32, run, key, value, &queries, scale, part);
            });
        }
        for h in 0..nh {
            let part = &states[h * n * sl..][..n * sl];
            attention::finish_states(part, dv, &mut attn[h * dv..], nh * dv);
        }
    }
}
