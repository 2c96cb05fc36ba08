//! Compute over [`Weight`]s: matrix products, dot products and the thread pool.
//!
//! The only place that matches on a weight's format to compute, and the only place with
//! `target_feature` code. Float formats decode a weight row a chunk at a time into a stack
//! buffer reused for every token; the 32-weight block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! IQ4_NL) quantise the activations to 8-bit blocks once per call and use integer dot products;
//! the 256-weight super-block formats (K-quants, IQ4_XS) quantise them to Q8_K ([`kquant`]).
//! Row-major matrices run one row x up to 4 tokens per pass; the x8 forms (8 rows interleaved
//! at load: Q8_0x8, Q4_0x8, Q5_0x8, Q4_Kx8, Q6_Kx8) run 8 rows x up to 4 tokens per tile, for
//! decode and prefill alike. Every SIMD path has a scalar twin ([`Isa::Scalar`]) it is tested
//! against. Knows no layers.

pub mod attention;
mod isa;
pub mod kquant;
mod pool;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_kquant;

pub use isa::Isa;
pub use pool::{Pool, MAX_THREADS};

use std::cell::RefCell;
use std::ops::Range;

use crate::quant::blocks::{self, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, X8};
use crate::quant::kblocks::{self, ActBlockK};
use crate::quant::{ActBlock, Activation, Format, Weight, QK, QK_K};

/// Columns decoded per step; a multiple of FP8's 128-wide blocks and of the 32-weight blocks.
const CHUNK: usize = 128;

thread_local! {
    /// Quantised activations of the current call (grown, never shrunk: no per-token allocation).
    static ACT: RefCell<Vec<ActBlock>> = const { RefCell::new(Vec::new()) };
    /// The same for the super-block formats (Q8_K).
    static ACT_K: RefCell<Vec<ActBlockK>> = const { RefCell::new(Vec::new()) };
}

