//! x86-64 SIMD twins of the scalar kernels: AVX2 + FMA + F16C, and AVX-512 VNNI for integer dots.
//!
//! Every function here is `unsafe` only because of `#[target_feature]`: callers must have
//! checked the CPU (see `Isa::detect`). Slices bound every load and store.

use std::arch::x86_64::*;

use crate::quant::blocks::{
    IQ4_NL_BYTES, Q4_0X8_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0X8_BYTES,
    Q8_0X8_XOR, Q8_0_BYTES, X8,
};
use crate::quant::kblocks::KVALUES_IQ4NL;
use crate::quant::{ActBlock, QK};

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics, available under the caller's target features.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// `sum a[i] * b[i]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads 8 floats at i + 8 <= n (or i + 32 <= n) from both slices.
    unsafe {
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        while i + 32 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            s2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                s2,
            );
            s3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                s3,
            );
            i += 32;
        }
        while i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }
}

/// `y += alpha * x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    // SAFETY: 8-float loads/stores at i + 8 <= n within both slices.
    unsafe {
        let a = _mm256_set1_ps(alpha);
        while i + 8 <= n {
            let py = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                py,
                _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i)), a, _mm256_loadu_ps(py)),
            );
            i += 8;
        }
    }
    while i < n {
        y[i] += alpha * x[i];
        i += 1;
    }
}

/// bfloat16 (little-endian bytes) -> f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn bf16_to_f32(src: &[u8], out: &mut [f32]) {
    let n = out.len().min(src.len() / 2);
    let mut i = 0;
    // SAFETY: reads 16 bytes at 2i + 16 <= 2n, writes 8 floats at i + 8 <= n.
    unsafe {
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            let w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_castsi256_ps(w));
            i += 8;
        }
    }
    while i < n {
        out[i] = f32::from_bits((u16::from_le_bytes([src[2 * i], src[2 * i + 1]]) as u32) << 16);
        i += 1;
    }
}

/// float16 (little-endian bytes) -> f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32(src: &[u8], out: &mut [f32]) {
    let n = out.len().min(src.len() / 2);
    let mut i = 0;
    // SAFETY: as in bf16_to_f32.
    unsafe {
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
    }
    while i < n {
        out[i] = half::f16::from_le_bytes([src[2 * i], src[2 * i + 1]]).to_f32();
        i += 1;
    }
}

/// FP8 e4m3fn bytes times `scale` -> f32. An e4m3 value shifted left by 7 bits is the float16
/// with the same sign and digits but 2^8 smaller (exponent bias 15 vs 7, subnormals included),
/// so F16C does the decoding and the 256 joins the scale. (NaN codes decode as 480: checkpoints
/// hold none.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn fp8_to_f32(src: &[u8], scale: f32, out: &mut [f32]) {
    let n = out.len().min(src.len());
    let mut i = 0;
    // SAFETY: reads 8 bytes at i + 8 <= n, writes 8 floats at i + 8 <= n.
    unsafe {
        let s = _mm256_set1_ps(scale * 256.0);
        let sign_mask = _mm_set1_epi16(0x80);
        let mag_mask = _mm_set1_epi16(0x7F);
        while i + 8 <= n {
            let b = _mm_cvtepu8_epi16(_mm_loadl_epi64(src.as_ptr().add(i).cast()));
            let h = _mm_or_si128(
                _mm_slli_epi16(_mm_and_si128(b, sign_mask), 8),
                _mm_slli_epi16(_mm_and_si128(b, mag_mask), 7),
            );
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(_mm256_cvtph_ps(h), s),
            );
            i += 8;
        }
    }
    while i < n {
        out[i] = crate::quant::fp8_e4m3_to_f32(src[i]) * scale;
        i += 1;
    }
}

/// Q8_0 blocks -> f32 (`out.len()` = 32 x blocks).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_to_f32(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        // SAFETY: F16C is enabled for this function.
        let d = unsafe { block_d(b) };
        // SAFETY: each block has 32 quant bytes after its scale; each output chunk holds 32 floats.
        unsafe {
            let dv = _mm256_set1_ps(d);
            for k in 0..4 {
                let q = _mm_loadl_epi64(b.as_ptr().add(2 + 8 * k).cast());
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), _mm256_mul_ps(f, dv));
            }
        }
    }
}

/// 32 signed nibble values `q - 8` of a Q4_0 block, in weight order.
#[inline(always)]
unsafe fn q4_0_unpack(b: &[u8]) -> __m256i {
    // SAFETY: a block has 16 nibble bytes after its 2-byte scale.
    unsafe {
        let raw = _mm_loadu_si128(b.as_ptr().add(2).cast());
        let lo = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
        _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
    }
}

