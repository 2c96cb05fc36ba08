//! AVX2 integer dot products of ggml's 256-weight super-blocks (Q2_K..Q6_K, IQ4_XS) with Q8_K
//! activations, after ggml's `ggml_vec_dot_*_q8_K` (arch/x86/quants.c).
//!
//! Each row kernel multiplies one weight row with `N` (1..=4) tokens: a super-block's quants
//! and scales are unpacked once and reused for every token, which is what prefill gains over
//! `N` separate mat-vecs. The x8 tiles (Q4_Kx8, Q6_Kx8) do the same for 8 interleaved rows at
//! once, one row per 32-bit lane, so the scale unpacking and float work are shared by 8 rows.
//! Per super-block the integer sums are exact (the scalar twin computes the same integers);
//! only the float accumulation across super-blocks is ordered differently.
//! Everything here needs only AVX2 + FMA + F16C: no AVX-512 instruction is used, so the same
//! kernels also serve `Isa::Avx512Vnni` machines.

use std::arch::x86_64::*;

use super::x86::{hsum, sign_split};
use crate::quant::kblocks::{
    IQ4_XS_BYTES, KVALUES_IQ4NL, Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES,
};
use crate::quant::ActBlockK;

/// The f16 at `p`, converted with F16C.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`; the rest is register-only.
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            p.cast::<u16>().read_unaligned() as i32,
        )))
    }
}

