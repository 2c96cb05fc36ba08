//! Integer dot products of the 256-weight super-block formats (Q2_K..Q6_K, IQ4_XS) with Q8_K
//! activations: the scalar reference, and the dispatch to its SIMD twins by instruction set.
//!
//! Per super-block the reference sums `scale * q * x` exactly in integers (the minimums of
//! Q2_K/Q4_K/Q5_K and the offsets of Q3_K/Q6_K through the activations' per-16 sums, as ggml
//! does) and scales the sum once in float: `d_x * (d_w * sumi - dmin_w * summ)`.

use super::Isa;
use crate::quant::blocks::{self, X8};
use crate::quant::kblocks::{self, KVALUES_IQ4NL, Q6_K_BYTES};
use crate::quant::{ActBlockK, Format};

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `sum(w[l] * x[l])` over matching elements, in exact integers.
#[inline]
fn idot(w: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    w.zip(x).map(|(w, &x)| w * x as i32).sum()
}

/// One super-block . one Q8_K block.
fn block_dot(format: &Format, b: &[u8], xb: &ActBlockK) -> f32 {
    let x = &xb.qs;
    match format {
        Format::Q2_K => {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for k in 0..16 {
                // Sub-block k: half n, bit pair j, bytes 16h..16h + 16 of the half's 32.
                let (n, j, h) = (k / 8, k % 8 / 2, k % 2);
                let q = b[16 + 32 * n + 16 * h..][..16]
                    .iter()
                    .map(|&q| ((q >> (2 * j)) & 3) as i32);
                sumi += (b[k] & 0xF) as i32 * idot(q, &x[16 * k..16 * k + 16]);
                summ += (b[k] >> 4) as i32 * xb.bsums[k] as i32;
            }
            xb.d * (f16_at(b, 80) * sumi as f32) - xb.d * (f16_at(b, 82) * summ as f32)
        }
        Format::Q3_K => {
            let scales = kblocks::q3_k_scales(&b[96..108]);
            let mut sumi = 0i32;
            for (k, &sc) in scales.iter().enumerate() {
                let (n, j, h) = (k / 8, k % 8 / 2, k % 2);
                let mask = 1u8 << (4 * n + j);
                let q = (16 * h..16 * h + 16).map(|l| {
                    let low = ((b[32 + 32 * n + l] >> (2 * j)) & 3) as i32;
                    low - if b[l] & mask != 0 { 0 } else { 4 }
                });
                sumi += sc as i32 * idot(q, &x[16 * k..16 * k + 16]);
            }
            xb.d * (f16_at(b, 108) * sumi as f32)
        }
        Format::Q4_K | Format::Q5_K => {
            let five = matches!(format, Format::Q5_K);
            let qs = if five { 48 } else { 16 };
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..8 {
                let (sc, m) = kblocks::scale_min_k4(j, &b[4..16]);
                let q = b[qs + 32 * (j / 2)..][..32]
                    .iter()
                    .enumerate()
                    .map(|(l, &q)| {
                        let high = if five { ((b[16 + l] >> j) & 1) << 4 } else { 0 };
                        (((q >> (4 * (j % 2))) & 0xF) | high) as i32
                    });
                sumi += sc as i32 * idot(q, &x[32 * j..32 * j + 32]);
                summ += m as i32 * (xb.bsums[2 * j] as i32 + xb.bsums[2 * j + 1] as i32);
            }
            xb.d * (f16_at(b, 0) * sumi as f32) - xb.d * (f16_at(b, 2) * summ as f32)
        }
        Format::Q6_K => {
            let mut sumi = 0i32;
            for s in 0..16 {
                // Sixteen weights: half n, quarter k, lanes l0..l0 + 16 of the quarter.
                let (n, k, l0) = (s / 8, s % 8 / 2, 16 * (s % 2));
                let q = (l0..l0 + 16).map(|l| {
                    let ql = b[64 * n + 32 * (k % 2) + l];
                    let low = if k < 2 { ql & 0xF } else { ql >> 4 };
                    let high = (b[128 + 32 * n + l] >> (2 * k)) & 3;
                    (low | (high << 4)) as i32 - 32
                });
                let at = 128 * n + 32 * k + l0;
                sumi += (b[192 + s] as i8) as i32 * idot(q, &x[at..at + 16]);
            }
            xb.d * (f16_at(b, 208) * sumi as f32)
        }
        Format::IQ4_XS => {
            let mut sumi = 0i32;
            for ib in 0..8 {
                let codes = &b[8 + 16 * ib..][..16];
                let q = codes
                    .iter()
                    .map(|&c| c & 0xF)
                    .chain(codes.iter().map(|&c| c >> 4))
                    .map(|c| KVALUES_IQ4NL[c as usize] as i32);
                let ls = kblocks::iq4_xs_scale(b, ib) - 32;
                sumi += ls * idot(q, &x[32 * ib..32 * ib + 32]);
            }
            xb.d * (f16_at(b, 0) * sumi as f32)
        }
        other => panic!(
            "kquant::block_dot: {} is not a super-block format",
            other.info().name
        ),
    }
}