/// Q4_0 blocks -> f32 (`out.len()` = 32 x blocks).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0_to_f32(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(Q4_0_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        // SAFETY: F16C is enabled for this function.
        let d = unsafe { block_d(b) };
        // SAFETY: as in q8_0_to_f32; the 32 values are spilled to a stack array first.
        unsafe {
            let mut q = [0i8; 32];
            _mm256_storeu_si256(q.as_mut_ptr().cast(), q4_0_unpack(b));
            let dv = _mm256_set1_ps(d);
            for k in 0..4 {
                let v = _mm_loadl_epi64(q.as_ptr().add(8 * k).cast());
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), _mm256_mul_ps(f, dv));
            }
        }
    }
}

/// Eight i32 partial sums of `w[i] * x[i]` for 32 signed bytes each (AVX2: maddubs wants an
/// unsigned left operand, so move w's sign onto x).
#[inline(always)]
unsafe fn dot_i8_avx2(w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let aw = _mm256_sign_epi8(w, w);
        let sx = _mm256_sign_epi8(x, w);
        _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
    }
}

/// The same with AVX-512 VNNI's `vpdpbusd`.
#[inline(always)]
unsafe fn dot_i8_vnni(w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics under avx512vnni + avx512vl.
    unsafe {
        let aw = _mm256_sign_epi8(w, w);
        let sx = _mm256_sign_epi8(x, w);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)
    }
}

/// The f16 scale at the start of a block, converted inline with F16C (half's portable
/// conversion re-checks CPU features on every call, which costs more than the block's math).
#[inline(always)]
pub(super) unsafe fn block_d(b: &[u8]) -> f32 {
    // SAFETY: register-only intrinsics under F16C; a block has at least 2 bytes.
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([b[0], b[1]]) as i32,
        )))
    }
}

/// 32 signed weights of a Q8_0 block.
#[inline(always)]
unsafe fn q8_0_load(b: &[u8]) -> __m256i {
    // SAFETY: a Q8_0 block has 32 quant bytes after its scale.
    unsafe { _mm256_loadu_si256(b.as_ptr().add(2).cast()) }
}

macro_rules! int_dot {
    ($name:ident, $bytes:expr, $load:ident, $dot:ident, $feat:literal, $doc:literal) => {
        #[doc = $doc]
        #[target_feature(enable = $feat)]
        pub unsafe fn $name(w: &[u8], x: &[ActBlock]) -> f32 {
            let nb = x.len().min(w.len() / $bytes);
            // SAFETY: blocks are sliced within `w` and `x`; two independent accumulators hide
            // the FMA latency.
            unsafe {
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i + 2 <= nb {
                    // Software prefetch a few blocks ahead: decode streams each row once.
                    _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add((i + 16) * $bytes).cast());
                    let (b0, b1) = (&w[i * $bytes..], &w[(i + 1) * $bytes..]);
                    let (x0, x1) = (&x[i], &x[i + 1]);
                    let p0 = $dot($load(b0), _mm256_loadu_si256(x0.qs.as_ptr().cast()));
                    let p1 = $dot($load(b1), _mm256_loadu_si256(x1.qs.as_ptr().cast()));
                    acc0 = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(p0),
                        _mm256_set1_ps(block_d(b0) * x0.d),
                        acc0,
                    );
                    acc1 = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(p1),
                        _mm256_set1_ps(block_d(b1) * x1.d),
                        acc1,
                    );
                    i += 2;
                }
                if i < nb {
                    let b0 = &w[i * $bytes..];
                    let p0 = $dot($load(b0), _mm256_loadu_si256(x[i].qs.as_ptr().cast()));
                    acc0 = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(p0),
                        _mm256_set1_ps(block_d(b0) * x[i].d),
                        acc0,
                    );
                }
                hsum(_mm256_add_ps(acc0, acc1))
            }
        }
    };
}

int_dot!(
    dot_q8_0_avx2,
    Q8_0_BYTES,
    q8_0_load,
    dot_i8_avx2,
    "avx2,fma,f16c",
    "Q8_0 row . activations (AVX2)."
);
int_dot!(
    dot_q8_0_vnni,
    Q8_0_BYTES,
    q8_0_load,
    dot_i8_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    "Q8_0 row . activations (AVX-512 VNNI)."
);

