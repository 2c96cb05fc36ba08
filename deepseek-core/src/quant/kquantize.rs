//! ggml's reference quantizers for the formats we write: Q4_K and Q6_K (`quantize_row_q4_K_ref`
//! with `make_qkx2_quants`, `quantize_row_q6_K_ref` with `make_qx_quants`) and Q5_0, llama.cpp's
//! fallback for Q4_K rows that are not whole super-blocks. Floats in, ggml's bytes out; never
//! reads or multiplies them.
//!
//! Each function repeats ggml's float operations one by one in ggml's order, with ggml's
//! `nearest_int` bit trick, so the bytes equal llama-quantize's (no imatrix) for every input:
//! llama.cpp's libggml-base is built for baseline x86-64 without `-ffast-math`, so its compiler
//! neither fuses multiply-adds nor reorders the sums, and neither does Rust.
//! `tests/fixtures/kquants/quantize.*` holds ggml's own output to prove it.

use half::f16;

use super::blocks::{Q5_0_BYTES, QK};
use super::kblocks::{scale_min_k4, Q4_K_BYTES, Q6_K_BYTES, QK_K};

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below it is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5 * 2^23 and reading the
/// mantissa. Copied bit for bit (not `round_ties_even`) so out-of-range values (ggml asserts
/// `|x| <= 4194303` only in debug builds) give ggml's garbage too.
#[inline]
fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

#[inline]
fn f16_bits(f: f32) -> [u8; 2] {
    f16::from_f32(f).to_le_bytes()
}