/// One call's activations in the form the weight format multiplies: none (float formats read
/// `x` itself), 8-bit blocks of 32, or Q8_K blocks of 256.
#[derive(Clone, Copy)]
enum Acts<'a> {
    F32,
    Q8(&'a [ActBlock]),
    K(&'a [ActBlockK]),
}

/// `y[t, r] = sum_c x[t, c] * W[rows.start + r, c]` for `t < n`, with the detected [`Isa`].
///
/// `x` is `[n, w.cols()]`, `y` is `[n, rows.len()]`, both row-major.
pub fn matmul(pool: &Pool, w: &Weight, rows: Range<usize>, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_with(Isa::detect(), pool, w, rows, x, n, y)
}

/// [`matmul`] with an explicit instruction set (tests and benchmarks).
pub fn matmul_with(
    isa: Isa,
    pool: &Pool,
    w: &Weight,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    let m = rows.len();
    assert!(
        rows.end <= w.rows() && x.len() == n * w.cols() && y.len() == n * m,
        "matmul: shape mismatch"
    );
    let out = SyncPtr(y.as_mut_ptr());
    // Tasks split whole row groups (interleaved formats), clipped to `rows`.
    let g = w.format().row_group();
    let (first, last) = (rows.start / g, rows.end.div_ceil(g));
    with_activations(w, x, n, |xq| {
        pool.for_each_range(last - first, g * w.cols() * n, |r| {
            let lo = ((first + r.start) * g).max(rows.start) - rows.start;
            let hi = ((first + r.end) * g).min(rows.end) - rows.start;
            // SAFETY: tasks get disjoint index ranges, so they write disjoint columns of y.
            unsafe { matmul_rows(isa, w, rows.start, lo..hi, x, xq, n, out, m) }
        })
    });
}

/// `ya = x A^T` and `yb = x B^T` for two matrices of the same width in one parallel dispatch
/// (gate/up of a SwiGLU, MLA's two down-projections), so workers wake once and block formats
/// quantise `x` once.
pub fn matmul_pair(
    pool: &Pool,
    a: &Weight,
    b: &Weight,
    x: &[f32],
    n: usize,
    ya: &mut [f32],
    yb: &mut [f32],
) {
    let same_format = std::mem::discriminant(a.format()) == std::mem::discriminant(b.format());
    if !same_format || a.cols() != b.cols() {
        matmul(pool, a, 0..a.rows(), x, n, ya);
        matmul(pool, b, 0..b.rows(), x, n, yb);
        return;
    }
    let (ra, rb) = (a.rows(), b.rows());
    assert!(
        x.len() == n * a.cols() && ya.len() == n * ra && yb.len() == n * rb,
        "matmul_pair: shape mismatch"
    );
    let isa = Isa::detect();
    let (pa, pb) = (SyncPtr(ya.as_mut_ptr()), SyncPtr(yb.as_mut_ptr()));
    // Same format, so the same row group; interleaved matrices have whole groups.
    let g = a.format().row_group();
    let (ga, gb) = (ra.div_ceil(g), rb.div_ceil(g));
    with_activations(a, x, n, |xq| {
        pool.for_each_range(ga + gb, g * a.cols() * n, |r| {
            let (a_part, b_part) = (
                (r.start.min(ga) * g).min(ra)..(r.end.min(ga) * g).min(ra),
                ((r.start.max(ga) - ga) * g).min(rb)..((r.end.max(ga) - ga) * g).min(rb),
            );
            // SAFETY: disjoint ranges of the concatenated rows [A; B] write disjoint columns.
            unsafe {
                matmul_rows(isa, a, 0, a_part, x, xq, n, pa, ra);
                matmul_rows(isa, b, 0, b_part, x, xq, n, pb, rb);
            }
        })
    });
}

/// Runs `f` with `x` quantised as `w`'s format multiplies it (nothing for float formats), in a
/// thread-local buffer that only grows.
fn with_activations<R>(w: &Weight, x: &[f32], n: usize, f: impl FnOnce(Acts<'_>) -> R) -> R {
    match w.format().info().activation {
        Activation::F32 => f(Acts::F32),
        Activation::Q8Blocks => {
            let nb = w.cols() / QK;
            ACT.with(|act| {
                let mut act = act.borrow_mut();
                if act.len() < n * nb {
                    act.resize(n * nb, ActBlock::default());
                }
                blocks::quantize_act(x, &mut act[..n * nb]);
                f(Acts::Q8(&act[..n * nb]))
            })
        }
        Activation::Q8K => {
            let nb = w.cols() / QK_K;
            ACT_K.with(|act| {
                let mut act = act.borrow_mut();
                if act.len() < n * nb {
                    act.resize(n * nb, ActBlockK::default());
                }
                kblocks::quantize_act_k(x, &mut act[..n * nb]);
                f(Acts::K(&act[..n * nb]))
            })
        }
    }
}

/// Rows `row0 + i` for `i` in `idx` of `x W^T`, written to `out[t * stride + i]`.
///
/// # Safety
/// `out` must point to `n * stride` floats, `idx.end <= stride`, and no other thread may
/// access the written elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_rows(
    isa: Isa,
    w: &Weight,
    row0: usize,
    idx: Range<usize>,
    x: &[f32],
    xq: Acts<'_>,
    n: usize,
    out: SyncPtr,
    stride: usize,
) {
    let cols = w.cols();
    let xq = match xq {
        Acts::F32 => &[][..],
        Acts::Q8(xq) => xq,
        Acts::K(xk) if w.format().row_group() == X8 => {
            // SAFETY: forwarded from the caller.
            return unsafe { matmul_groups_kx8(isa, w, row0, idx, xk, n, out, stride) };
        }
        // SAFETY: forwarded from the caller.
        Acts::K(xk) => return unsafe { matmul_rows_k(isa, w, row0, idx, xk, n, out, stride) },
    };
    if w.format().row_group() == X8 {
        // SAFETY: forwarded from the caller.
        return unsafe { matmul_groups_x8(isa, w, row0, idx, xq, n, out, stride) };
    }
    if w.format().is_block() {
        let nb = cols / QK;
        let mut i = idx.start;
        // Prefill: 4 rows x 4 tokens per tile where the ISA has one.
        if n >= 4 {
            while i + 4 <= idx.end {
                let rows = [0, 1, 2, 3].map(|r| w.row_bytes(row0 + i + r));
                let mut t = 0;
                while t + 4 <= n {
                    let xs = [0, 1, 2, 3].map(|k| &xq[(t + k) * nb..(t + k + 1) * nb]);
                    let Some(tile) = tile4x4_q_with(isa, w.format(), rows, xs) else {
                        break;
                    };
                    for (r, row) in tile.iter().enumerate() {
                        for (k, v) in row.iter().enumerate() {
                            // SAFETY: the caller owns these elements.
                            unsafe { *out.at((t + k) * stride + i + r) = *v };
                        }
                    }
                    t += 4;
                }
                if t == 0 {
                    break; // no tile kernel here: the row-by-row loop below does everything
                }
                for (r, wrow) in rows.iter().enumerate() {
                    for t in t..n {
                        let d = dot_q_with(isa, w.format(), wrow, &xq[t * nb..(t + 1) * nb]);
                        // SAFETY: the caller owns these elements.
                        unsafe { *out.at(t * stride + i + r) = d };
                    }
                }
                i += 4;
            }
        }
        for i in i..idx.end {
            let wrow = w.row_bytes(row0 + i);
            let mut t = 0;
            // Four tokens per pass over the row: each weight block is loaded once for all four.
            while t + 4 <= n {
                let xs = [0, 1, 2, 3].map(|k| &xq[(t + k) * nb..(t + k + 1) * nb]);
                let d = dot4_q_with(isa, w.format(), wrow, xs);
                for (k, v) in d.into_iter().enumerate() {
                    // SAFETY: the caller owns these elements.
                    unsafe { *out.at((t + k) * stride + i) = v };
                }
                t += 4;
            }
            for t in t..n {
                let d = dot_q_with(isa, w.format(), wrow, &xq[t * nb..(t + 1) * nb]);
                // SAFETY: the caller owns these elements.
                unsafe { *out.at(t * stride + i) = d };
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni)
        && matches!(w.format(), Format::Fp8E4M3 { .. } | Format::BF16)
    {
        // SAFETY: forwarded from the caller; the ISA has AVX2 + FMA + F16C.
        return unsafe { matmul_rows_float_x86(isa, w, row0, idx, x, n, out, stride) };
    }
    let mut buf = [0f32; CHUNK];
    for i in idx {
        for t in 0..n {
            // SAFETY: the caller owns these elements.
            unsafe { *out.at(t * stride + i) = 0.0 };
        }
        let mut c0 = 0;
        while c0 < cols {
            let len = CHUNK.min(cols - c0);
            let wrow = &mut buf[..len];
            decode_with(isa, w, row0 + i, c0, wrow);
            for t in 0..n {
                let d = dot_with(isa, wrow, &x[t * cols + c0..][..len]);
                // SAFETY: as above.
                unsafe { *out.at(t * stride + i) += d };
            }
            c0 += len;
        }
    }
}

/// From this many tokens on, FP8/BF16 rows are decoded to f32 once and multiplied in register
/// tiles; below it each row is dotted straight from its bytes (decode is bandwidth-bound).
const FLOAT_TILE_MIN_TOKENS: usize = 8;

/// Columns of [`FLOAT_TILE_ROWS`] rows decoded to f32 per step of the prefill tile (6 KiB,
/// plus 4 tokens' activations: within L1).
const FLOAT_TILE_COLS: usize = 512;

/// Rows and tokens of one prefill register tile: 3 x 4 accumulators + 3 weight vectors + one
/// activation vector are exactly AVX2's 16 registers.
const FLOAT_TILE_ROWS: usize = 3;
const FLOAT_TILE_TOKENS: usize = 4;

/// [`matmul_rows`] for FP8 and BF16 on AVX2. Few tokens (decode): each row is dotted straight
/// from its stored bytes with up to 4 tokens per pass ([`x86::dot_fp8`], [`x86::dot_bf16`]).
/// Many tokens (prefill): 3 rows x 512 columns are decoded to f32 once, then multiplied with
/// 4 tokens at a time in registers ([`x86::dot_tile_f32`]).
///
/// # Safety
/// As [`matmul_rows`], and `isa` has AVX2 + FMA + F16C.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_rows_float_x86(
    isa: Isa,
    w: &Weight,
    row0: usize,
    idx: Range<usize>,
    x: &[f32],
    n: usize,
    out: SyncPtr,
    stride: usize,
) {
    let cols = w.cols();
    let xt = |t: usize, c0: usize, len: usize| &x[t * cols + c0..][..len];
    if n < FLOAT_TILE_MIN_TOKENS {
        for i in idx {
            let mut t = 0;
            while t < n {
                let nt = (n - t).min(4);
                let mut d = [0f32; 4];
                match nt {
                    1 => d[..1].copy_from_slice(&dot_row_x86(w, row0 + i, [xt(t, 0, cols)])),
                    2 => d[..2].copy_from_slice(&dot_row_x86(
                        w,
                        row0 + i,
                        [xt(t, 0, cols), xt(t + 1, 0, cols)],
                    )),
                    3 => d[..3].copy_from_slice(&dot_row_x86(
                        w,
                        row0 + i,
                        [xt(t, 0, cols), xt(t + 1, 0, cols), xt(t + 2, 0, cols)],
                    )),
                    _ => d = dot_row_x86(w, row0 + i, [0, 1, 2, 3].map(|k| xt(t + k, 0, cols))),
                }
                for (k, v) in d[..nt].iter().enumerate() {
                    // SAFETY: the caller owns these elements.
                    unsafe { *out.at((t + k) * stride + i) = *v };
                }
                t += nt;
            }
        }
        return;
    }
    const KC: usize = FLOAT_TILE_COLS;
    const R: usize = FLOAT_TILE_ROWS;
    const T: usize = FLOAT_TILE_TOKENS;
    let mut buf = [0f32; R * KC];
    let mut i = idx.start;
    while i < idx.end {
        let nr = if idx.end - i >= R { R } else { 1 };
        for t in 0..n {
            for k in 0..nr {
                // SAFETY: the caller owns these elements.
                unsafe { *out.at(t * stride + i + k) = 0.0 };
            }
        }
        let mut c0 = 0;
        while c0 < cols {
            let len = KC.min(cols - c0);
            for k in 0..nr {
                decode_with(isa, w, row0 + i + k, c0, &mut buf[k * KC..k * KC + len]);
            }
            let wr: [&[f32]; R] = std::array::from_fn(|k| &buf[k * KC..k * KC + len]);
            let mut t = 0;
            while t < n {
                let nt = if n - t >= T { T } else { 1 };
                let xs: [&[f32]; T] = std::array::from_fn(|k| xt(t + k.min(nt - 1), c0, len));
                // SAFETY: the ISA has AVX2 + FMA + F16C (checked by the caller).
                let tile: [[f32; T]; R] = unsafe {
                    match (nr, nt) {
                        (R, T) => x86::dot_tile_f32::<R, T>(wr, xs),
                        (R, _) => x86::dot_tile_f32::<R, 1>(wr, [xs[0]]).map(|r| [r[0]; T]),
                        (_, T) => {
                            let mut tl = [[0f32; T]; R];
                            tl[0] = x86::dot_tile_f32::<1, T>([wr[0]], xs)[0];
                            tl
                        }
                        _ => {
                            let mut tl = [[0f32; T]; R];
                            tl[0][0] = x86::dot_tile_f32::<1, 1>([wr[0]], [xs[0]])[0][0];
                            tl
                        }
                    }
                };
                for (r, row) in tile.iter().enumerate().take(nr) {
                    for (k, v) in row.iter().enumerate().take(nt) {
                        // SAFETY: the caller owns these elements.
                        unsafe { *out.at((t + k) * stride + i + r) += *v };
                    }
                }
                t += nt;
            }
            c0 += len;
        }
        i += nr;
    }
}

/// Row `row` of an FP8 or BF16 matrix . `T` tokens, straight from the stored bytes. A row
/// holding an FP8 NaN code is redone by the scalar twin, so it comes out NaN as there.
#[cfg(target_arch = "x86_64")]
fn dot_row_x86<const T: usize>(w: &Weight, row: usize, x: [&[f32]; T]) -> [f32; T] {
    match w.format() {
        Format::Fp8E4M3 { scale_inv, block } => {
            let scale_cols = w.cols().div_ceil(block[1]);
            let srow = &scale_inv[(row / block[0]) * scale_cols..][..scale_cols];
            // SAFETY: only reached from matmul_rows_float_x86, whose ISA has AVX2 + FMA + F16C.
            unsafe { x86::dot_fp8::<T>(w.row_bytes(row), srow, block[1], x) }
                .unwrap_or_else(|| x.map(|xt| dot_row_scalar(w, row, xt)))
        }
        // SAFETY: as above.
        Format::BF16 => unsafe { x86::dot_bf16::<T>(w.row_bytes(row), x) },
        other => unreachable!("dot_row_x86: {other:?} is not FP8 or BF16"),
    }
}

/// Scalar twin of a float-format row dot: decode a chunk, dot it with the scalar dot, as the
/// [`Isa::Scalar`] matmul does.
pub fn dot_row_scalar(w: &Weight, row: usize, x: &[f32]) -> f32 {
    let cols = w.cols();
    let mut buf = [0f32; CHUNK];
    let mut sum = 0f32;
    let mut c0 = 0;
    while c0 < cols {
        let len = CHUNK.min(cols - c0);
        w.decode(row, c0, &mut buf[..len]);
        sum += isa::dot_scalar(&buf[..len], &x[c0..c0 + len]);
        c0 += len;
    }
    sum
}

/// [`matmul_rows`] for the super-block formats: each row is multiplied with up to 4 tokens per
/// pass, so a super-block is unpacked once per 4 tokens.
///
/// # Safety
/// As [`matmul_rows`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_rows_k(
    isa: Isa,
    w: &Weight,
    row0: usize,
    idx: Range<usize>,
    xk: &[ActBlockK],
    n: usize,
    out: SyncPtr,
    stride: usize,
) {
    let nb = w.cols() / QK_K;
    for i in idx {
        let wrow = w.row_bytes(row0 + i);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(4);
            let xs: [&[ActBlockK]; 4] = std::array::from_fn(|k| {
                let tk = t + k.min(nt - 1);
                &xk[tk * nb..(tk + 1) * nb]
            });
            let mut d = [0f32; 4];
            kquant::dot_k_with(isa, w.format(), wrow, &xs[..nt], &mut d[..nt]);
            for (k, v) in d[..nt].iter().enumerate() {
                // SAFETY: the caller owns these elements.
                unsafe { *out.at((t + k) * stride + i) = *v };
            }
            t += nt;
        }
    }
}