/// `|w|` and `x` carrying `w`'s sign: maddubs/vpdpbusd want an unsigned left operand.
#[inline(always)]
pub(super) unsafe fn sign_split(w: __m256i, x: __m256i) -> (__m256i, __m256i) {
    // SAFETY: register-only intrinsics.
    unsafe { (_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)) }
}

#[inline(always)]
pub(super) unsafe fn udot_avx2(aw: __m256i, sx: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1)) }
}

/// `acc + udot(aw, sx)` (AVX2).
#[inline(always)]
unsafe fn udot_acc_avx2(acc: __m256i, aw: __m256i, sx: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_add_epi32(acc, udot_avx2(aw, sx)) }
}

/// `acc + udot(aw, sx)` in one `vpdpbusd`.
#[inline(always)]
unsafe fn udot_acc_vnni(acc: __m256i, aw: __m256i, sx: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics under avx512vnni + avx512vl.
    unsafe { _mm256_dpbusd_epi32(acc, aw, sx) }
}

#[inline(always)]
unsafe fn udot_vnni(aw: __m256i, sx: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics under avx512vnni + avx512vl.
    unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx) }
}

macro_rules! int_dot4 {
    ($name:ident, $bytes:expr, $load:ident, $udot:ident, $feat:literal, $doc:literal) => {
        #[doc = $doc]
        #[target_feature(enable = $feat)]
        pub unsafe fn $name(w: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
            let nb = x
                .iter()
                .map(|v| v.len())
                .min()
                .unwrap_or(0)
                .min(w.len() / $bytes);
            // SAFETY: blocks are sliced within `w` and each `x[k]`. Each weight block is loaded
            // (and for Q4_0 unpacked) once for four tokens, with one accumulator per token.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in 0..nb {
                    let b = &w[i * $bytes..];
                    let wv = $load(b);
                    let dw = block_d(b);
                    for k in 0..4 {
                        let xb = &x[k][i];
                        let (aw, sx) = sign_split(wv, _mm256_loadu_si256(xb.qs.as_ptr().cast()));
                        let p = $udot(aw, sx);
                        acc[k] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(dw * xb.d),
                            acc[k],
                        );
                    }
                }
                [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
            }
        }
    };
}

int_dot4!(
    dot4_q8_0_avx2,
    Q8_0_BYTES,
    q8_0_load,
    udot_avx2,
    "avx2,fma,f16c",
    "Q8_0 row . 4 tokens (AVX2)."
);
int_dot4!(
    dot4_q8_0_vnni,
    Q8_0_BYTES,
    q8_0_load,
    udot_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    "Q8_0 row . 4 tokens (AVX-512 VNNI)."
);

/// 32 unsigned nibbles (0..16) of a Q4_1 block, in weight order.
#[inline(always)]
unsafe fn q4_1_unpack(b: &[u8]) -> __m256i {
    // SAFETY: a Q4_1 block has 16 nibble bytes after its 4-byte scale and minimum.
    unsafe {
        let raw = _mm_loadu_si128(b.as_ptr().add(4).cast());
        let lo = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
        _mm256_set_m128i(hi, lo)
    }
}

/// The f16 minimum of a Q4_1 block, converted with F16C.
#[inline(always)]
pub(super) unsafe fn block_m(b: &[u8]) -> f32 {
    // SAFETY: register-only intrinsics under F16C; a Q4_1 block has at least 4 bytes.
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([b[2], b[3]]) as i32,
        )))
    }
}

macro_rules! q4_1_dots {
    ($one:ident, $four:ident, $udot:ident, $feat:literal) => {
        /// Q4_1 row . activations: unsigned nibbles times signed bytes need no sign trick; the
        /// block minimum multiplies the activations' block sum.
        #[target_feature(enable = $feat)]
        pub unsafe fn $one(w: &[u8], x: &[ActBlock]) -> f32 {
            let nb = x.len().min(w.len() / Q4_1_BYTES);
            // SAFETY: blocks are sliced within `w` and `x`.
            unsafe {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for i in 0..nb {
                    _mm_prefetch::<_MM_HINT_T0>(
                        w.as_ptr().wrapping_add((i + 16) * Q4_1_BYTES).cast(),
                    );
                    let b = &w[i * Q4_1_BYTES..];
                    let p = $udot(q4_1_unpack(b), _mm256_loadu_si256(x[i].qs.as_ptr().cast()));
                    acc = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(p),
                        _mm256_set1_ps(block_d(b) * x[i].d),
                        acc,
                    );
                    mins += block_m(b) * x[i].s;
                }
                hsum(acc) + mins
            }
        }

        /// Q4_1 row . 4 tokens.
        #[target_feature(enable = $feat)]
        pub unsafe fn $four(w: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
            let nb = x
                .iter()
                .map(|v| v.len())
                .min()
                .unwrap_or(0)
                .min(w.len() / Q4_1_BYTES);
            // SAFETY: blocks are sliced within `w` and each `x[k]`.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut mins = [0f32; 4];
                for i in 0..nb {
                    let b = &w[i * Q4_1_BYTES..];
                    let wv = q4_1_unpack(b);
                    let (dw, mw) = (block_d(b), block_m(b));
                    for k in 0..4 {
                        let xb = &x[k][i];
                        let p = $udot(wv, _mm256_loadu_si256(xb.qs.as_ptr().cast()));
                        acc[k] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(dw * xb.d),
                            acc[k],
                        );
                        mins[k] += mw * xb.s;
                    }
                }
                [0, 1, 2, 3].map(|k| hsum(acc[k]) + mins[k])
            }
        }
    };
}