#[inline]
fn f16_value(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// ggml's `make_qkx2_quants` for 32 values with nmax 15, `rmin = -1`, `rdelta = 0.1`,
/// `nstep = 20`, squared error: fits `x ~ scale * L - min` with weights `w`, trying 21 scales
/// around `15 / (max - min)` and refitting scale and min by weighted least squares for each.
/// Returns `(scale, min)` (min >= 0, subtracted) and writes the levels to `l`.
fn make_qkx2_quants(x: &[f32; 32], w: &[f32; 32], l: &mut [u8]) -> (f32, f32) {
    const NMAX: i32 = 15;
    let (rmin, rdelta, nstep) = (-1.0f32, 0.1f32, 20);
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..32].fill(0);
        return (0.0, -min);
    }
    let mut iscale = NMAX as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..32 {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + NMAX as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..32 {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
            laux[i] = q as u8;
            let lf = q as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..32 {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..32].copy_from_slice(&laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `quantize_row_q4_K_ref`: a whole number of 256-weight super-blocks.
pub fn quantize_row_q4_k(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK_K) && out.len() == x.len() / QK_K * Q4_K_BYTES,
        "quantize_row_q4_k: bad sizes"
    );
    for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q4_K_BYTES)) {
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..QK_K / 32 {
            let xs: &[f32; 32] = xb[32 * j..][..32].try_into().expect("32 values");
            let mut sum_x2 = 0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            let w: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
            let (scale, min) = make_qkx2_quants(xs, &w, &mut l[32 * j..]);
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let sc = &mut y[4..16];
        sc.fill(0);
        for j in 0..QK_K / 32 {
            // ggml stores nearest_int's int in a uint8_t before clamping: keep the wrap.
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        let (d, dmin) = (f16_bits(max_scale / 63.0), f16_bits(max_min / 63.0));
        y[0..2].copy_from_slice(&d);
        y[2..4].copy_from_slice(&dmin);
        for j in 0..QK_K / 32 {
            let (s, m) = scale_min_k4(j, &y[4..16]);
            let d = f16_value(d) * s as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16_value(dmin) * m as f32;
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        let q = &mut y[16..];
        for (c, chunk) in q.chunks_exact_mut(32).enumerate() {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// ggml's `make_qx_quants` for 16 values with nmax 32 and `rmse_type` 1 (weights `x^2`): the
/// signed levels (plus 32) in `l`, the scale returned; tries 18 scales around `-32 / max`.
fn make_qx_quants(x: &[f32], l: &mut [u8]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let iscale = -(NMAX as f32) / max;
    for (o, &v) in l.iter_mut().zip(x) {
        *o = (level(iscale, v) + NMAX) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l.iter_mut().zip(x) {
                *o = (level(iscale, v) + NMAX) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `quantize_row_q6_K_ref`: a whole number of 256-weight super-blocks.
pub fn quantize_row_q6_k(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK_K) && out.len() == x.len() / QK_K * Q6_K_BYTES,
        "quantize_row_q6_k: bad sizes"
    );
    for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q6_K_BYTES)) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            *s = make_qx_quants(&xb[16 * ib..][..16], &mut l[16 * ib..][..16]);
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            y.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16_bits(1.0 / iscale);
        y[208..210].copy_from_slice(&d);
        for (ib, &s) in scales.iter().enumerate() {
            y[192 + ib] = nearest_int(iscale * s).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let d = f16_value(d) * (y[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as u8;
            }
        }
        // Low nibbles: ql[0..32] hold weights 0..32 | 64..96 << 4, ql[32..64] 32..64 | 96..128,
        // per half; high 2-bit pairs: qh[l] holds the four quarters' bits of lane l.
        for half in 0..2 {
            let (j, ql, qh) = (128 * half, 64 * half, 128 + 32 * half);
            for i in 0..32 {
                let q = |k: usize| l[j + i + 32 * k];
                y[ql + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
                y[ql + 32 + i] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
                y[qh + i] =
                    (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
    }
}

/// ggml's `quantize_row_q5_0_ref`: `d = max / -16` for the value of largest magnitude,
/// `q = min(31, trunc(x / d + 16.5))`, the fifth bits gathered in a 32-bit word.
pub fn quantize_row_q5_0(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK) && out.len() == x.len() / QK * Q5_0_BYTES,
        "quantize_row_q5_0: bad sizes"
    );
    for (xb, y) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q5_0_BYTES)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16_bits(d));
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // ggml converts to int8_t, then takes MIN(31, ..) as uint8_t.
            let q0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = ((xb[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            y[6 + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::{quantize_row_q8_0, Q8_0_BYTES};
    use crate::quant::kblocks::tests::{f32s, fixture};

    /// Bytes of `quantize(x)` for rows of `cols`, against ggml's; names the first row and byte
    /// that differ.
    fn check(
        name: &str,
        src: &[f32],
        cols: usize,
        block: (usize, usize),
        q: fn(&[f32], &mut [u8]),
    ) {
        let want = fixture(name);
        let row_bytes = cols / block.0 * block.1;
        assert_eq!(want.len(), src.len() / cols * row_bytes, "{name} size");
        let mut got = vec![0u8; row_bytes];
        for (r, (x, w)) in src
            .chunks_exact(cols)
            .zip(want.chunks_exact(row_bytes))
            .enumerate()
        {
            q(x, &mut got);
            if let Some(b) = (0..row_bytes).find(|&b| got[b] != w[b]) {
                panic!(
                    "{name}: row {r} differs first at byte {b} (block {}, offset {}): ours {} ggml {}",
                    b / block.1,
                    b % block.1,
                    got[b],
                    w[b]
                );
            }
        }
    }

    #[test]
    fn quantizers_equal_ggml_byte_for_byte() {
        let src = f32s(&fixture("quantize.f32"));
        let k4 = (QK_K, Q4_K_BYTES);
        check("quantize.q4_k.bin", &src, 512, k4, quantize_row_q4_k);
        check(
            "quantize.q6_k.bin",
            &src,
            512,
            (QK_K, Q6_K_BYTES),
            quantize_row_q6_k,
        );
        check(
            "quantize.q5_0.bin",
            &src,
            512,
            (QK, Q5_0_BYTES),
            quantize_row_q5_0,
        );
        check(
            "quantize.q8_0.bin",
            &src,
            512,
            (QK, Q8_0_BYTES),
            quantize_row_q8_0,
        );
    }

    #[test]
    fn quantizers_equal_llama_quantize_on_the_crafted_rows() {
        // q4_k.bin, q6_k.bin, q5_0.bin are llama-quantize --pure's own output of these rows.
        let src = f32s(&fixture("crafted.f32"));
        check("q4_k.bin", &src, 256, (QK_K, Q4_K_BYTES), quantize_row_q4_k);
        check("q6_k.bin", &src, 256, (QK_K, Q6_K_BYTES), quantize_row_q6_k);
        check("q5_0.bin", &src, 256, (QK, Q5_0_BYTES), quantize_row_q5_0);
    }

    #[test]
    fn nearest_int_rounds_half_to_even_in_range() {
        for (x, want) in [
            (0.5, 0),
            (1.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (2.4999, 2),
            (-7.6, -8),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
        for i in -4_194_303..=4_194_303i32 {
            if i % 997 == 0 {
                assert_eq!(nearest_int(i as f32 + 0.25), i);
            }
        }
    }
}