/// [`matmul_rows`] for the interleaved super-block formats (Q4_Kx8, Q6_Kx8): each group of 8
/// rows is multiplied with up to 4 tokens at a time.
///
/// # Safety
/// As [`matmul_rows`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_groups_kx8(
    isa: Isa,
    w: &Weight,
    row0: usize,
    idx: Range<usize>,
    xk: &[ActBlockK],
    n: usize,
    out: SyncPtr,
    stride: usize,
) {
    let nb = w.cols() / QK_K;
    let (lo, hi) = (row0 + idx.start, row0 + idx.end);
    for g in lo / X8..hi.div_ceil(X8) {
        let group = w.group_bytes(g);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(4);
            let xs: [&[ActBlockK]; 4] = std::array::from_fn(|k| {
                let tk = t + k.min(nt - 1);
                &xk[tk * nb..(tk + 1) * nb]
            });
            let tile = kquant::tile8_kx8_with(isa, w.format(), group, xs, nt);
            for (k, rows) in tile[..nt].iter().enumerate() {
                for (r, v) in rows.iter().enumerate() {
                    let row = g * X8 + r;
                    if (lo..hi).contains(&row) {
                        // SAFETY: the caller owns rows `lo..hi` of every token.
                        unsafe { *out.at((t + k) * stride + row - row0) = *v };
                    }
                }
            }
            t += nt;
        }
    }
}