q4_1_dots!(dot_q4_1_avx2, dot4_q4_1_avx2, udot_avx2, "avx2,fma,f16c");
q4_1_dots!(
    dot_q4_1_vnni,
    dot4_q4_1_vnni,
    udot_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);

/// 32 unsigned nibbles (0..16) of a Q4_0 block, in weight order (the `- 8` is applied to the
/// sums instead, through `ActBlock::sum8`).
#[inline(always)]
unsafe fn q4_0_nibbles(b: &[u8]) -> __m256i {
    // SAFETY: a Q4_0 block has 16 nibble bytes after its 2-byte scale.
    unsafe {
        // The 16 bytes in both halves, the upper half shifted right by 4: low nibbles land in
        // lanes 0..16 and high nibbles in 16..32 (3 instructions instead of 5). The shift is
        // AVX2's 64-bit `vpsrlvq` (the 16-bit form is AVX-512BW and faults on AVX2-only CPUs):
        // bits crossing into a byte from its neighbour land in its high nibble, masked off below.
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(b.as_ptr().add(2).cast()));
        let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }
}

/// `w . x` for one Q4_0 block as 8 float partial sums: unsigned nibbles times signed bytes,
/// minus `8 * sum(x)` folded into lane 0, so no sign trick is needed. (A macro, so the dot
/// instruction is inlined under the caller's target features.)
macro_rules! q4_0_block_dot {
    ($wv:expr, $xb:expr, $udot_acc:ident) => {{
        let xb: &ActBlock = $xb;
        // Start the integer sums at -8 * sum(x) (lane 0), then add nibbles x activations.
        let init = _mm256_castsi128_si256(_mm_cvtsi32_si128(-xb.sum8));
        _mm256_cvtepi32_ps($udot_acc(
            init,
            $wv,
            _mm256_loadu_si256(xb.qs.as_ptr().cast()),
        ))
    }};
}

macro_rules! q4_0_dots {
    ($one:ident, $four:ident, $udot:ident, $feat:literal) => {
        /// Q4_0 row . activations.
        #[target_feature(enable = $feat)]
        pub unsafe fn $one(w: &[u8], x: &[ActBlock]) -> f32 {
            let nb = x.len().min(w.len() / Q4_0_BYTES);
            // SAFETY: blocks are sliced within `w` and `x`; two accumulators hide FMA latency.
            unsafe {
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i + 2 <= nb {
                    // Software prefetch a few blocks ahead: decode streams each row once.
                    _mm_prefetch::<_MM_HINT_T0>(
                        w.as_ptr().wrapping_add((i + 16) * Q4_0_BYTES).cast(),
                    );
                    let (b0, b1) = (&w[i * Q4_0_BYTES..], &w[(i + 1) * Q4_0_BYTES..]);
                    let p0 = q4_0_block_dot!(q4_0_nibbles(b0), &x[i], $udot);
                    let p1 = q4_0_block_dot!(q4_0_nibbles(b1), &x[i + 1], $udot);
                    acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(block_d(b0) * x[i].d), acc0);
                    acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps(block_d(b1) * x[i + 1].d), acc1);
                    i += 2;
                }
                if i < nb {
                    let b0 = &w[i * Q4_0_BYTES..];
                    let p0 = q4_0_block_dot!(q4_0_nibbles(b0), &x[i], $udot);
                    acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps(block_d(b0) * x[i].d), acc0);
                }
                hsum(_mm256_add_ps(acc0, acc1))
            }
        }

        /// Q4_0 row . 4 tokens: each block unpacked once.
        #[target_feature(enable = $feat)]
        pub unsafe fn $four(w: &[u8], x: [&[ActBlock]; 4]) -> [f32; 4] {
            let nb = x
                .iter()
                .map(|v| v.len())
                .min()
                .unwrap_or(0)
                .min(w.len() / Q4_0_BYTES);
            let xp = x.map(|v| v.as_ptr());
            // SAFETY: i < nb keeps every block inside `w` and each `x[k]` (raw pointers spare
            // the bounds checks in the hottest loop of prefill).
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in 0..nb {
                    let b = std::slice::from_raw_parts(w.as_ptr().add(i * Q4_0_BYTES), Q4_0_BYTES);
                    let wv = q4_0_nibbles(b);
                    let dw = block_d(b);
                    for k in 0..4 {
                        let xb = &*xp[k].add(i);
                        let p = q4_0_block_dot!(wv, xb, $udot);
                        acc[k] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xb.d), acc[k]);
                    }
                }
                [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
            }
        }
    };
}

