//! Attention over a KV cache in the cache's own storage format: the row formats ([`CacheDtype`]:
//! f32, bf16, q8_0) with their encoding, and online-softmax attention of a batch of queries over
//! a run of cached rows.
//!
//! Rows are read a tile at a time and each tile serves every query that shares it (MLA: all
//! heads share the latent; GQA: a KV head's query group). Scores are dot products in the row's
//! format, integer for q8_0: a q8_0 row is a ggml Q8_0 row, and the query is quantised once to
//! 16-bit blocks ([`QueryBlock`]): as fast as 8-bit queries with AVX2 (`vpmaddwd` on the
//! sign-extended key instead of `vpmaddubsw`), and the query adds no error worth the name (an
//! 8-bit query cost MLA's absorbed path a logit cosine of 0.996 on the V2-Lite fixture; 16 bits
//! leave only the cache's own rounding). The weighted sum decodes each value row once per tile
//! for all queries. Each query keeps a running (max, sum, output) state instead of a score row, so
//! nothing grows with the context, and states over disjoint row ranges merge exactly
//! (flash-decoding). Every SIMD path has a scalar twin ([`Isa::Scalar`]). Knows no layers.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};

use super::{axpy_with, dot_with, Isa};
use crate::error::{Error, Result};
use crate::quant::blocks::{round_even, Q8_0_BYTES};
use crate::quant::QK;

/// Cached rows per tile: a tile is scored and summed for all queries while it is in L1/L2.
pub const TILE: usize = 32;

/// Queries scored together per tile (the stack holds their scores).
const QB: usize = 16;

/// How the values of cached rows are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheDtype {
    /// float32: exact.
    #[default]
    F32,
    /// bfloat16 (rounded to nearest even): 2 bytes per value.
    BF16,
    /// ggml Q8_0 blocks: per 32 values an f16 scale and 32 int8 (8.5 bits per value).
    Q8_0,
}

impl CacheDtype {
    /// Every format, in the order of their file ids.
    pub const ALL: [CacheDtype; 3] = [CacheDtype::F32, CacheDtype::BF16, CacheDtype::Q8_0];

    /// The name users know it by (`f32`, `bf16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            CacheDtype::F32 => "f32",
            CacheDtype::BF16 => "bf16",
            CacheDtype::Q8_0 => "q8_0",
        }
    }

    /// Values per block: each separately read part of a row is padded to a multiple of this.
    pub fn align(self) -> usize {
        match self {
            CacheDtype::Q8_0 => QK,
            _ => 1,
        }
    }

    /// Bytes of `values` values (a multiple of [`align`](Self::align)).
    pub fn bytes(self, values: usize) -> usize {
        match self {
            CacheDtype::F32 => 4 * values,
            CacheDtype::BF16 => 2 * values,
            CacheDtype::Q8_0 => values / QK * Q8_0_BYTES,
        }
    }

    /// The format's id in saved session files.
    pub fn id(self) -> u8 {
        match self {
            CacheDtype::F32 => 0,
            CacheDtype::BF16 => 1,
            CacheDtype::Q8_0 => 2,
        }
    }

    /// The format with file id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        CacheDtype::ALL.into_iter().find(|d| d.id() == id)
    }
}

impl fmt::Display for CacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(CacheDtype::F32),
            "bf16" | "bfloat16" => Ok(CacheDtype::BF16),
            "q8_0" | "q8" => Ok(CacheDtype::Q8_0),
            other => Err(Error::InvalidParameter {
                name: "cache_dtype".into(),
                message: format!("unknown cache dtype {other:?} (supported: f32, bf16, q8_0)"),
            }),
        }
    }
}

/// 32 query values quantised to 16 bits, the right-hand side of the Q8_0 score kernels.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct QueryBlock {
    /// Quantised values: value = `d * qs[i]`.
    pub qs: [i16; QK],
    /// Scale.
    pub d: f32,
}

/// Quantises `x` (a multiple of 32 long) into `out`, one block per 32 values: `d = amax /
/// 32767`, `q = round_even(x / d)`.
pub fn quantize_queries(x: &[f32], out: &mut [QueryBlock]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_queries: sizes");
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let id = if amax != 0.0 { 32767.0 / amax } else { 0.0 };
        ob.d = amax / 32767.0;
        for (o, &v) in ob.qs.iter_mut().zip(xb) {
            *o = round_even(v * id) as i16;
        }
    }
}

/// A Q8_0 row (blocks) . 16-bit query blocks: exact integer sums per block, then scaled (the
/// scalar twin of the SIMD score kernels).
pub fn dot_q8_0_q16(row: &[u8], q: &[QueryBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, qb) in row.chunks_exact(Q8_0_BYTES).zip(q) {
        let s: i32 = b[2..]
            .iter()
            .zip(&qb.qs)
            .map(|(&k, &x)| (k as i8) as i32 * x as i32)
            .sum();
        sum += f16::from_le_bytes([b[0], b[1]]).to_f32() * qb.d * s as f32;
    }
    sum
}

/// Stores `x` in `dtype` into `out` (`dtype.bytes(x.len())` bytes; for Q8_0 `x.len()` is a
/// multiple of 32). Q8_0 rounds as ggml's CPU `quantize_row_q8_0` does for llama.cpp's cache:
/// `d = amax / 127` stored as f16, `q = round_even(x * 127 / amax)`.
pub fn encode(dtype: CacheDtype, x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(dtype.align()) && out.len() == dtype.bytes(x.len()),
        "encode: {} values into {} bytes of {dtype}",
        x.len(),
        out.len()
    );
    match dtype {
        CacheDtype::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        CacheDtype::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        CacheDtype::Q8_0 => {
            for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                ob[..2].copy_from_slice(&f16::from_f32(amax / 127.0).to_le_bytes());
                for (o, &v) in ob[2..].iter_mut().zip(xb) {
                    *o = round_even(v * id) as i8 as u8;
                }
            }
        }
    }
}