/// [`matmul_rows`] for the x8 formats: each group of 8 rows is multiplied with up to 4 tokens
/// at a time.
///
/// # Safety
/// As [`matmul_rows`].
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_groups_x8(
    isa: Isa,
    w: &Weight,
    row0: usize,
    idx: Range<usize>,
    xq: &[ActBlock],
    n: usize,
    out: SyncPtr,
    stride: usize,
) {
    let nb = w.cols() / QK;
    let (lo, hi) = (row0 + idx.start, row0 + idx.end);
    for g in lo / X8..hi.div_ceil(X8) {
        let group = w.group_bytes(g);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(4);
            let xs = [0, 1, 2, 3].map(|k| {
                let tk = t + k.min(nt - 1);
                &xq[tk * nb..(tk + 1) * nb]
            });
            let tile = tile8_x8_with(isa, w.format(), group, xs, nt);
            for (k, rows) in tile[..nt].iter().enumerate() {
                for (r, v) in rows.iter().enumerate() {
                    let row = g * X8 + r;
                    if (lo..hi).contains(&row) {
                        // SAFETY: the caller owns rows `lo..hi` of every token.
                        unsafe { *out.at((t + k) * stride + row - row0) = *v };
                    }
                }
            }
            t += nt;
        }
    }
}

/// One row group of an x8 format (`w`: its blocks) . the first `nt` (1..=4) of four tokens.
pub fn tile8_x8_with(
    isa: Isa,
    format: &Format,
    w: &[u8],
    x: [&[ActBlock]; 4],
    nt: usize,
) -> [[f32; X8]; 4] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA was detected on this CPU (Isa::available).
    unsafe {
        let mut out = [[0f32; X8]; 4];
        macro_rules! run {
            ($k:ident) => {{
                match nt {
                    1 => out[..1].copy_from_slice(&x86::$k::<1>(w, [x[0]])),
                    2 => out[..2].copy_from_slice(&x86::$k::<2>(w, [x[0], x[1]])),
                    3 => out[..3].copy_from_slice(&x86::$k::<3>(w, [x[0], x[1], x[2]])),
                    _ => out = x86::$k::<4>(w, x),
                }
                return out;
            }};
        }
        match (isa, format) {
            (Isa::Avx512Vnni, Format::Q4_0x8) => run!(tile8_q4_0x8_vnni),
            (Isa::Avx2, Format::Q4_0x8) => run!(tile8_q4_0x8_avx2),
            (Isa::Avx512Vnni, Format::Q8_0x8) => run!(tile8_q8_0x8_vnni),
            (Isa::Avx2, Format::Q8_0x8) => run!(tile8_q8_0x8_avx2),
            (Isa::Avx2 | Isa::Avx512Vnni, Format::Q5_0x8) => run!(tile8_q5_0x8_avx2),
            _ => {}
        }
    }
    let _ = isa;
    tile8_x8_scalar(format, w, x, nt)
}