#[inline(always)]
unsafe fn hsum128(v: __m128) -> f32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// Shuffles that broadcast 16-bit scale `k` of eight (both 128-bit lanes alike) to all 16 lanes:
/// ggml's `get_scale_shuffle_k4`.
static SHUF_K4: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut k = 0;
    while k < 8 {
        let mut i = 0;
        while i < 16 {
            t[k][2 * i] = 2 * k as u8;
            t[k][2 * i + 1] = 2 * k as u8 + 1;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Shuffles that give the low 128-bit lane 16-bit scale `2k` and the high lane scale `2k + 1`
/// (of eight, both lanes alike): ggml's `get_scale_shuffle_q3k`, for 32 quants whose halves of
/// 16 have their own scales.
static SHUF_Q3K: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 8 {
            t[k][2 * i] = 4 * k as u8;
            t[k][2 * i + 1] = 4 * k as u8 + 1;
            t[k][16 + 2 * i] = 4 * k as u8 + 2;
            t[k][16 + 2 * i + 1] = 4 * k as u8 + 3;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Shuffles of 16 i8 scales giving bytes `2k` x 8 then `2k + 1` x 8: ggml's
/// `get_scale_shuffle`, for Q6_K.
static SHUF_Q6K: [[u8; 16]; 8] = {
    let mut t = [[0u8; 16]; 8];
    let mut k = 0;
    while k < 8 {
        let mut i = 0;
        while i < 8 {
            t[k][i] = 2 * k as u8;
            t[k][8 + i] = 2 * k as u8 + 1;
            i += 1;
        }
        k += 1;
    }
    t
};

#[inline(always)]
unsafe fn load256<T>(table: &T) -> __m256i {
    // SAFETY: the shuffle tables are 32-byte rows.
    unsafe { _mm256_loadu_si256((table as *const T).cast()) }
}

/// The eight 6-bit scales and minimums of a Q4_K / Q5_K super-block (12 bytes at `p`) as
/// sixteen u16: scales in the low lane, minimums in the high lane (ggml's `utmp` shuffle).
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> __m256i {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    // SAFETY: the caller guarantees 12 readable bytes at `p`.
    unsafe {
        let u = p.cast::<u32>();
        let (u0, u1, u2) = (
            u.read_unaligned(),
            u.add(1).read_unaligned(),
            u.add(2).read_unaligned(),
        );
        let m_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
        let m_lo = u1 & KMASK1;
        let s_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
        let s_lo = u0 & KMASK1;
        _mm256_cvtepu8_epi16(_mm_set_epi32(
            m_hi as i32,
            m_lo as i32,
            s_hi as i32,
            s_lo as i32,
        ))
    }
}

/// The 8 per-32 sums of a Q8_K block's 16 per-16 sums, as i16.
#[inline(always)]
unsafe fn bsums32(xb: &ActBlockK) -> __m128i {
    // SAFETY: `bsums` is 16 i16 = 32 bytes.
    unsafe {
        let s = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
        _mm_hadd_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
    }
}

/// `madd(scale, maddubs(w, x))`: 32 unsigned quants times signed activations, pairs summed to
/// i16 (no saturation: |q| <= 63 and |x| <= 127), then scaled per pair and summed to 8 i32.
#[inline(always)]
unsafe fn scaled_dot(scale: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_madd_epi16(scale, _mm256_maddubs_epi16(w, x)) }
}

/// The number of super-blocks every operand covers.
fn blocks<const N: usize>(w: &[u8], bytes: usize, x: &[&[ActBlockK]; N]) -> usize {
    x.iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / bytes)
}

/// Q4_K and Q5_K (`FIVE`) rows . `N` tokens: 4 (5) bit quants times 6-bit scales per 32, and
/// the 6-bit minimums times the activations' per-32 sums.
#[inline(always)]
unsafe fn dot_q45_k<const N: usize, const FIVE: bool>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    let bytes = if FIVE { Q5_K_BYTES } else { Q4_K_BYTES };
    let qs = if FIVE { 48 } else { 16 };
    let nb = blocks(w, bytes, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point past
    // the end (they never fault).
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m16 = _mm256_set1_epi8(0x10);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut acc_m = [_mm_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * bytes);
            for line in [0, 64, 128] {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * bytes + line).cast());
            }
            let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
            let sm = k4_scales_mins(b.add(4));
            let scales = _mm256_permute2x128_si256::<0x00>(sm, sm);
            let mins = _mm256_extracti128_si256::<1>(sm);
            let hbits = if FIVE {
                _mm256_loadu_si256(b.add(16).cast())
            } else {
                _mm256_setzero_si256()
            };
            let mut hmask = _mm256_set1_epi8(1);
            let mut sumi = [_mm256_setzero_si256(); N];
            for j in 0..4 {
                let sl = _mm256_shuffle_epi8(scales, load256(&SHUF_K4[2 * j]));
                let sh = _mm256_shuffle_epi8(scales, load256(&SHUF_K4[2 * j + 1]));
                let q = _mm256_loadu_si256(b.add(qs + 32 * j).cast());
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                if FIVE {
                    // Fifth bits: bit 2j of each qh byte for the low nibbles, 2j + 1 for the high.
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(set, m16));
                    hmask = _mm256_add_epi8(hmask, hmask);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask);
                    hi = _mm256_or_si256(hi, _mm256_and_si256(set, m16));
                    hmask = _mm256_add_epi8(hmask, hmask);
                }
                for t in 0..N {
                    let q8 = (*xp[t].add(i)).qs.as_ptr().add(64 * j);
                    let pl = scaled_dot(sl, lo, _mm256_loadu_si256(q8.cast()));
                    let ph = scaled_dot(sh, hi, _mm256_loadu_si256(q8.add(32).cast()));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
                }
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[t]),
                    acc[t],
                );
                let prod = _mm_madd_epi16(mins, bsums32(xb));
                acc_m[t] = _mm_fmadd_ps(_mm_set1_ps(-dmin * xb.d), _mm_cvtepi32_ps(prod), acc_m[t]);
            }
        }
        std::array::from_fn(|t| hsum(acc[t]) + hsum128(acc_m[t]))
    }
}

/// Q4_K row . `N` tokens (`N` <= 4).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    // SAFETY: forwarded; the target features are enabled here.
    unsafe { dot_q45_k::<N, false>(w, x) }
}

/// Q5_K row . `N` tokens (`N` <= 4).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    // SAFETY: forwarded; the target features are enabled here.
    unsafe { dot_q45_k::<N, true>(w, x) }
}