/// Scalar reference: one row of super-blocks . one token's Q8_K activations.
pub fn dot_k_scalar(format: &Format, wrow: &[u8], x: &[ActBlockK]) -> f32 {
    wrow.chunks_exact(format.block_bytes())
        .zip(x)
        .map(|(b, xb)| block_dot(format, b, xb))
        .sum()
}

/// One row of super-blocks . each of `x`'s 1..=4 tokens, `out[t]` for token `t`, with the
/// best kernel `isa` has (the AVX2 kernels serve AVX-512 machines too).
pub fn dot_k_with(isa: Isa, format: &Format, wrow: &[u8], x: &[&[ActBlockK]], out: &mut [f32]) {
    assert!(
        (1..=4).contains(&x.len()) && out.len() == x.len(),
        "dot_k_with: 1..=4 tokens"
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        use super::x86_kquant as k;
        macro_rules! run {
            ($kernel:ident) => {{
                // SAFETY: Avx2/Avx512Vnni are only chosen when the CPU has AVX2 + FMA + F16C.
                unsafe {
                    match x.len() {
                        1 => out.copy_from_slice(&k::$kernel::<1>(wrow, [x[0]])),
                        2 => out.copy_from_slice(&k::$kernel::<2>(wrow, [x[0], x[1]])),
                        3 => out.copy_from_slice(&k::$kernel::<3>(wrow, [x[0], x[1], x[2]])),
                        _ => out.copy_from_slice(&k::$kernel::<4>(wrow, [x[0], x[1], x[2], x[3]])),
                    }
                }
                return;
            }};
        }
        match format {
            Format::Q2_K => run!(dot_q2_k_avx2),
            Format::Q3_K => run!(dot_q3_k_avx2),
            Format::Q4_K => run!(dot_q4_k_avx2),
            Format::Q5_K => run!(dot_q5_k_avx2),
            Format::Q6_K => run!(dot_q6_k_avx2),
            Format::IQ4_XS => run!(dot_iq4_xs_avx2),
            _ => {}
        }
    }
    let _ = isa;
    for (o, xt) in out.iter_mut().zip(x) {
        *o = dot_k_scalar(format, wrow, xt);
    }
}

/// One row group of an interleaved super-block format (Q4_Kx8, Q6_Kx8; `w`: its super-blocks)
/// . the first `nt` (1..=4) of four tokens: `out[t][r]` for row `r` of the group.
pub fn tile8_kx8_with(
    isa: Isa,
    format: &Format,
    w: &[u8],
    x: [&[ActBlockK]; 4],
    nt: usize,
) -> [[f32; X8]; 4] {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512Vnni) {
        use super::x86_kquant as k;
        let mut out = [[0f32; X8]; 4];
        macro_rules! run {
            ($kernel:ident) => {{
                // SAFETY: Avx2/Avx512Vnni are only chosen when the CPU has AVX2 + FMA + F16C.
                unsafe {
                    match nt {
                        1 => out[..1].copy_from_slice(&k::$kernel::<1>(w, [x[0]])),
                        2 => out[..2].copy_from_slice(&k::$kernel::<2>(w, [x[0], x[1]])),
                        3 => out[..3].copy_from_slice(&k::$kernel::<3>(w, [x[0], x[1], x[2]])),
                        _ => out = k::$kernel::<4>(w, x),
                    }
                }
                return out;
            }};
        }
        match format {
            Format::Q4_Kx8 => run!(tile8_q4_kx8_avx2),
            Format::Q6_Kx8 => run!(tile8_q6_kx8_avx2),
            _ => {}
        }
    }
    let _ = isa;
    tile8_kx8_scalar(format, w, x, nt)
}

/// Scalar reference of [`tile8_kx8_with`]: each row's ggml super-block is gathered, then
/// dotted as in [`dot_k_scalar`].
pub fn tile8_kx8_scalar(
    format: &Format,
    w: &[u8],
    x: [&[ActBlockK]; 4],
    nt: usize,
) -> [[f32; X8]; 4] {
    let (rows, xor) = format
        .x8_rows()
        .expect("tile8_kx8_scalar: not an x8 format");
    let (bytes, fields) = (rows.block_bytes(), rows.info().f16_fields);
    let mut block = [0u8; Q6_K_BYTES];
    let mut out = [[0f32; X8]; 4];
    for (t, o) in out.iter_mut().enumerate().take(nt) {
        for (r, v) in o.iter_mut().enumerate() {
            for (b, xb) in w.chunks_exact(X8 * bytes).zip(x[t]) {
                blocks::x8_row_block(b, r, fields, xor, &mut block[..bytes]);
                *v += block_dot(&rows, &block[..bytes], xb);
            }
        }
    }
    out
}