/// Scalar reference of [`tile8_x8_with`]: each row's ggml block is gathered, then dotted as in
/// [`dot_q_scalar`].
pub fn tile8_x8_scalar(
    format: &Format,
    w: &[u8],
    x: [&[ActBlock]; 4],
    nt: usize,
) -> [[f32; X8]; 4] {
    let (rows, xor) = format.x8_rows().expect("tile8_x8_scalar: not an x8 format");
    let bytes = rows.block_bytes();
    let mut block = [0u8; Q8_0_BYTES];
    let mut out = [[0f32; X8]; 4];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        for (r, v) in o.iter_mut().enumerate() {
            for (b, xb) in w.chunks_exact(X8 * bytes).zip(x[t]) {
                blocks::x8_row_block(b, r, rows.info().f16_fields, xor, &mut block[..bytes]);
                *v += dot_q_scalar(&rows, &block[..bytes], std::slice::from_ref(xb));
            }
        }
    }
    out
}

/// `y[t, c] = sum_r x[t, r] * W[rows.start + r, c]` for `t < n`: the product with `W[rows]^T`.
///
/// `x` is `[n, rows.len()]`, `y` is `[n, w.cols()]`.
pub fn matmul_t(pool: &Pool, w: &Weight, rows: Range<usize>, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_t_with(Isa::detect(), pool, w, rows, x, n, y)
}