q4_0_dots!(
    dot_q4_0_avx2,
    dot4_q4_0_avx2,
    udot_acc_avx2,
    "avx2,fma,f16c"
);
q4_0_dots!(
    dot_q4_0_vnni,
    dot4_q4_0_vnni,
    udot_acc_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);

/// Four rows x four tokens of `x W^T` for Q8_0 or Q4_0 weights (AVX-512 VNNI): each weight
/// block is read once per four tokens and each activation block once per four rows, and the
/// sixteen (row, token) sums stay in registers: prefill's matrix-matrix kernel.
///
/// Q8_0 multiplies `x + 128` (unsigned) by the signed weights, starting each sum at
/// `-128 * sum(w)`; Q4_0 multiplies the unsigned nibbles by `x`, starting at `-8 * sum(x)`.
macro_rules! tile4x4 {
    ($name:ident, $bytes:expr, $q8:literal) => {
        /// Sixteen dot products of four weight rows with four tokens' activations.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $name(w: [&[u8]; 4], x: [&[ActBlock]; 4]) -> [[f32; 4]; 4] {
            let nb = w
                .iter()
                .map(|r| r.len() / $bytes)
                .chain(x.iter().map(|v| v.len()))
                .min()
                .unwrap_or(0);
            let (wp, xp) = (w.map(|r| r.as_ptr()), x.map(|v| v.as_ptr()));
            // SAFETY: i < nb keeps every block inside its row of `w` and every `x[t]`.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 4]; 4];
                let bias = _mm256_set1_epi8(-128);
                for i in 0..nb {
                    let mut xv = [_mm256_setzero_si256(); 4];
                    let mut xd = [_mm256_setzero_ps(); 4];
                    let mut xinit = [_mm256_setzero_si256(); 4];
                    for t in 0..4 {
                        let xb = &*xp[t].add(i);
                        let q = _mm256_loadu_si256(xb.qs.as_ptr().cast());
                        xd[t] = _mm256_set1_ps(xb.d);
                        if $q8 {
                            xv[t] = _mm256_xor_si256(q, bias);
                        } else {
                            xv[t] = q;
                            xinit[t] = _mm256_castsi128_si256(_mm_cvtsi32_si128(-xb.sum8));
                        }
                    }
                    for r in 0..4 {
                        _mm_prefetch::<_MM_HINT_T0>(wp[r].wrapping_add((i + 8) * $bytes).cast());
                        let b = std::slice::from_raw_parts(wp[r].add(i * $bytes), $bytes);
                        let dw = _mm256_set1_ps(block_d(b));
                        if $q8 {
                            let wq = q8_0_load(b);
                            // -128 * sum(w), per lane group.
                            let init = _mm256_sub_epi32(
                                _mm256_setzero_si256(),
                                _mm256_dpbusd_epi32(_mm256_setzero_si256(), bias, wq),
                            );
                            for t in 0..4 {
                                let p = _mm256_dpbusd_epi32(init, xv[t], wq);
                                acc[r][t] = _mm256_fmadd_ps(
                                    _mm256_cvtepi32_ps(p),
                                    _mm256_mul_ps(dw, xd[t]),
                                    acc[r][t],
                                );
                            }
                        } else {
                            let wv = q4_0_nibbles(b);
                            for t in 0..4 {
                                let p = _mm256_dpbusd_epi32(xinit[t], wv, xv[t]);
                                acc[r][t] = _mm256_fmadd_ps(
                                    _mm256_cvtepi32_ps(p),
                                    _mm256_mul_ps(dw, xd[t]),
                                    acc[r][t],
                                );
                            }
                        }
                    }
                }
                acc.map(|row| row.map(|a| hsum(a)))
            }
        }
    };
}