/// Q6_K row . `N` tokens (`N` <= 4): unsigned 6-bit quants times i8 scales per 16, with the
/// `- 32` offset taken off once per super-block as `32 * sum(scale * bsum)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    let nb = blocks(w, Q6_K_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in dot_q45_k.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q6_K_BYTES);
            for line in [0, 64, 128, 192] {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q6_K_BYTES + line).cast());
            }
            let d = f16_at(b.add(208));
            let scales = _mm_loadu_si128(b.add(192).cast());
            let scales16 = _mm256_cvtepi8_epi16(scales);
            let mut sumi = [_mm256_setzero_si256(); N];
            for t in 0..N {
                let xb = &*xp[t].add(i);
                let bs = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
                sumi[t] = _mm256_sub_epi32(
                    _mm256_setzero_si256(),
                    _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, scales16)),
                );
            }
            for n in 0..2 {
                let l1 = _mm256_loadu_si256(b.add(64 * n).cast());
                let l2 = _mm256_loadu_si256(b.add(64 * n + 32).cast());
                let h = _mm256_loadu_si256(b.add(128 + 32 * n).cast());
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(l1, m15),
                        _mm256_slli_epi16::<4>(_mm256_and_si256(h, m3)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(l2, m15),
                        _mm256_slli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(12))),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m15),
                        _mm256_and_si256(h, _mm256_set1_epi8(48)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(l2), m15),
                        _mm256_srli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(-64))),
                    ),
                ];
                let sc: [__m256i; 4] = std::array::from_fn(|k| {
                    let s = _mm_shuffle_epi8(
                        scales,
                        _mm_loadu_si128(SHUF_Q6K[4 * n + k].as_ptr().cast()),
                    );
                    _mm256_cvtepi8_epi16(s)
                });
                for t in 0..N {
                    let q8 = (*xp[t].add(i)).qs.as_ptr().add(128 * n);
                    let mut s = sumi[t];
                    for k in 0..4 {
                        let xv = _mm256_loadu_si256(q8.add(32 * k).cast());
                        s = _mm256_add_epi32(s, scaled_dot(sc[k], q[k], xv));
                    }
                    sumi[t] = s;
                }
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[t]),
                    acc[t],
                );
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }
}

/// The 16 signed scales (`- 32` applied) of a Q3_K super-block (12 bytes at `p`) as i16:
/// scales 0..8 in `.0`, 8..16 in `.1`, each copied to both 128-bit lanes.
#[inline(always)]
unsafe fn q3_k_scales(p: *const u8) -> (__m256i, __m256i) {
    const KMASK1: u32 = 0x03030303;
    const KMASK2: u32 = 0x0f0f0f0f;
    // SAFETY: the caller guarantees 12 readable bytes at `p`.
    unsafe {
        let u = p.cast::<u32>();
        let (a0, a1, a2) = (
            u.read_unaligned(),
            u.add(1).read_unaligned(),
            u.add(2).read_unaligned(),
        );
        let s = _mm_set_epi32(
            (((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4)) as i32,
            (((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4)) as i32,
            ((a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4)) as i32,
            ((a0 & KMASK2) | ((a2 & KMASK1) << 4)) as i32,
        );
        let all = _mm256_cvtepi8_epi16(_mm_sub_epi8(s, _mm_set1_epi8(32)));
        (
            _mm256_permute2x128_si256::<0x00>(all, all),
            _mm256_permute2x128_si256::<0x11>(all, all),
        )
    }
}

/// Q3_K row . `N` tokens (`N` <= 4): 2 low bits minus 4 where the high bit is clear, as
/// `maddubs(low, x) - maddubs(4 * !high, x)`, times signed 6-bit scales per 16.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q3_k_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    let nb = blocks(w, Q3_K_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in dot_q45_k.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let four = _mm256_set1_epi8(4);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q3_K_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q3_K_BYTES).cast());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q3_K_BYTES + 64).cast());
            let d = f16_at(b.add(108));
            let (s_lo, s_hi) = q3_k_scales(b.add(96));
            let hbits = _mm256_loadu_si256(b.cast());
            let mut sumi = [_mm256_setzero_si256(); N];
            for n in 0..2 {
                let scales = if n == 0 { s_lo } else { s_hi };
                let q3 = _mm256_loadu_si256(b.add(32 + 32 * n).cast());
                let low = [
                    _mm256_and_si256(q3, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q3), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q3), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q3), m3),
                ];
                let high: [__m256i; 4] = std::array::from_fn(|k| {
                    let bit = _mm256_set1_epi8((1u8 << (4 * n + k)) as i8);
                    let clear =
                        _mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), _mm256_setzero_si256());
                    _mm256_and_si256(clear, four)
                });
                let sc: [__m256i; 4] =
                    std::array::from_fn(|k| _mm256_shuffle_epi8(scales, load256(&SHUF_Q3K[k])));
                for t in 0..N {
                    let q8 = (*xp[t].add(i)).qs.as_ptr().add(128 * n);
                    let mut s = sumi[t];
                    for k in 0..4 {
                        let xv = _mm256_loadu_si256(q8.add(32 * k).cast());
                        let p = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(low[k], xv),
                            _mm256_maddubs_epi16(high[k], xv),
                        );
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(sc[k], p));
                    }
                    sumi[t] = s;
                }
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[t]),
                    acc[t],
                );
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }
}