/// [`matmul_t`] with an explicit instruction set.
pub fn matmul_t_with(
    isa: Isa,
    pool: &Pool,
    w: &Weight,
    rows: Range<usize>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    let (cols, m) = (w.cols(), rows.len());
    assert!(
        rows.end <= w.rows() && x.len() == n * m && y.len() == n * cols,
        "matmul_t: shape mismatch"
    );
    let out = SyncPtr(y.as_mut_ptr());
    let chunks = cols.div_ceil(CHUNK);
    pool.for_each_range(chunks, CHUNK * m * n, |cr| {
        let mut buf = [0f32; CHUNK];
        for ch in cr {
            let c0 = ch * CHUNK;
            let len = CHUNK.min(cols - c0);
            for t in 0..n {
                // SAFETY: each task owns the disjoint column chunk `c0..c0 + len` of every row of y.
                let yt = unsafe { std::slice::from_raw_parts_mut(out.at(t * cols + c0), len) };
                yt.fill(0.0);
            }
            for (i, row) in rows.clone().enumerate() {
                let wrow = &mut buf[..len];
                decode_with(isa, w, row, c0, wrow);
                for t in 0..n {
                    // SAFETY: as above.
                    let yt = unsafe { std::slice::from_raw_parts_mut(out.at(t * cols + c0), len) };
                    axpy_with(isa, x[t * m + i], wrow, yt);
                }
            }
        }
    });
}

/// `out[j] = W[row, col0 + j]`, vectorised where the ISA allows.
pub fn decode_with(isa: Isa, w: &Weight, row: usize, col0: usize, out: &mut [f32]) {
    if let Some((rows, xor)) = w.format().x8_rows() {
        let whole = col0.is_multiple_of(QK) && out.len().is_multiple_of(QK) && out.len() <= CHUNK;
        if rows.info().block == QK && whole {
            // Gather the row's ggml blocks, then decode them as such.
            let bytes = rows.block_bytes();
            let group = w.group_bytes(row / X8);
            let mut buf = [0u8; CHUNK / QK * Q8_0_BYTES];
            let nblk = out.len() / QK;
            for (k, b) in buf.chunks_exact_mut(bytes).take(nblk).enumerate() {
                let block = &group[(col0 / QK + k) * X8 * bytes..][..X8 * bytes];
                blocks::x8_row_block(block, row % X8, rows.info().f16_fields, xor, b);
            }
            return decode_blocks_with(isa, &rows, &buf[..nblk * bytes], out);
        }
        return w.decode(row, col0, out);
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        let rb = w.row_bytes(row);
        let len = out.len();
        assert!(col0 + len <= w.cols(), "decode out of bounds");
        // SAFETY: Avx2/Avx512Vnni are only ever chosen when the CPU has AVX2 + FMA + F16C.
        unsafe {
            match w.format() {
                Format::BF16 => return x86::bf16_to_f32(&rb[2 * col0..2 * (col0 + len)], out),
                Format::F16 => return x86::f16_to_f32(&rb[2 * col0..2 * (col0 + len)], out),
                Format::Fp8E4M3 { scale_inv, block } => {
                    let scale_cols = w.cols().div_ceil(block[1]);
                    let srow = &scale_inv[(row / block[0]) * scale_cols..][..scale_cols];
                    let mut j = 0;
                    while j < len {
                        let col = col0 + j;
                        let seg = (block[1] - col % block[1]).min(len - j);
                        x86::fp8_to_f32(
                            &rb[col..col + seg],
                            srow[col / block[1]],
                            &mut out[j..j + seg],
                        );
                        j += seg;
                    }
                    return;
                }
                Format::Q8_0 if col0.is_multiple_of(QK) && len.is_multiple_of(QK) => {
                    return x86::q8_0_to_f32(
                        &rb[col0 / QK * Q8_0_BYTES..(col0 + len) / QK * Q8_0_BYTES],
                        out,
                    )
                }
                Format::Q4_0 if col0.is_multiple_of(QK) && len.is_multiple_of(QK) => {
                    return x86::q4_0_to_f32(
                        &rb[col0 / QK * Q4_0_BYTES..(col0 + len) / QK * Q4_0_BYTES],
                        out,
                    )
                }
                _ => {}
            }
        }
    }
    let _ = isa;
    w.decode(row, col0, out)
}