tile4x4!(tile4x4_q8_0_vnni, Q8_0_BYTES, true);
tile4x4!(tile4x4_q4_0_vnni, Q4_0_BYTES, false);

/// Eight interleaved Q4_0 rows x `N` tokens (`N` <= 4): per block, four 32-byte loads give the
/// nibbles of all 8 rows (row `r` in 32-bit lane `r`), each 4-column group of a token's
/// activations is broadcast to all lanes, and one dot instruction covers 4 columns x 8 rows.
/// The 8 row scales convert in one F16C instruction and the 8 sums are scaled in one multiply,
/// so the float work per block is shared by 8 rows instead of done per row.
macro_rules! tile8_q4_0x8 {
    ($name:ident, $udot_acc:ident, $feat:literal) => {
        /// `out[t][r]` = row `r` of the group . token `t`.
        #[target_feature(enable = $feat)]
        pub unsafe fn $name<const N: usize>(w: &[u8], x: [&[ActBlock]; N]) -> [[f32; X8]; N] {
            let nb = x
                .iter()
                .map(|v| v.len())
                .min()
                .unwrap_or(0)
                .min(w.len() / Q4_0X8_BYTES);
            let xp = x.map(|v| v.as_ptr());
            // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point
            // past the end (they never fault).
            unsafe {
                let mut acc = [_mm256_setzero_ps(); N];
                let low = _mm256_set1_epi8(0x0F);
                for i in 0..nb {
                    let b = w.as_ptr().add(i * Q4_0X8_BYTES);
                    for line in [0, 64, 128] {
                        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(6 * Q4_0X8_BYTES + line).cast());
                    }
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
                    let mut lo = [_mm256_setzero_si256(); 4];
                    let mut hi = [_mm256_setzero_si256(); 4];
                    for j in 0..4 {
                        let c = _mm256_loadu_si256(b.add(2 * X8 + 32 * j).cast());
                        lo[j] = _mm256_and_si256(c, low);
                        hi[j] = _mm256_and_si256(_mm256_srli_epi16::<4>(c), low);
                    }
                    for t in 0..N {
                        let xb = &*xp[t].add(i);
                        let q = xb.qs.as_ptr();
                        // Two chains (low / high nibbles) halve the dependent dot latency.
                        let mut s0 = _mm256_set1_epi32(-xb.sum8);
                        let mut s1 = _mm256_setzero_si256();
                        for j in 0..4 {
                            let x0 = _mm256_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                            let x1 =
                                _mm256_set1_epi32(q.add(16 + 4 * j).cast::<i32>().read_unaligned());
                            s0 = $udot_acc(s0, lo[j], x0);
                            s1 = $udot_acc(s1, hi[j], x1);
                        }
                        let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                        acc[t] =
                            _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
                    }
                }
                let mut out = [[0f32; X8]; N];
                for t in 0..N {
                    _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
                }
                out
            }
        }
    };
}

tile8_q4_0x8!(tile8_q4_0x8_avx2, udot_acc_avx2, "avx2,fma,f16c");
tile8_q4_0x8!(
    tile8_q4_0x8_vnni,
    udot_acc_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);