/// Q2_K row . `N` tokens (`N` <= 4): 2-bit quants times 4-bit scales per 16, and 4-bit
/// minimums times the activations' per-16 sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q2_k_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    let nb = blocks(w, Q2_K_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in dot_q45_k.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0xF);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q2_K_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q2_K_BYTES).cast());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q2_K_BYTES + 64).cast());
            let (d, dmin) = (f16_at(b.add(80)), f16_at(b.add(82)));
            let ms = _mm_loadu_si128(b.cast());
            let scales = _mm256_cvtepi8_epi16(_mm_and_si128(ms, m4));
            let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(ms), m4));
            let mut sumi = [_mm256_setzero_si256(); N];
            for n in 0..2 {
                let half = if n == 0 {
                    _mm256_permute2x128_si256::<0x00>(scales, scales)
                } else {
                    _mm256_permute2x128_si256::<0x11>(scales, scales)
                };
                let q2 = _mm256_loadu_si256(b.add(16 + 32 * n).cast());
                let q = [
                    _mm256_and_si256(q2, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q2), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q2), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q2), m3),
                ];
                let sc: [__m256i; 4] =
                    std::array::from_fn(|k| _mm256_shuffle_epi8(half, load256(&SHUF_Q3K[k])));
                for t in 0..N {
                    let q8 = (*xp[t].add(i)).qs.as_ptr().add(128 * n);
                    let mut s = sumi[t];
                    for k in 0..4 {
                        let xv = _mm256_loadu_si256(q8.add(32 * k).cast());
                        s = _mm256_add_epi32(s, scaled_dot(sc[k], q[k], xv));
                    }
                    sumi[t] = s;
                }
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                let bs = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
                let prod = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * xb.d), prod, acc[t]);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[t]),
                    acc[t],
                );
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }
}

/// IQ4_XS row . `N` tokens (`N` <= 4): signed `kvalues_iq4nl` levels (sign split) times
/// 6-bit scales per 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_xs_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [f32; N] {
    let nb = blocks(w, IQ4_XS_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in dot_q45_k.
    unsafe {
        let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast());
        let m4 = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * IQ4_XS_BYTES);
            for line in [0, 64, 128] {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * IQ4_XS_BYTES + line).cast());
            }
            let d = f16_at(b);
            let mut sh = b.add(2).cast::<u16>().read_unaligned() as i32;
            let mut sumi = [_mm256_setzero_si256(); N];
            for ib in 0..8 {
                let raw = _mm_loadu_si128(b.add(8 + 16 * ib).cast());
                let wv = _mm256_set_m128i(
                    _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(raw), m4)),
                    _mm_shuffle_epi8(table, _mm_and_si128(raw, m4)),
                );
                let sl = *b.add(4 + ib / 2) as i32;
                let ls = ((sl >> (4 * (ib % 2))) & 0xF) | ((sh & 3) << 4);
                sh >>= 2;
                let scale = _mm256_set1_epi16((ls - 32) as i16);
                for t in 0..N {
                    let xv = _mm256_loadu_si256((*xp[t].add(i)).qs.as_ptr().add(32 * ib).cast());
                    let (aw, sx) = sign_split(wv, xv);
                    let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(aw, sx));
                    sumi[t] = _mm256_add_epi32(sumi[t], p);
                }
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[t]),
                    acc[t],
                );
            }
        }
        std::array::from_fn(|t| hsum(acc[t]))
    }
}