/// `out[i]` = value `i` of `src` (`dtype.bytes(out.len())` bytes), with the detected [`Isa`].
pub fn decode(dtype: CacheDtype, src: &[u8], out: &mut [f32]) {
    decode_with(Isa::detect(), dtype, src, out)
}

/// [`decode`] with an explicit instruction set.
pub fn decode_with(isa: Isa, dtype: CacheDtype, src: &[u8], out: &mut [f32]) {
    assert!(
        out.len().is_multiple_of(dtype.align()) && src.len() == dtype.bytes(out.len()),
        "decode: {} bytes of {dtype} into {} values",
        src.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        // SAFETY: Avx2/Avx512Vnni are only ever chosen when the CPU has AVX2 + FMA + F16C.
        unsafe {
            match dtype {
                CacheDtype::BF16 => return super::x86::bf16_to_f32(src, out),
                CacheDtype::Q8_0 => return super::x86::q8_0_to_f32(src, out),
                CacheDtype::F32 => {}
            }
        }
    }
    let _ = isa;
    match dtype {
        CacheDtype::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        CacheDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        CacheDtype::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(Q8_0_BYTES)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (v, &q) in o.iter_mut().zip(&b[2..]) {
                    *v = d * (q as i8) as f32;
                }
            }
        }
    }
}

/// Consecutive cached rows in one buffer: row `j` is position `first + j`.
#[derive(Debug, Clone, Copy)]
pub struct KvRows<'a> {
    /// The rows' bytes, `row_bytes` per row.
    pub data: &'a [u8],
    /// Bytes per row.
    pub row_bytes: usize,
    /// Position of the first row.
    pub first: usize,
}

impl<'a> KvRows<'a> {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.row_bytes).unwrap_or(0)
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `j`'s bytes.
    pub fn row(&self, j: usize) -> &'a [u8] {
        &self.data[j * self.row_bytes..][..self.row_bytes]
    }
}

/// A part of a row read on its own (a key or a value): first value and width, both multiples
/// of the format's [`align`](CacheDtype::align).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// First value in the row.
    pub col: usize,
    /// Values.
    pub width: usize,
}

/// The queries of one attention call. Query `i` is the `(i % per)`-th query of token `i / per`;
/// its values are `values[(i / per) * outer + (i % per) * inner..][..key width]`, its Q8_0
/// blocks (for Q8_0 caches) `blocks[(i / per) * block_outer + (i % per) * block_inner..]`, and it
/// sees the positions below `visible + i / per` (causal masking).
#[derive(Debug, Clone, Copy)]
pub struct Queries<'a> {
    /// Queries in the call.
    pub n: usize,
    /// Queries per token.
    pub per: usize,
    /// Query values (f32).
    pub values: &'a [f32],
    /// Floats between consecutive tokens' queries.
    pub outer: usize,
    /// Floats between consecutive queries of one token.
    pub inner: usize,
    /// The queries quantised with [`quantize_queries`] (Q8_0 caches only; empty otherwise).
    pub blocks: &'a [QueryBlock],
    /// Blocks between consecutive tokens' queries.
    pub block_outer: usize,
    /// Blocks between consecutive queries of one token.
    pub block_inner: usize,
    /// Positions the first token sees.
    pub visible: usize,
}

impl<'a> Queries<'a> {
    /// The queries of tokens `t0..t1` only.
    pub fn tokens(&self, t0: usize, t1: usize) -> Queries<'a> {
        Queries {
            n: (t1 - t0) * self.per,
            values: &self.values[t0 * self.outer..],
            blocks: if self.blocks.is_empty() {
                self.blocks
            } else {
                &self.blocks[t0 * self.block_outer..]
            },
            visible: self.visible + t0,
            ..*self
        }
    }

    #[inline]
    fn limit(&self, i: usize) -> usize {
        self.visible + i / self.per
    }

    #[inline]
    fn value_at(&self, i: usize) -> usize {
        (i / self.per) * self.outer + (i % self.per) * self.inner
    }

    #[inline]
    fn block_at(&self, i: usize) -> usize {
        (i / self.per) * self.block_outer + (i % self.per) * self.block_inner
    }
}

/// Floats of one query's running state for values of width `dv`: max, sum, then the output.
pub fn state_len(dv: usize) -> usize {
    dv + 2
}

/// Resets `states` (whole states of width `dv`) to "no row seen".
pub fn init_states(states: &mut [f32], dv: usize) {
    for st in states.chunks_exact_mut(state_len(dv)) {
        st[0] = f32::NEG_INFINITY;
        st[1..].fill(0.0);
    }
}

/// Folds `src` into `dst` (states of width `dv` over disjoint row ranges): the result is the
/// state over both ranges, exactly as if one pass had read them all.
pub fn merge_states(dst: &mut [f32], src: &[f32], dv: usize) {
    let sl = state_len(dv);
    for (d, s) in dst.chunks_exact_mut(sl).zip(src.chunks_exact(sl)) {
        let m = d[0].max(s[0]);
        if m == f32::NEG_INFINITY {
            continue;
        }
        let (a, b) = (exp_scalar(d[0] - m), exp_scalar(s[0] - m));
        d[0] = m;
        d[1] = d[1] * a + s[1] * b;
        for (o, v) in d[2..].iter_mut().zip(&s[2..]) {
            *o = *o * a + v * b;
        }
    }
}

/// The attention output of each state: its weighted sum over its softmax denominator, into
/// `out[i * stride..][..dv]`.
pub fn finish_states(states: &[f32], dv: usize, out: &mut [f32], stride: usize) {
    for (i, st) in states.chunks_exact(state_len(dv)).enumerate() {
        let inv = if st[1] > 0.0 { 1.0 / st[1] } else { 0.0 };
        for (o, v) in out[i * stride..][..dv].iter_mut().zip(&st[2..]) {
            *o = v * inv;
        }
    }
}

/// Updates the states of `q`'s queries with the rows of `rows`: score `scale * q . key` per
/// visible row, softmax folded into each running state, value rows summed with those weights.
/// `states` holds `q.n` states of width `value.width` ([`state_len`]).
pub fn attend(
    dtype: CacheDtype,
    rows: KvRows<'_>,
    key: Seg,
    value: Seg,
    q: &Queries<'_>,
    scale: f32,
    states: &mut [f32],
) {
    attend_with(Isa::detect(), dtype, rows, key, value, q, scale, states)
}