/// Eight interleaved Q8_0 rows (stored as `w + 128`) x `N` tokens (`N` <= 4), as
/// [`tile8_q4_0x8_vnni`]: `vpdpbusd` takes the unsigned weights as they are, and each sum
/// starts at `-128 * sum(x)` (`16 * ActBlock::sum8`) to take the offset off.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn tile8_q8_0x8_vnni<const N: usize>(w: &[u8], x: [&[ActBlock]; N]) -> [[f32; X8]; N] {
    let nb = x
        .iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / Q8_0X8_BYTES);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point past
    // the end (they never fault).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q8_0X8_BYTES);
            for line in [0, 64, 128, 192, 256] {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(4 * Q8_0X8_BYTES + line).cast());
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
            let mut wq = [_mm256_setzero_si256(); 8];
            for (j, v) in wq.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(b.add(2 * X8 + 32 * j).cast());
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                let q = xb.qs.as_ptr();
                let mut s0 = _mm256_set1_epi32(-16 * xb.sum8);
                let mut s1 = _mm256_setzero_si256();
                for j in 0..4 {
                    let x0 = _mm256_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                    let x1 = _mm256_set1_epi32(q.add(16 + 4 * j).cast::<i32>().read_unaligned());
                    s0 = _mm256_dpbusd_epi32(s0, wq[j], x0);
                    s1 = _mm256_dpbusd_epi32(s1, wq[4 + j], x1);
                }
                let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                acc[t] = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
            }
        }
        let mut out = [[0f32; X8]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

/// [`tile8_q8_0x8_vnni`] for AVX2: `maddubs` would saturate on `w + 128`, so the weights get
/// their sign back and the usual `|w|` x `x * sign(w)` split is used.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile8_q8_0x8_avx2<const N: usize>(w: &[u8], x: [&[ActBlock]; N]) -> [[f32; X8]; N] {
    let nb = x
        .iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / Q8_0X8_BYTES);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: as in tile8_q8_0x8_vnni.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        let bias = _mm256_set1_epi8(Q8_0X8_XOR as i8);
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q8_0X8_BYTES);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
            let mut ws = [_mm256_setzero_si256(); 8];
            for (j, v) in ws.iter_mut().enumerate() {
                *v = _mm256_xor_si256(_mm256_loadu_si256(b.add(2 * X8 + 32 * j).cast()), bias);
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                let q = xb.qs.as_ptr();
                let mut s = _mm256_setzero_si256();
                for (j, &wv) in ws.iter().enumerate() {
                    let xv = _mm256_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                    let (aw, sx) = sign_split(wv, xv);
                    s = udot_acc_avx2(s, aw, sx);
                }
                let s = _mm256_cvtepi32_ps(s);
                acc[t] = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
            }
        }
        let mut out = [[0f32; X8]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

/// 32 unsigned nibbles (0..16) of 16 bytes at `p`, in weight order (low nibbles are weights
/// 0..16, high nibbles 16..32), with AVX2's 64-bit shift as in [`q4_0_nibbles`].
#[inline(always)]
unsafe fn nibbles_at(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    unsafe {
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast()));
        let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }
}