/// `pshufb` masks giving each 32-bit lane (one row of an x8 group) the pair `(b, b)` of its
/// byte `k` (< 4) as two u16: a per-row scale for `madd` against `maddubs` pair sums.
static PAIR_OF_BYTE: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 8 {
            let base = 4 * (i % 4) as u8;
            t[k][4 * i] = base + k as u8;
            t[k][4 * i + 1] = 0x80;
            t[k][4 * i + 2] = base + k as u8;
            t[k][4 * i + 3] = 0x80;
            i += 1;
        }
        k += 1;
    }
    t
};

/// `pshufb` masks giving each 32-bit lane its bytes `2k` and `2k + 1` (k < 2) as two u16.
static PAIR_OF_BYTES: [[u8; 32]; 2] = {
    let mut t = [[0u8; 32]; 2];
    let mut k = 0;
    while k < 2 {
        let mut i = 0;
        while i < 8 {
            let base = 4 * (i % 4) as u8;
            t[k][4 * i] = base + 2 * k as u8;
            t[k][4 * i + 1] = 0x80;
            t[k][4 * i + 2] = base + 2 * k as u8 + 1;
            t[k][4 * i + 3] = 0x80;
            i += 1;
        }
        k += 1;
    }
    t
};

/// As [`PAIR_OF_BYTE`] and [`PAIR_OF_BYTES`], but into the high byte of each u16, so an
/// arithmetic shift right by 8 sign-extends (Q6_K's i8 scales).
static HIGH_PAIR_OF_BYTE: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 8 {
            let base = 4 * (i % 4) as u8;
            t[k][4 * i] = 0x80;
            t[k][4 * i + 1] = base + k as u8;
            t[k][4 * i + 2] = 0x80;
            t[k][4 * i + 3] = base + k as u8;
            i += 1;
        }
        k += 1;
    }
    t
};
static HIGH_PAIR_OF_BYTES: [[u8; 32]; 2] = {
    let mut t = [[0u8; 32]; 2];
    let mut k = 0;
    while k < 2 {
        let mut i = 0;
        while i < 8 {
            let base = 4 * (i % 4) as u8;
            t[k][4 * i] = 0x80;
            t[k][4 * i + 1] = base + 2 * k as u8;
            t[k][4 * i + 2] = 0x80;
            t[k][4 * i + 3] = base + 2 * k as u8 + 1;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Broadcast of the 4 activation bytes at `p` to every 32-bit lane.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe { _mm256_set1_epi32(p.cast::<i32>().read_unaligned()) }
}

/// The number of x8 super-blocks every operand covers.
fn x8_blocks<const N: usize>(w: &[u8], bytes: usize, x: &[&[ActBlockK]; N]) -> usize {
    x.iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / (8 * bytes))
}

/// Eight interleaved Q4_K rows (`Format::Q4_Kx8`) x `N` tokens (`N` <= 4), `out[t][r]`.
///
/// Per super-block the 8 rows' 6-bit scales and minimums are unpacked at once (ggml's `utmp`
/// shuffle on 32-bit lanes, one lane per row), each 32-byte load gives 4 quant bytes of every
/// row, and each 4 activation bytes are broadcast to all lanes: `maddubs` sums pairs in i16
/// (8 loads' worth stays below 2^15: 8 x 2 x 15 x 127), one `madd` per 32-weight sub-block
/// applies the rows' scales. The float work is one multiply-add per super-block for 8 rows.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile8_q4_kx8_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [[f32; 8]; N] {
    const BYTES: usize = 8 * Q4_K_BYTES;
    let nb = x8_blocks(w, Q4_K_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point past
    // the end (they never fault).
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let (k1, k2, k3) = (
            _mm256_set1_epi32(0x3f3f3f3f),
            _mm256_set1_epi32(0x0f0f0f0f),
            _mm256_set1_epi32(0x03030303),
        );
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * BYTES);
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
            let dminv = _mm256_cvtph_ps(_mm_loadu_si128(b.add(16).cast()));
            let u0 = _mm256_loadu_si256(b.add(32).cast());
            let u1 = _mm256_loadu_si256(b.add(64).cast());
            let u2 = _mm256_loadu_si256(b.add(96).cast());
            let s_lo = _mm256_and_si256(u0, k1);
            let s_hi = _mm256_or_si256(
                _mm256_and_si256(u2, k2),
                _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u0), k3)),
            );
            let m_lo = _mm256_and_si256(u1, k1);
            let m_hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi32::<4>(u2), k2),
                _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u1), k3)),
            );
            // Minimums: sum over sub-block pairs of (m_2k, m_2k+1) . (bsum32_2k, bsum32_2k+1).
            let mins: [__m256i; 4] = std::array::from_fn(|k| {
                _mm256_shuffle_epi8(
                    if k < 2 { m_lo } else { m_hi },
                    load256(&PAIR_OF_BYTES[k % 2]),
                )
            });
            let mut summ = [_mm256_setzero_si256(); N];
            for t in 0..N {
                let q8s = bsums32(&*xp[t].add(i));
                let q8s = _mm256_broadcastsi128_si256(q8s);
                let pairs = [
                    _mm256_shuffle_epi32::<0x00>(q8s),
                    _mm256_shuffle_epi32::<0x55>(q8s),
                    _mm256_shuffle_epi32::<0xAA>(q8s),
                    _mm256_shuffle_epi32::<0xFF>(q8s),
                ];
                for k in 0..4 {
                    summ[t] = _mm256_add_epi32(summ[t], _mm256_madd_epi16(mins[k], pairs[k]));
                }
            }
            let mut sumi = [_mm256_setzero_si256(); N];
            for c2 in 0..4 {
                let sl = _mm256_shuffle_epi8(
                    if c2 < 2 { s_lo } else { s_hi },
                    load256(&PAIR_OF_BYTE[(2 * c2) % 4]),
                );
                let sh = _mm256_shuffle_epi8(
                    if c2 < 2 { s_lo } else { s_hi },
                    load256(&PAIR_OF_BYTE[(2 * c2 + 1) % 4]),
                );
                let mut plo = [_mm256_setzero_si256(); N];
                let mut phi = [_mm256_setzero_si256(); N];
                for g in 0..8 {
                    let c = _mm256_loadu_si256(b.add(128 + 32 * (8 * c2 + g)).cast());
                    let lo = _mm256_and_si256(c, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(c), m4);
                    for t in 0..N {
                        let q = (*xp[t].add(i)).qs.as_ptr().add(64 * c2 + 4 * g);
                        plo[t] = _mm256_add_epi16(plo[t], _mm256_maddubs_epi16(lo, bcast4(q)));
                        phi[t] =
                            _mm256_add_epi16(phi[t], _mm256_maddubs_epi16(hi, bcast4(q.add(32))));
                    }
                }
                for t in 0..N {
                    let s = _mm256_add_epi32(
                        _mm256_madd_epi16(sl, plo[t]),
                        _mm256_madd_epi16(sh, phi[t]),
                    );
                    sumi[t] = _mm256_add_epi32(sumi[t], s);
                }
            }
            for t in 0..N {
                let xd = _mm256_set1_ps((*xp[t].add(i)).d);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(dv, xd), acc[t]);
                acc[t] = _mm256_fnmadd_ps(
                    _mm256_cvtepi32_ps(summ[t]),
                    _mm256_mul_ps(dminv, xd),
                    acc[t],
                );
            }
        }
        let mut out = [[0f32; 8]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

/// Eight interleaved Q6_K rows (`Format::Q6_Kx8`) x `N` tokens (`N` <= 4), `out[t][r]`: as
/// [`tile8_q4_kx8_avx2`], with the 6-bit quants rebuilt from nibbles and high-bit pairs, the
/// rows' i8 scales per 16 sign-extended into `madd` pairs, and the `- 32` offset taken off once
/// per super-block as `32 * sum(scale * bsum)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile8_q6_kx8_avx2<const N: usize>(w: &[u8], x: [&[ActBlockK]; N]) -> [[f32; 8]; N] {
    const BYTES: usize = 8 * Q6_K_BYTES;
    // Body chunk c (4 bytes of each row) of a super-block starts at 16 + 32 c.
    const fn chunk(c: usize) -> usize {
        16 + 32 * c
    }
    let nb = x8_blocks(w, Q6_K_BYTES, &x);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in tile8_q4_kx8_avx2.
    unsafe {
        let (m3, m15) = (_mm256_set1_epi8(3), _mm256_set1_epi8(15));
        let (m12, m48, mc0) = (
            _mm256_set1_epi8(12),
            _mm256_set1_epi8(48),
            _mm256_set1_epi8(-64),
        );
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * BYTES);
            // The kernel reads a super-block in three interleaved streams (low nibbles, high
            // bits, scales at the end), which the hardware prefetchers follow poorly: fetch
            // the next one whole.
            for line in (0..BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(BYTES + line).cast());
            }
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
            // Scale bytes 4c..4c+4 of every row (chunks 48..52).
            let sc: [__m256i; 4] =
                std::array::from_fn(|c| _mm256_loadu_si256(b.add(chunk(48 + c)).cast()));
            // The offset: 32 * sum over sub-block pairs of (sc_2m, sc_2m+1) . (bsum_2m, bsum_2m+1).
            let mut sumi = [_mm256_setzero_si256(); N];
            for m in 0..8 {
                let pair = _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(
                    sc[m / 2],
                    load256(&HIGH_PAIR_OF_BYTES[m % 2]),
                ));
                for t in 0..N {
                    let bs = (*xp[t].add(i)).bsums.as_ptr().add(2 * m);
                    let bs = _mm256_set1_epi32(bs.cast::<i32>().read_unaligned());
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(pair, bs));
                }
            }
            for s in sumi.iter_mut() {
                *s = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(*s));
            }
            for n in 0..2 {
                let mut scale = [_mm256_setzero_si256(); 4];
                for g in 0..8 {
                    if g % 4 == 0 {
                        // Sub-block 8n + 2k + g / 4 of quarter k.
                        for (k, s) in scale.iter_mut().enumerate() {
                            let sb = 8 * n + 2 * k + g / 4;
                            *s = _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(
                                sc[sb / 4],
                                load256(&HIGH_PAIR_OF_BYTE[sb % 4]),
                            ));
                        }
                    }
                    let a = _mm256_loadu_si256(b.add(chunk(16 * n + g)).cast());
                    let bq = _mm256_loadu_si256(b.add(chunk(16 * n + 8 + g)).cast());
                    let h = _mm256_loadu_si256(b.add(chunk(32 + 8 * n + g)).cast());
                    let q = [
                        _mm256_or_si256(
                            _mm256_and_si256(a, m15),
                            _mm256_slli_epi16::<4>(_mm256_and_si256(h, m3)),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(bq, m15),
                            _mm256_slli_epi16::<2>(_mm256_and_si256(h, m12)),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(a), m15),
                            _mm256_and_si256(h, m48),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(bq), m15),
                            _mm256_srli_epi16::<2>(_mm256_and_si256(h, mc0)),
                        ),
                    ];
                    for t in 0..N {
                        let xq = (*xp[t].add(i)).qs.as_ptr().add(128 * n + 4 * g);
                        let mut s = sumi[t];
                        for k in 0..4 {
                            let p = _mm256_maddubs_epi16(q[k], bcast4(xq.add(32 * k)));
                            s = _mm256_add_epi32(s, _mm256_madd_epi16(scale[k], p));
                        }
                        sumi[t] = s;
                    }
                }
            }
            for t in 0..N {
                let xd = _mm256_set1_ps((*xp[t].add(i)).d);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_mul_ps(dv, xd), acc[t]);
            }
        }
        let mut out = [[0f32; 8]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}