/// [`attend`] with an explicit instruction set.
#[allow(clippy::too_many_arguments)]
pub fn attend_with(
    isa: Isa,
    dtype: CacheDtype,
    rows: KvRows<'_>,
    key: Seg,
    value: Seg,
    q: &Queries<'_>,
    scale: f32,
    states: &mut [f32],
) {
    let a = dtype.align();
    assert!(
        rows.row_bytes == 0 || rows.data.len().is_multiple_of(rows.row_bytes),
        "attend: partial row"
    );
    assert!(
        [key.col, key.width, value.col, value.width]
            .iter()
            .all(|v| v.is_multiple_of(a))
            && dtype.bytes(key.col + key.width) <= rows.row_bytes
            && dtype.bytes(value.col + value.width) <= rows.row_bytes,
        "attend: segments {key:?} {value:?} do not fit {} byte rows of {dtype}",
        rows.row_bytes
    );
    assert_eq!(states.len(), q.n * state_len(value.width), "attend: states");
    if q.n > 0 {
        let last = q.n - 1;
        assert!(
            q.value_at(last) + key.width <= q.values.len(),
            "attend: query values"
        );
        if dtype == CacheDtype::Q8_0 {
            assert!(
                q.block_at(last) + key.width / QK <= q.blocks.len(),
                "attend: query blocks"
            );
        }
    }
    if rows.is_empty() || q.n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        // SAFETY: Avx2/Avx512Vnni are only ever chosen when the CPU has AVX2 + FMA + F16C; the
        // shapes were checked above.
        return unsafe { avx2::attend(dtype, rows, key, value, q, scale, states) };
    }
    attend_generic(isa, dtype, rows, key, value, q, scale, states)
}

/// `out[i, :] += sum_r p[i, r] * v[r, :]` for `p: [n, m]`, `v: [m, w]`, `out: [n, w]` (all f32,
/// row-major): attention's weighted sum as a plain product, for rows rebuilt on the fly (MLA's
/// keys expanded from latents).
pub fn weighted_sum(p: &[f32], v: &[f32], n: usize, m: usize, w: usize, out: &mut [f32]) {
    weighted_sum_with(Isa::detect(), p, v, n, m, w, out)
}

/// [`weighted_sum`] with an explicit instruction set.
pub fn weighted_sum_with(
    isa: Isa,
    p: &[f32],
    v: &[f32],
    n: usize,
    m: usize,
    w: usize,
    out: &mut [f32],
) {
    assert!(
        p.len() >= n * m && v.len() >= m * w && out.len() >= n * w,
        "weighted_sum: shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) && n > 0 && m > 0 {
        // SAFETY: AVX2 + FMA + F16C were detected; shapes checked above.
        return unsafe { avx2::weighted_sum(p, v, n, m, w, out) };
    }
    for i in 0..n {
        let o = &mut out[i * w..][..w];
        for r in 0..m {
            axpy_with(isa, p[i * m + r], &v[r * w..][..w], o);
        }
    }
}

thread_local! {
    /// A tile's keys and values decoded to f32 (grown, never shrunk).
    static TILE_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The scalar reference (`Isa::Scalar`) and the portable path: each tile decoded to f32 once,
/// then plain (or `wide`) dot products and axpys per query.
#[allow(clippy::too_many_arguments)]
fn attend_generic(
    isa: Isa,
    dtype: CacheDtype,
    rows: KvRows<'_>,
    key: Seg,
    value: Seg,
    q: &Queries<'_>,
    scale: f32,
    states: &mut [f32],
) {
    let (kw, dv) = (key.width, value.width);
    let sl = state_len(dv);
    let (kb, vb) = (dtype.bytes(key.col), dtype.bytes(value.col));
    let (kbytes, vbytes) = (dtype.bytes(kw), dtype.bytes(dv));
    TILE_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < TILE * (kw + dv) {
            buf.resize(TILE * (kw + dv), 0.0);
        }
        let (keys, vals) = buf.split_at_mut(TILE * kw);
        let mut s = [0f32; TILE];
        let n_rows = rows.len();
        for t0 in (0..n_rows).step_by(TILE) {
            let b = TILE.min(n_rows - t0);
            let pos = rows.first + t0;
            if q.limit(q.n - 1) <= pos {
                break; // limits grow with the query index: nobody sees this tile or later ones
            }
            for j in 0..b {
                let row = rows.row(t0 + j);
                if dtype != CacheDtype::Q8_0 {
                    decode_with(isa, dtype, &row[kb..kb + kbytes], &mut keys[j * kw..][..kw]);
                }
                decode_with(isa, dtype, &row[vb..vb + vbytes], &mut vals[j * dv..][..dv]);
            }
            for i in 0..q.n {
                let vis = q.limit(i).saturating_sub(pos).min(b);
                if vis == 0 {
                    continue;
                }
                let qv = &q.values[q.value_at(i)..][..kw];
                for (j, sj) in s[..vis].iter_mut().enumerate() {
                    let d = if dtype == CacheDtype::Q8_0 {
                        let row = rows.row(t0 + j);
                        let qb = &q.blocks[q.block_at(i)..][..kw / QK];
                        dot_q8_0_q16(&row[kb..kb + kbytes], qb)
                    } else {
                        dot_with(isa, qv, &keys[j * kw..][..kw])
                    };
                    *sj = d * scale;
                }
                let st = &mut states[i * sl..][..sl];
                online_update(&mut s[..vis], st);
                let (_, o) = st.split_at_mut(2);
                for (j, &p) in s[..vis].iter().enumerate() {
                    axpy_with(isa, p, &vals[j * dv..][..dv], o);
                }
            }
        }
    })
}