/// The 32 fifth bits of a Q5 block (a little-endian u32 at `p`) as bytes: 0x10 where set.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at `p`.
    unsafe {
        let bits = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
        // Byte k of the result looks at byte k / 8 of the word, then tests bit k % 8 of it.
        let spread = _mm256_shuffle_epi8(
            bits,
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// The 32 signed `kvalues_iq4nl` levels of the 16 code bytes at `p`, in weight order.
#[inline(always)]
unsafe fn iq4_levels(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`; the rest is register-only.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
        _mm256_shuffle_epi8(table, nibbles_at(p))
    }
}

/// One row of Q5_0, Q5_1 or IQ4_NL blocks . `N` tokens (`N` <= 4), each block unpacked once for
/// all tokens. Q5_0 multiplies the unsigned 5-bit levels and starts each sum at
/// `-16 * sum(x)`; Q5_1 adds `m * d_x * sum(x)`; IQ4_NL's signed levels use the sign split.
macro_rules! q5_iq4_dots {
    ($name:ident, $bytes:expr, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name<const N: usize>(w: &[u8], x: [&[ActBlock]; N]) -> [f32; N] {
            let nb = x
                .iter()
                .map(|v| v.len())
                .min()
                .unwrap_or(0)
                .min(w.len() / $bytes);
            let xp = x.map(|v| v.as_ptr());
            // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point
            // past the end (they never fault).
            unsafe {
                let mut acc = [_mm256_setzero_ps(); N];
                let mut mins = [0f32; N];
                for i in 0..nb {
                    let b = std::slice::from_raw_parts(w.as_ptr().add(i * $bytes), $bytes);
                    _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add((i + 16) * $bytes).cast());
                    let wv = match $kind {
                        0 => _mm256_or_si256(
                            nibbles_at(b.as_ptr().add(6)),
                            fifth_bits(b.as_ptr().add(2)),
                        ),
                        1 => _mm256_or_si256(
                            nibbles_at(b.as_ptr().add(8)),
                            fifth_bits(b.as_ptr().add(4)),
                        ),
                        _ => iq4_levels(b.as_ptr().add(2)),
                    };
                    let dw = block_d(b);
                    for t in 0..N {
                        let xb = &*xp[t].add(i);
                        let xv = _mm256_loadu_si256(xb.qs.as_ptr().cast());
                        let p = match $kind {
                            0 => _mm256_add_epi32(
                                _mm256_castsi128_si256(_mm_cvtsi32_si128(-2 * xb.sum8)),
                                udot_avx2(wv, xv),
                            ),
                            1 => udot_avx2(wv, xv),
                            _ => {
                                let (aw, sx) = sign_split(wv, xv);
                                udot_avx2(aw, sx)
                            }
                        };
                        acc[t] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(dw * xb.d),
                            acc[t],
                        );
                        if $kind == 1 {
                            mins[t] += block_m(b) * xb.s;
                        }
                    }
                }
                std::array::from_fn(|t| hsum(acc[t]) + mins[t])
            }
        }
    };
}

q5_iq4_dots!(
    dot_q5_0_avx2,
    Q5_0_BYTES,
    0,
    "Q5_0 row . `N` tokens (AVX2)."
);
q5_iq4_dots!(
    dot_q5_1_avx2,
    Q5_1_BYTES,
    1,
    "Q5_1 row . `N` tokens (AVX2)."
);
q5_iq4_dots!(
    dot_iq4_nl_avx2,
    IQ4_NL_BYTES,
    2,
    "IQ4_NL row . `N` tokens (AVX2)."
);

/// Bytes of one Q5_0x8 block: block `i` of 8 rows (8 f16 scales, then the rows' fifth-bit
/// words, then 4 chunks of nibbles).
const Q5_0X8_BYTES: usize = X8 * Q5_0_BYTES;

/// The fifth bits `k..k + 4` and `k + 16..k + 20` of each 32-bit lane of `qh` (one row's
/// word per lane) as bytes: 0x10 where set, for the 4 low and the 4 high nibbles of a chunk.
#[inline(always)]
unsafe fn q5_x8_fifth(qh: __m256i, k: i32) -> (__m256i, __m256i) {
    // SAFETY: register-only intrinsics.
    unsafe {
        // Each byte of a lane takes the lane's low byte, then tests its own bit of it.
        let spread = _mm256_set_epi64x(
            0x0c0c0c0c08080808,
            0x0404040400000000,
            0x0c0c0c0c08080808,
            0x0404040400000000,
        );
        let bit = _mm256_set1_epi32(0x08040201);
        let sixteen = _mm256_set1_epi8(0x10);
        let one = |shift: i32| {
            let t = _mm256_srlv_epi32(qh, _mm256_set1_epi32(shift));
            let t = _mm256_and_si256(_mm256_shuffle_epi8(t, spread), bit);
            _mm256_and_si256(_mm256_cmpeq_epi8(t, bit), sixteen)
        };
        (one(k), one(k + 16))
    }
}

/// Eight interleaved Q5_0 rows (`Format::Q5_0x8`) x `N` tokens (`N` <= 4), as
/// [`tile8_q4_0x8_avx2`]: the nibbles get their fifth bits (0..32, unsigned) and each sum
/// starts at `-16 * sum(x)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile8_q5_0x8_avx2<const N: usize>(w: &[u8], x: [&[ActBlock]; N]) -> [[f32; X8]; N] {
    let nb = x
        .iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(w.len() / Q5_0X8_BYTES);
    let xp = x.map(|v| v.as_ptr());
    // SAFETY: i < nb keeps every block inside `w` and each `x[t]`; prefetches may point past
    // the end (they never fault).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        let low = _mm256_set1_epi8(0x0F);
        for i in 0..nb {
            let b = w.as_ptr().add(i * Q5_0X8_BYTES);
            for line in [0, 64, 128] {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(6 * Q5_0X8_BYTES + line).cast());
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.cast()));
            let qh = _mm256_loadu_si256(b.add(2 * X8).cast());
            let mut lo = [_mm256_setzero_si256(); 4];
            let mut hi = [_mm256_setzero_si256(); 4];
            for j in 0..4 {
                let c = _mm256_loadu_si256(b.add(2 * X8 + 32 * (1 + j)).cast());
                let (fl, fh) = q5_x8_fifth(qh, 4 * j as i32);
                lo[j] = _mm256_or_si256(_mm256_and_si256(c, low), fl);
                hi[j] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(c), low), fh);
            }
            for t in 0..N {
                let xb = &*xp[t].add(i);
                let q = xb.qs.as_ptr();
                let mut s0 = _mm256_set1_epi32(-2 * xb.sum8);
                let mut s1 = _mm256_setzero_si256();
                for j in 0..4 {
                    let x0 = _mm256_set1_epi32(q.add(4 * j).cast::<i32>().read_unaligned());
                    let x1 = _mm256_set1_epi32(q.add(16 + 4 * j).cast::<i32>().read_unaligned());
                    s0 = udot_acc_avx2(s0, lo[j], x0);
                    s1 = udot_acc_avx2(s1, hi[j], x1);
                }
                let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                acc[t] = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
            }
        }
        let mut out = [[0f32; X8]; N];
        for t in 0..N {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}