/// Q8_0 or Q4_0 blocks -> f32 (`out.len()` = 32 x blocks).
fn decode_blocks_with(isa: Isa, format: &Format, data: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        // SAFETY: Avx2/Avx512Vnni are only ever chosen when the CPU has AVX2 + FMA + F16C.
        unsafe {
            match format {
                Format::Q8_0 => return x86::q8_0_to_f32(data, out),
                Format::Q4_0 => return x86::q4_0_to_f32(data, out),
                _ => {}
            }
        }
    }
    let _ = isa;
    let value = format
        .block_value()
        .expect("decode_blocks_with: a ggml block format");
    for (o, b) in out
        .chunks_exact_mut(QK)
        .zip(data.chunks_exact(format.block_bytes()))
    {
        for (i, v) in o.iter_mut().enumerate() {
            *v = value(b, i);
        }
    }
}

/// One quantised weight row (32-weight blocks) . quantised activations.
pub fn dot_q_with(isa: Isa, format: &Format, wrow: &[u8], x: &[ActBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA was detected on this CPU (Isa::available).
    unsafe {
        match (isa, format) {
            (Isa::Avx512Vnni, Format::Q8_0) => return x86::dot_q8_0_vnni(wrow, x),
            (Isa::Avx512Vnni, Format::Q4_0) => return x86::dot_q4_0_vnni(wrow, x),
            (Isa::Avx2, Format::Q8_0) => return x86::dot_q8_0_avx2(wrow, x),
            (Isa::Avx2, Format::Q4_0) => return x86::dot_q4_0_avx2(wrow, x),
            (Isa::Avx512Vnni, Format::Q4_1) => return x86::dot_q4_1_vnni(wrow, x),
            (Isa::Avx2, Format::Q4_1) => return x86::dot_q4_1_avx2(wrow, x),
            // AVX2 kernels only (no AVX-512 twin yet): they run on AVX-512 machines as well.
            (Isa::Avx2 | Isa::Avx512Vnni, Format::Q5_0) => return x86::dot_q5_0_avx2(wrow, [x])[0],
            (Isa::Avx2 | Isa::Avx512Vnni, Format::Q5_1) => return x86::dot_q5_1_avx2(wrow, [x])[0],
            (Isa::Avx2 | Isa::Avx512Vnni, Format::IQ4_NL) => {
                return x86::dot_iq4_nl_avx2(wrow, [x])[0]
            }
            _ => {}
        }
    }
    let _ = isa;
    dot_q_scalar(format, wrow, x)
}

/// Four quantised weight rows . four tokens' activations, where this ISA has a tile kernel.
pub fn tile4x4_q_with(
    isa: Isa,
    format: &Format,
    w: [&[u8]; 4],
    x: [&[ActBlock]; 4],
) -> Option<[[f32; 4]; 4]> {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA was detected on this CPU (Isa::available).
    unsafe {
        match (isa, format) {
            (Isa::Avx512Vnni, Format::Q8_0) => return Some(x86::tile4x4_q8_0_vnni(w, x)),
            (Isa::Avx512Vnni, Format::Q4_0) => return Some(x86::tile4x4_q4_0_vnni(w, x)),
            _ => {}
        }
    }
    let _ = (isa, format, w, x);
    None
}

/// One quantised weight row . four tokens' activations.
pub fn dot4_q_with(isa: Isa, format: &Format, wrow: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA was detected on this CPU (Isa::available).
    unsafe {
        match (isa, format) {
            (Isa::Avx512Vnni, Format::Q8_0) => return x86::dot4_q8_0_vnni(wrow, x),
            (Isa::Avx512Vnni, Format::Q4_0) => return x86::dot4_q4_0_vnni(wrow, x),
            (Isa::Avx2, Format::Q8_0) => return x86::dot4_q8_0_avx2(wrow, x),
            (Isa::Avx2, Format::Q4_0) => return x86::dot4_q4_0_avx2(wrow, x),
            (Isa::Avx512Vnni, Format::Q4_1) => return x86::dot4_q4_1_vnni(wrow, x),
            (Isa::Avx2, Format::Q4_1) => return x86::dot4_q4_1_avx2(wrow, x),
            (Isa::Avx2 | Isa::Avx512Vnni, Format::Q5_0) => return x86::dot_q5_0_avx2(wrow, x),
            (Isa::Avx2 | Isa::Avx512Vnni, Format::Q5_1) => return x86::dot_q5_1_avx2(wrow, x),
            (Isa::Avx2 | Isa::Avx512Vnni, Format::IQ4_NL) => return x86::dot_iq4_nl_avx2(wrow, x),
            _ => {}
        }
    }
    x.map(|xk| dot_q_with(isa, format, wrow, xk))
}

/// Scalar reference of the integer dot product: exact i32 sums per block, then scaled.
pub fn dot_q_scalar(format: &Format, wrow: &[u8], x: &[ActBlock]) -> f32 {
    let mut sum = 0f32;
    match format {
        Format::Q8_0 => {
            for (b, xb) in wrow.chunks_exact(Q8_0_BYTES).zip(x) {
                let s: i32 = b[2..]
                    .iter()
                    .zip(&xb.qs)
                    .map(|(&w, &q)| (w as i8) as i32 * q as i32)
                    .sum();
                sum += blocks::block_scale(b) * xb.d * s as f32;
            }
        }
        Format::Q4_0 => {
            for (b, xb) in wrow.chunks_exact(Q4_0_BYTES).zip(x) {
                let mut s = 0i32;
                for j in 0..QK / 2 {
                    s += ((b[2 + j] & 0xF) as i32 - 8) * xb.qs[j] as i32;
                    s += ((b[2 + j] >> 4) as i32 - 8) * xb.qs[j + QK / 2] as i32;
                }
                sum += blocks::block_scale(b) * xb.d * s as f32;
            }
        }
        Format::Q4_1 => {
            for (b, xb) in wrow.chunks_exact(Q4_1_BYTES).zip(x) {
                let mut s = 0i32;
                for j in 0..QK / 2 {
                    s += (b[4 + j] & 0xF) as i32 * xb.qs[j] as i32;
                    s += (b[4 + j] >> 4) as i32 * xb.qs[j + QK / 2] as i32;
                }
                sum += blocks::block_scale(b) * xb.d * s as f32 + blocks::block_min(b) * xb.s;
            }
        }
        Format::Q5_0 | Format::Q5_1 | Format::IQ4_NL => {
            let ty = format.info().ggml.expect("a ggml format");
            for (b, xb) in wrow.chunks_exact(format.block_bytes()).zip(x) {
                let s: i32 = (0..QK)
                    .map(|i| blocks::level(ty, b, i) * xb.qs[i] as i32)
                    .sum();
                sum += blocks::block_scale(b) * xb.d * s as f32;
                if matches!(format, Format::Q5_1) {
                    sum += blocks::block_min(b) * xb.s;
                }
            }
        }
        other => panic!("dot_q_scalar: {other:?} is not an integer block format"),
    }
    sum
}

/// Dot product with the detected [`Isa`].
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with(Isa::detect(), a, b)
}

/// Dot product with an explicit instruction set.
#[inline]
pub fn dot_with(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match isa {
        Isa::Scalar => isa::dot_scalar(a, b),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2/Avx512Vnni are only chosen when the CPU has them.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::dot(a, b) },
        _ => isa::dot_portable(a, b),
    }
}

/// `y += alpha * x` with the detected [`Isa`].
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_with(Isa::detect(), alpha, x, y)
}

/// `y += alpha * x` with an explicit instruction set.
#[inline]
pub fn axpy_with(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    match isa {
        Isa::Scalar => {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi += alpha * xi;
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in dot_with.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::axpy(alpha, x, y) },
        _ => isa::axpy_portable(alpha, x, y),
    }
}

/// A raw output pointer that tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);

impl SyncPtr {
    /// The element pointer at offset `i` (a method, so closures capture the whole `SyncPtr`).
    #[inline]
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers stay within the slice the pointer was taken from.
        unsafe { self.0.add(i) }
    }
}

// SAFETY: only used by tasks that write disjoint elements, joined before the borrow ends.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

#[cfg(test)]
mod tests;