/// Folds scores `s` (all visible) into a state: `s` becomes the weights `exp(s - max)`, the
/// state's sum and output are rescaled to the new max.
fn online_update(s: &mut [f32], st: &mut [f32]) {
    let mt = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let m = st[0].max(mt);
    let alpha = exp_scalar(st[0] - m);
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = exp_scalar(*v - m);
        sum += *v;
    }
    st[0] = m;
    st[1] = st[1] * alpha + sum;
    if alpha != 1.0 {
        st[2..].iter_mut().for_each(|o| *o *= alpha);
    }
}

const EXP_HI: f32 = 88.0;
/// Below this `exp` is under f32's smallest normal: flushed to zero.
const EXP_LO: f32 = -87.336_54;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so `n * LN2_HI` is exact (Cody-Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial on [-ln2/2, ln2/2] (relative error ~1e-7).
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` as the SIMD kernels compute it (Cephes' polynomial; 0 below f32's normal range, NaN
/// stays NaN): the scalar twin of the vector `exp`.
pub fn exp_scalar(x: f32) -> f32 {
    if x < EXP_LO {
        return 0.0;
    }
    let x = if x > EXP_HI { EXP_HI } else { x };
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    if n.is_nan() {
        return f32::NAN;
    }
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 + FMA + F16C: 2 rows x 4 queries of scores per register tile, 4 queries x 16
    //! columns of outputs per register tile, vector `exp`.

    use std::arch::x86_64::*;

    use super::*;

    /// The format a kernel instance is compiled for (`D` = [`CacheDtype::id`]), so the format's
    /// branches fold away.
    #[inline(always)]
    const fn fmt<const D: u8>() -> CacheDtype {
        match D {
            0 => CacheDtype::F32,
            1 => CacheDtype::BF16,
            _ => CacheDtype::Q8_0,
        }
    }

    /// The f16 scale at the start of a Q8_0 block.
    #[inline(always)]
    unsafe fn scale_at(p: *const u8) -> f32 {
        // SAFETY: the caller points at a block's two scale bytes; register-only conversion.
        unsafe {
            let h = u16::from_le_bytes([*p, *p.add(1)]);
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        }
    }

    /// Eight values of a row starting at `p` as f32.
    #[inline(always)]
    unsafe fn load8<const D: u8>(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 values of the format at `p` (Q8_0: 8 quant bytes, the
        // scale applied by the caller).
        unsafe {
            match fmt::<D>() {
                CacheDtype::F32 => _mm256_loadu_ps(p.cast()),
                CacheDtype::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
                    16,
                )),
                CacheDtype::Q8_0 => {
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())))
                }
            }
        }
    }

    /// `[a0..a7]` -> the sums of each, in order.
    #[inline(always)]
    unsafe fn reduce8(a: [__m256; 8]) -> __m256 {
        // SAFETY: register-only intrinsics.
        unsafe {
            let t0 = _mm256_hadd_ps(a[0], a[1]);
            let t1 = _mm256_hadd_ps(a[2], a[3]);
            let t2 = _mm256_hadd_ps(a[4], a[5]);
            let t3 = _mm256_hadd_ps(a[6], a[7]);
            let u0 = _mm256_hadd_ps(t0, t1);
            let u1 = _mm256_hadd_ps(t2, t3);
            _mm256_add_ps(
                _mm256_permute2f128_ps(u0, u1, 0x20),
                _mm256_permute2f128_ps(u0, u1, 0x31),
            )
        }
    }

    /// Scores of 2 rows (`k`, key bytes) x 4 float queries over `width` values: lanes
    /// `r * 4 + q`.
    #[inline(always)]
    unsafe fn dots_float<const D: u8>(
        k: [*const u8; 2],
        q: [*const f32; 4],
        width: usize,
    ) -> [f32; 8] {
        let vb = fmt::<D>().bytes(1);
        // SAFETY: the caller guarantees `width` values at each `k[r]` and `q[j]`.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c + 8 <= width {
                let k0 = load8::<D>(k[0].add(c * vb));
                let k1 = load8::<D>(k[1].add(c * vb));
                for j in 0..4 {
                    let qv = _mm256_loadu_ps(q[j].add(c));
                    acc[j] = _mm256_fmadd_ps(k0, qv, acc[j]);
                    acc[4 + j] = _mm256_fmadd_ps(k1, qv, acc[4 + j]);
                }
                c += 8;
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), reduce8(acc));
            for c in c..width {
                let kv = [0, 1].map(|r| scalar_at::<D>(k[r], c));
                for j in 0..4 {
                    let qv = *q[j].add(c);
                    out[j] += kv[0] * qv;
                    out[4 + j] += kv[1] * qv;
                }
            }
            out
        }
    }

    /// Value `c` of a float row.
    #[inline(always)]
    unsafe fn scalar_at<const D: u8>(p: *const u8, c: usize) -> f32 {
        // SAFETY: the caller guarantees value `c` exists.
        unsafe {
            match fmt::<D>() {
                CacheDtype::F32 => (p.cast::<f32>().add(c)).read_unaligned(),
                _ => f32::from_bits((p.cast::<u16>().add(c).read_unaligned() as u32) << 16),
            }
        }
    }

    /// Scores of 2 Q8_0 rows x 4 16-bit queries over `nb` blocks: lanes `r * 4 + q`.
    #[inline(always)]
    unsafe fn dots_q8(k: [*const u8; 2], q: [*const QueryBlock; 4], nb: usize) -> [f32; 8] {
        // SAFETY: the caller guarantees `nb` blocks at each pointer.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for b in 0..nb {
                let kp = [k[0].add(b * Q8_0_BYTES), k[1].add(b * Q8_0_BYTES)];
                // The key's 32 int8 sign-extended to two halves of 16 x i16.
                let kq = kp.map(|p| _mm256_loadu_si256(p.add(2).cast()));
                let lo = kq.map(|v| _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)));
                let hi = kq.map(|v| _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)));
                let kd = kp.map(|p| scale_at(p));
                for j in 0..4 {
                    let xb = &*q[j].add(b);
                    let x0 = _mm256_loadu_si256(xb.qs.as_ptr().cast());
                    let x1 = _mm256_loadu_si256(xb.qs.as_ptr().add(16).cast());
                    for r in 0..2 {
                        let p32 = _mm256_add_epi32(
                            _mm256_madd_epi16(lo[r], x0),
                            _mm256_madd_epi16(hi[r], x1),
                        );
                        acc[r * 4 + j] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p32),
                            _mm256_set1_ps(kd[r] * xb.d),
                            acc[r * 4 + j],
                        );
                    }
                }
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), reduce8(acc));
            out
        }
    }

    /// `e^x` of 8 lanes, as [`exp_scalar`].
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        // SAFETY: register-only intrinsics.
        unsafe {
            let under = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ);
            // min(HI, x) returns x when x is NaN, so NaN propagates.
            let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
            let n = _mm256_round_ps(
                _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_P[0]);
            for c in &EXP_P[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
            }
            let y = _mm256_add_ps(
                _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
                _mm256_set1_ps(1.0),
            );
            let e = _mm256_slli_epi32(
                _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                23,
            );
            _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)))
        }
    }

    /// [`online_update`] over `s[..vis]` of a `TILE`-long score row; `s[vis..]` become 0.
    #[inline(always)]
    unsafe fn update(s: &mut [f32; TILE], vis: usize, st: *mut f32, dv: usize) {
        // SAFETY: `st` points at a state of `dv + 2` floats owned by the caller; `s` is TILE
        // (a multiple of 8) long.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut mx = ninf;
            let chunks = vis.div_ceil(8);
            for c in 0..chunks {
                let live = _mm256_cmpgt_epi32(_mm256_set1_epi32((vis - 8 * c) as i32), lane);
                let v = _mm256_loadu_ps(s.as_ptr().add(8 * c));
                mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(live)));
            }
            let h = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
            let h = _mm256_max_ps(h, _mm256_shuffle_ps(h, h, 0b01_00_11_10));
            let h = _mm256_max_ps(h, _mm256_shuffle_ps(h, h, 0b10_11_00_01));
            let mt = _mm256_cvtss_f32(h);
            let m = (*st).max(mt);
            let alpha = exp_scalar(*st - m);
            let mv = _mm256_set1_ps(m);
            let mut sum = _mm256_setzero_ps();
            for c in 0..TILE / 8 {
                let p = s.as_mut_ptr().add(8 * c);
                let e = if 8 * c < vis {
                    let live = _mm256_cmpgt_epi32(_mm256_set1_epi32((vis - 8 * c) as i32), lane);
                    _mm256_and_ps(
                        exp8(_mm256_sub_ps(_mm256_loadu_ps(p), mv)),
                        _mm256_castsi256_ps(live),
                    )
                } else {
                    _mm256_setzero_ps()
                };
                sum = _mm256_add_ps(sum, e);
                _mm256_storeu_ps(p, e);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            let sum: f32 = lanes.iter().sum();
            *st = m;
            *st.add(1) = *st.add(1) * alpha + sum;
            if alpha != 1.0 {
                let a = _mm256_set1_ps(alpha);
                let o = st.add(2);
                let mut c = 0;
                while c + 8 <= dv {
                    _mm256_storeu_ps(o.add(c), _mm256_mul_ps(_mm256_loadu_ps(o.add(c)), a));
                    c += 8;
                }
                for c in c..dv {
                    *o.add(c) *= alpha;
                }
            }
        }
    }

    /// Outputs of 4 queries (`o`, possibly repeated) += their weights `p` (`b` rows each) times
    /// `W` value columns `c..c + 8 * W` of rows `v` (value-segment pointers, `row_bytes` apart).
    #[inline(always)]
    unsafe fn accumulate<const D: u8, const W: usize>(
        v: *const u8,
        row_bytes: usize,
        b: usize,
        c: usize,
        p: [*const f32; 4],
        o: [*mut f32; 4],
    ) {
        // SAFETY: the caller guarantees `b` rows with columns `c..c + 8W`, `b` weights per
        // query and outputs of at least `c + 8W` floats; repeated outputs compute and store
        // identical values.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); W]; 4];
            for k in 0..4 {
                for w in 0..W {
                    acc[k][w] = _mm256_loadu_ps(o[k].add(c + 8 * w));
                }
            }
            for j in 0..b {
                let row = v.add(j * row_bytes);
                let mut vals = [_mm256_setzero_ps(); W];
                if fmt::<D>() == CacheDtype::Q8_0 {
                    // 8W <= 16 columns never straddle a block (c is a multiple of 8W).
                    let blk = row.add(c / QK * Q8_0_BYTES);
                    let d = _mm256_set1_ps(scale_at(blk));
                    for w in 0..W {
                        vals[w] = _mm256_mul_ps(load8::<D>(blk.add(2 + c % QK + 8 * w)), d);
                    }
                } else {
                    for w in 0..W {
                        vals[w] = load8::<D>(row.add(fmt::<D>().bytes(c + 8 * w)));
                    }
                }
                for k in 0..4 {
                    let pk = _mm256_broadcast_ss(&*p[k].add(j));
                    for w in 0..W {
                        acc[k][w] = _mm256_fmadd_ps(pk, vals[w], acc[k][w]);
                    }
                }
            }
            for k in 0..4 {
                for w in 0..W {
                    _mm256_storeu_ps(o[k].add(c + 8 * w), acc[k][w]);
                }
            }
        }
    }

    /// [`super::attend_with`] for AVX2, one compiled instance per format.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend(
        dtype: CacheDtype,
        rows: KvRows<'_>,
        key: Seg,
        value: Seg,
        q: &Queries<'_>,
        scale: f32,
        states: &mut [f32],
    ) {
        // SAFETY: same target features; the caller checked the shapes.
        unsafe {
            match dtype {
                CacheDtype::F32 => attend_in::<0>(rows, key, value, q, scale, states),
                CacheDtype::BF16 => attend_in::<1>(rows, key, value, q, scale, states),
                CacheDtype::Q8_0 => attend_in::<2>(rows, key, value, q, scale, states),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn attend_in<const D: u8>(
        rows: KvRows<'_>,
        key: Seg,
        value: Seg,
        q: &Queries<'_>,
        scale: f32,
        states: &mut [f32],
    ) {
        let dtype = fmt::<D>();
        let (kw, dv) = (key.width, value.width);
        let sl = state_len(dv);
        let (kb, vb) = (dtype.bytes(key.col), dtype.bytes(value.col));
        let (base, rb) = (rows.data.as_ptr(), rows.row_bytes);
        let st0 = states.as_mut_ptr();
        let mut s = [[0f32; TILE]; QB];
        let n_rows = rows.len();
        // Q8_0 value rows are decoded to f32 once per tile for all queries (their scale and
        // conversion would otherwise be redone for every group of 4 queries).
        let mut vbuf = V_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if dtype == CacheDtype::Q8_0 && vbuf.len() < TILE * dv {
            vbuf.resize(TILE * dv, 0.0);
        }
        for t0 in (0..n_rows).step_by(TILE) {
            let b = TILE.min(n_rows - t0);
            let pos = rows.first + t0;
            if q.limit(q.n - 1) <= pos {
                break; // limits grow with the query index: nobody sees this tile or later ones
            }
            let mut decoded = false;
            let mut q0 = 0;
            while q0 < q.n {
                let qb = QB.min(q.n - q0);
                let mut act = [0usize; QB];
                let mut vis = [0usize; QB];
                let mut na = 0;
                for i in q0..q0 + qb {
                    let v = q.limit(i).saturating_sub(pos).min(b);
                    if v > 0 {
                        (act[na], vis[na]) = (i, v);
                        na += 1;
                    }
                }
                q0 += qb;
                if na == 0 {
                    continue;
                }
                // SAFETY (whole block): rows t0..t0 + b exist and hold both segments (checked by
                // attend_with); query offsets were checked for the last query and grow with i;
                // state pointers stay inside `states`.
                unsafe {
                    // The active queries' values (or blocks), found once per tile.
                    let mut qv = [std::ptr::null::<f32>(); QB];
                    let mut qb = [std::ptr::null::<QueryBlock>(); QB];
                    for a in 0..na {
                        if dtype == CacheDtype::Q8_0 {
                            qb[a] = q.blocks.as_ptr().add(q.block_at(act[a]));
                        } else {
                            qv[a] = q.values.as_ptr().add(q.value_at(act[a]));
                        }
                    }
                    // Scores: 2 rows x 4 queries per register tile.
                    for j in (0..b).step_by(2) {
                        let j1 = (j + 1).min(b - 1);
                        let k = [j, j1].map(|r| base.add((t0 + r) * rb + kb));
                        for a in (0..na).step_by(4) {
                            let idx = [0, 1, 2, 3].map(|x| (a + x).min(na - 1));
                            let d = if dtype == CacheDtype::Q8_0 {
                                dots_q8(k, idx.map(|x| qb[x]), kw / QK)
                            } else {
                                dots_float::<D>(k, idx.map(|x| qv[x]), kw)
                            };
                            for x in 0..4.min(na - a) {
                                s[a + x][j] = d[x] * scale;
                                if j1 > j {
                                    s[a + x][j1] = d[4 + x] * scale;
                                }
                            }
                        }
                    }
                    for a in 0..na {
                        update(&mut s[a], vis[a], st0.add(act[a] * sl), dv);
                    }
                    // Weighted sum: 4 queries x 16 columns per register tile.
                    let v = base.add(t0 * rb + vb);
                    if dtype == CacheDtype::Q8_0 && !decoded {
                        for j in 0..b {
                            let row = std::slice::from_raw_parts(v.add(j * rb), dtype.bytes(dv));
                            super::super::x86::q8_0_to_f32(row, &mut vbuf[j * dv..][..dv]);
                        }
                        decoded = true;
                    }
                    for a in (0..na).step_by(4) {
                        let ix = [0, 1, 2, 3].map(|x| (a + x).min(na - 1));
                        let p = ix.map(|x| s[x].as_ptr());
                        let o = ix.map(|x| st0.add(act[x] * sl + 2));
                        let mut c = 0;
                        if dtype == CacheDtype::Q8_0 {
                            let vf = vbuf.as_ptr().cast::<u8>();
                            while c + 16 <= dv {
                                accumulate::<0, 2>(vf, 4 * dv, b, c, p, o);
                                c += 16;
                            }
                        }
                        while c + 16 <= dv {
                            accumulate::<D, 2>(v, rb, b, c, p, o);
                            c += 16;
                        }
                        if c + 8 <= dv {
                            accumulate::<D, 1>(v, rb, b, c, p, o);
                            c += 8;
                        }
                        for c in c..dv {
                            // Float formats only: Q8_0 widths are multiples of 32.
                            for x in 0..4.min(na - a) {
                                let mut acc = *o[x].add(c);
                                for j in 0..b {
                                    acc += *p[x].add(j) * scalar_at::<D>(v.add(j * rb), c);
                                }
                                *o[x].add(c) = acc;
                            }
                        }
                    }
                }
            }
        }
        V_BUF.with(|b| *b.borrow_mut() = vbuf);
    }

    thread_local! {
        /// A tile's Q8_0 value rows decoded to f32 (grown, never shrunk).
        static V_BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// [`super::weighted_sum`]: 4 rows of `p` x 16 columns per register tile.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(
        p: &[f32],
        v: &[f32],
        n: usize,
        m: usize,
        w: usize,
        out: &mut [f32],
    ) {
        let vp = v.as_ptr().cast::<u8>();
        let op = out.as_mut_ptr();
        for i in (0..n).step_by(4) {
            let ix = [0, 1, 2, 3].map(|k| (i + k).min(n - 1));
            // SAFETY: rows ix of p (m floats) and out (w floats) exist, v has m rows of w; a
            // repeated row computes and stores identical values.
            unsafe {
                let pr = ix.map(|r| p.as_ptr().add(r * m));
                let o = ix.map(|r| op.add(r * w));
                let mut c = 0;
                while c + 16 <= w {
                    accumulate::<0, 2>(vp, 4 * w, m, c, pr, o);
                    c += 16;
                }
                if c + 8 <= w {
                    accumulate::<0, 1>(vp, 4 * w, m, c, pr, o);
                    c += 8;
                }
                for c in c..w {
                    for k in 0..4.min(n - i) {
                        let mut acc = *o[k].add(c);
                        for r in 0..m {
                            acc += *pr[k].add(r) * *v.as_ptr().add(r * w + c);
                        }
                        *o[k].add(c) = acc;
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn exp8_for_test(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: tests run this only where AVX2 + FMA + F16C were detected.
        unsafe { exp8_store(x, &mut out) };
        out
    }

    #[cfg(test)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn exp8_store(x: [f32; 8], out: &mut [f32; 8]) {
        // SAFETY: 8 floats in and out.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn f32(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.f32() * scale).collect()
        }
    }

    #[test]
    fn exp_matches_libm_and_simd_matches_scalar() {
        let mut x: Vec<f32> = (-2000..=200).map(|i| i as f32 * 0.0443).collect();
        x.extend([
            0.0,
            -0.0,
            -87.3,
            -87.4,
            -1e30,
            f32::NEG_INFINITY,
            1e-8,
            -1e-8,
        ]);
        for &v in &x {
            let (got, want) = (exp_scalar(v), v.exp());
            let tol = if want < 1.2e-38 { 1.2e-38 } else { 2e-7 * want };
            assert!((got - want).abs() <= tol, "exp({v}) = {got}, libm {want}");
        }
        assert!(exp_scalar(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if Isa::available().contains(&Isa::Avx2) {
            let mut x = x.clone();
            x.push(f32::NAN);
            while !x.len().is_multiple_of(8) {
                x.push(-1.0);
            }
            for c in x.chunks_exact(8) {
                let got = avx2::exp8_for_test(c.try_into().unwrap());
                for (g, &v) in got.iter().zip(c) {
                    let want = exp_scalar(v);
                    assert!(
                        (g - want).abs() <= 2e-7 * want || (g.is_nan() && want.is_nan()),
                        "exp8({v}) = {g}, scalar {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn encode_decode_round_trips_within_the_format() {
        let mut rng = Rng(5);
        let x = rng.vec(96, 3.0);
        for dtype in CacheDtype::ALL {
            let mut bytes = vec![0u8; dtype.bytes(x.len())];
            encode(dtype, &x, &mut bytes);
            for isa in Isa::available() {
                let mut back = vec![0f32; x.len()];
                decode_with(isa, dtype, &bytes, &mut back);
                for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                    let tol = match dtype {
                        CacheDtype::F32 => 0.0,
                        CacheDtype::BF16 => a.abs() / 256.0,
                        CacheDtype::Q8_0 => 3.0 / 127.0 * 0.5 + 1e-3,
                    };
                    assert!(
                        (a - b).abs() <= tol,
                        "{dtype} {isa:?} value {i}: {a} -> {b}"
                    );
                }
            }
        }
        // Q8_0 is ggml's: the block's largest magnitude maps to +-127 and the scale is f16.
        let mut x = vec![0f32; 32];
        x[3] = -2.54;
        x[7] = 1.27;
        let mut b = vec![0u8; Q8_0_BYTES];
        encode(CacheDtype::Q8_0, &x, &mut b);
        assert_eq!(b[2 + 3] as i8, -127);
        assert_eq!(
            b[2 + 7] as i8,
            64,
            "1.27 * 127 / 2.54 = 63.5 rounds to even"
        );
        assert_eq!(
            f16::from_le_bytes([b[0], b[1]]),
            f16::from_f32(2.54 / 127.0)
        );
    }

    /// A random cache block of `rows` rows, in every format, with queries, for one shape.
    struct Case {
        dtype: CacheDtype,
        data: Vec<u8>,
        row_bytes: usize,
        decoded: Vec<f32>,
        width: usize,
    }

    fn case(rng: &mut Rng, dtype: CacheDtype, rows: usize, width: usize) -> Case {
        let x = rng.vec(rows * width, 2.0);
        let row_bytes = dtype.bytes(width);
        let mut data = vec![0u8; rows * row_bytes];
        for (r, o) in x.chunks_exact(width).zip(data.chunks_exact_mut(row_bytes)) {
            encode(dtype, r, o);
        }
        let mut decoded = vec![0f32; rows * width];
        for (o, r) in decoded
            .chunks_exact_mut(width)
            .zip(data.chunks_exact(row_bytes))
        {
            decode_with(Isa::Scalar, dtype, r, o);
        }
        Case {
            dtype,
            data,
            row_bytes,
            decoded,
            width,
        }
    }

    /// Attention computed the textbook way in f64 on decoded rows (and, for Q8_0, the
    /// quantised queries the kernels multiply with).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        c: &Case,
        first: usize,
        key: Seg,
        value: Seg,
        q: &Queries<'_>,
        scale: f32,
        out: &mut [f64],
    ) {
        let rows = c.decoded.len() / c.width;
        for i in 0..q.n {
            let qv: Vec<f64> = if c.dtype == CacheDtype::Q8_0 {
                q.blocks[q.block_at(i)..][..key.width / QK]
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&v| b.d as f64 * v as f64))
                    .collect()
            } else {
                q.values[q.value_at(i)..][..key.width]
                    .iter()
                    .map(|&v| v as f64)
                    .collect()
            };
            let vis = q.limit(i).saturating_sub(first).min(rows);
            let scores: Vec<f64> = (0..vis)
                .map(|j| {
                    let k = &c.decoded[j * c.width + key.col..][..key.width];
                    scale as f64 * k.iter().zip(&qv).map(|(a, b)| *a as f64 * b).sum::<f64>()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = w.iter().sum();
            let o = &mut out[i * value.width..][..value.width];
            o.fill(0.0);
            for (j, wj) in w.iter().enumerate() {
                let v = &c.decoded[j * c.width + value.col..][..value.width];
                for (a, b) in o.iter_mut().zip(v) {
                    *a += wj / sum * *b as f64;
                }
            }
        }
    }

    /// Every ISA's attention against the f64 textbook, on awkward shapes, causal masks that cut
    /// tiles, row runs split in two and merged, and more queries than a batch.
    #[test]
    fn attention_matches_the_textbook_for_every_format_and_isa() {
        let mut rng = Rng(9);
        // (rows, key segment, value segment, row width, queries per token, tokens)
        let shapes = [
            (1, (0, 64), (0, 32), 64, 3, 1),
            (45, (0, 96), (0, 64), 96, 16, 1),
            (77, (32, 32), (96, 32), 128, 5, 7),
            (33, (0, 288), (0, 256), 288, 18, 1),
            (130, (64, 64), (128, 64), 192, 4, 3),
            // Float formats only: widths that are not multiples of 8 (tails).
            (20, (0, 40), (28, 12), 40, 4, 2),
            (9, (3, 13), (0, 3), 16, 2, 3),
        ];
        for (rows, (kc, kw), (vc, vw), width, per, tokens) in shapes {
            for dtype in CacheDtype::ALL {
                if ![kc, kw, vc, vw, width]
                    .iter()
                    .all(|v: &usize| v.is_multiple_of(dtype.align()))
                {
                    continue;
                }
                let c = case(&mut rng, dtype, rows, width);
                let (key, value) = (Seg { col: kc, width: kw }, Seg { col: vc, width: vw });
                // Queries with a gap between tokens (outer > per * inner), scaled so softmax
                // is neither flat nor one-hot.
                let (inner, outer) = (kw, per * kw + 5);
                let values = rng.vec(tokens * outer, 1.0);
                let n = tokens * per;
                let mut blocks = vec![QueryBlock::default(); n * kw / QK];
                for i in (0..n).filter(|_| kw.is_multiple_of(QK)) {
                    let at = (i / per) * outer + (i % per) * inner;
                    quantize_queries(&values[at..at + kw], &mut blocks[i * kw / QK..][..kw / QK]);
                }
                let first = 11;
                // Causal: the last token sees every row, earlier tokens fewer (when tokens > 1).
                let visible = first + rows + 1 - tokens;
                let q = Queries {
                    n,
                    per,
                    values: &values,
                    outer,
                    inner,
                    blocks: &blocks,
                    block_outer: per * kw / QK,
                    block_inner: kw / QK,
                    visible,
                };
                let scale = 0.6 / (kw as f32).sqrt() * 2.0;
                let mut want = vec![0f64; n * vw];
                reference(&c, first, key, value, &q, scale, &mut want);
                for isa in Isa::available() {
                    let mut st = vec![0f32; n * state_len(vw)];
                    init_states(&mut st, vw);
                    // Split the rows in two runs, attended separately and merged.
                    let cut = rows / 3;
                    let mut st2 = st.clone();
                    let run = |lo: usize, hi: usize| KvRows {
                        data: &c.data[lo * c.row_bytes..hi * c.row_bytes],
                        row_bytes: c.row_bytes,
                        first: first + lo,
                    };
                    attend_with(isa, dtype, run(0, cut), key, value, &q, scale, &mut st);
                    attend_with(isa, dtype, run(cut, rows), key, value, &q, scale, &mut st2);
                    merge_states(&mut st, &st2, vw);
                    let mut got = vec![0f32; n * vw];
                    finish_states(&st, vw, &mut got, vw);
                    // One pass over all rows gives the same.
                    let mut one = vec![0f32; n * state_len(vw)];
                    init_states(&mut one, vw);
                    attend_with(isa, dtype, run(0, rows), key, value, &q, scale, &mut one);
                    let mut got1 = vec![0f32; n * vw];
                    finish_states(&one, vw, &mut got1, vw);
                    for (i, ((g, g1), w)) in got.iter().zip(&got1).zip(&want).enumerate() {
                        assert!(
                            (*g as f64 - w).abs() < 2e-5 && (*g1 as f64 - w).abs() < 2e-5,
                            "{dtype} {isa:?} rows {rows} kw {kw} per {per}: output {i}: \
                             split {g} one pass {g1} want {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn round_even_is_round_ties_even_on_quantisation_ranges() {
        let mut x: Vec<f32> = (-70000..=70000).map(|i| i as f32 * 0.5).collect();
        x.extend((0..20000).map(|i| (i as f32 * 0.37).sin() * 40000.0));
        x.extend([
            0.0,
            -0.0,
            126.5,
            127.5,
            -127.5,
            0.49999997,
            -0.49999997,
            1.5,
            2.5,
        ]);
        for v in x {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn weighted_sum_matches_scalar_on_awkward_shapes() {
        let mut rng = Rng(11);
        for (n, m, w) in [(1, 1, 1), (5, 7, 24), (4, 256, 64), (9, 33, 19), (3, 2, 16)] {
            let (p, v) = (rng.vec(n * m, 1.0), rng.vec(m * w, 1.0));
            let init = rng.vec(n * w, 1.0);
            let mut want = init.clone();
            weighted_sum_with(Isa::Scalar, &p, &v, n, m, w, &mut want);
            for isa in Isa::available() {
                let mut got = init.clone();
                weighted_sum_with(isa, &p, &v, n, m, w, &mut got);
                for (g, x) in got.iter().zip(&want) {
                    assert!(
                        (g - x).abs() <= 1e-5 * m as f32,
                        "{isa:?} {n}x{m}x{w}: {g} vs {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn parses_cache_dtypes_and_names_the_culprit() {
        assert_eq!("BF16".parse::<CacheDtype>().unwrap(), CacheDtype::BF16);
        assert_eq!("q8_0".parse::<CacheDtype>().unwrap(), CacheDtype::Q8_0);
        assert_eq!("f32".parse::<CacheDtype>().unwrap(), CacheDtype::F32);
        let e = "f16".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(e.contains("cache_dtype") && e.contains("f16"), "{e}");
        for d in CacheDtype::ALL {
            assert_eq!(CacheDtype::from_id(d.id()), Some(d));
        }
        assert_eq!(CacheDtype::from_id(9), None);
    }
}
