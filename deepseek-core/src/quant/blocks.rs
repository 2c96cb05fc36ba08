//! ggml-compatible 32-weight blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL): byte layouts, and
//! the scalar reference quantisation and dequantisation every kernel is tested against.
//!
//! Layouts match ggml's `block_q8_0` / `block_q4_0` / ... byte for byte, so GGUF tensors can be
//! used without repacking: Q8_0 = f16 scale + 32 x i8; Q4_0 = f16 scale + 16 bytes whose low
//! nibbles are weights 0..16 and high nibbles weights 16..32, each `(nibble - 8) * d`; Q5_0/Q5_1
//! add a 32-bit word of fifth bits; IQ4_NL maps each nibble through `kvalues_iq4nl`.
//!
//! Matrices converted at load whose row count is a multiple of 8 are stored in the x8 forms
//! instead: the same blocks, 8 rows interleaved (as llama.cpp repacks Q4_0 for its CPU GEMMs),
//! so the kernels do the per-block float work once for 8 rows.

use half::f16;

/// Weights per block.
pub const QK: usize = 32;
/// Bytes of one Q8_0 block.
pub const Q8_0_BYTES: usize = 2 + QK;
/// Bytes of one Q4_0 block.
pub const Q4_0_BYTES: usize = 2 + QK / 2;
/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub const Q4_1_BYTES: usize = 4 + QK / 2;

/// Bytes of one Q5_0 block: f16 scale, 32 fifth bits, 16 bytes of nibbles.
pub const Q5_0_BYTES: usize = 2 + 4 + QK / 2;
/// Bytes of one Q5_1 block: f16 scale and minimum, 32 fifth bits, 16 bytes of nibbles.
pub const Q5_1_BYTES: usize = 4 + 4 + QK / 2;
/// Bytes of one IQ4_NL block: f16 scale, 16 bytes of codebook indices.
pub const IQ4_NL_BYTES: usize = 2 + QK / 2;

const _: () = assert!(
    Q8_0_BYTES == 34
        && Q4_0_BYTES == 18
        && Q4_1_BYTES == 20
        && Q5_0_BYTES == 22
        && Q5_1_BYTES == 24
        && IQ4_NL_BYTES == 18
);

/// Rows interleaved per group in the x8 layouts (Q4_0x8, Q8_0x8, Q4_Kx8, Q6_Kx8).
pub const X8: usize = 8;
/// Bytes of one Q4_0x8 block: block `i` of 8 rows (8 f16 scales, then 4 chunks of 32 bytes).
pub const Q4_0X8_BYTES: usize = X8 * Q4_0_BYTES;
/// Bytes of one Q8_0x8 block: block `i` of 8 rows (8 f16 scales, then 8 chunks of 32 bytes).
pub const Q8_0X8_BYTES: usize = X8 * Q8_0_BYTES;
/// XORed into every Q8_0x8 weight byte: stored as unsigned `w + 128`, the operand `vpdpbusd`
/// wants, and the `128 * sum(x)` this adds is taken off through [`ActBlock::sum8`].
pub const Q8_0X8_XOR: u8 = 0x80;

/// Offset, inside an x8 block, of quant byte `j` of row `r`: chunk `j / 4` holds bytes
/// `4 * (j / 4)..+4` of all 8 rows, row after row, so one 32-byte load gives each row's 4 bytes
/// of the same columns in its own 32-bit lane (one `vpdpbusd` per 4 byte columns x 8 rows).
#[inline]
pub fn x8_offset(r: usize, j: usize) -> usize {
    2 * X8 + (j / 4) * 4 * X8 + r * 4 + j % 4
}

/// The byte range of a ggml block that is not its f16 fields (`f16_fields`, offsets in the
/// block): the quants, plus K-quants' packed scales. The f16 fields are all at the start (Q4_0,
/// Q4_K) or all at the end (Q6_K), so the rest is one range.
pub fn x8_body(f16_fields: &[usize], block_bytes: usize) -> std::ops::Range<usize> {
    let nf = f16_fields.len();
    if f16_fields.first() == Some(&0) {
        2 * nf..block_bytes
    } else {
        0..block_bytes - 2 * nf
    }
}

/// Offset, inside an x8 block of rows with `nf` f16 fields, of body byte `j` of row `r`: the
/// f16 fields come first, field by field, 8 rows each; then chunk `j / 4` holds body bytes
/// `4 * (j / 4)..+4` of all 8 rows, row after row, as in [`x8_offset`].
#[inline]
pub fn x8_body_offset(nf: usize, r: usize, j: usize) -> usize {
    2 * nf * X8 + (j / 4) * 4 * X8 + r * 4 + j % 4
}

/// Writes the x8 form of 8 ggml rows of `block_bytes`-byte blocks whose f16 fields are at
/// `f16_fields` (offsets in the block), every body byte XORed with `xor`.
pub fn interleave_x8(
    rows: &[&[u8]; X8],
    f16_fields: &[usize],
    block_bytes: usize,
    xor: u8,
    out: &mut [u8],
) {
    let nb = rows[0].len() / block_bytes;
    assert!(
        rows.iter().all(|r| r.len() == nb * block_bytes) && out.len() == nb * X8 * block_bytes,
        "interleave_x8: wrong lengths"
    );
    let (nf, body) = (f16_fields.len(), x8_body(f16_fields, block_bytes));
    for (i, ob) in out.chunks_exact_mut(X8 * block_bytes).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let b = &row[i * block_bytes..][..block_bytes];
            for (f, &at) in f16_fields.iter().enumerate() {
                ob[2 * (f * X8 + r)..][..2].copy_from_slice(&b[at..at + 2]);
            }
            for (j, &v) in b[body.clone()].iter().enumerate() {
                ob[x8_body_offset(nf, r, j)] = v ^ xor;
            }
        }
    }
}

/// Row `r` of an x8 block, written to `out` as the ggml block it came from (`f16_fields` as
/// in [`interleave_x8`]).
pub fn x8_row_block(block: &[u8], r: usize, f16_fields: &[usize], xor: u8, out: &mut [u8]) {
    let (nf, body) = (f16_fields.len(), x8_body(f16_fields, out.len()));
    for (f, &at) in f16_fields.iter().enumerate() {
        out[at..at + 2].copy_from_slice(&block[2 * (f * X8 + r)..][..2]);
    }
    // Four bytes at a time: a row's bytes are contiguous within each chunk.
    let xor4 = u32::from_ne_bytes([xor; 4]);
    for (j, o) in out[body].chunks_exact_mut(4).enumerate() {
        let at = x8_body_offset(nf, r, 4 * j);
        let v = u32::from_ne_bytes(block[at..at + 4].try_into().expect("4 bytes")) ^ xor4;
        o.copy_from_slice(&v.to_ne_bytes());
    }
}

/// The f16 scale at the start of a block.
#[inline]
pub fn block_scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// ggml's `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK) && out.len() == x.len() / QK * Q8_0_BYTES,
        "quantize_row_q8_0: bad sizes"
    );
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, &v) in ob[2..].iter_mut().zip(xb) {
            *o = (v * id).round() as i8 as u8;
        }
    }
}

/// ggml's `quantize_row_q4_0_ref`: `d = max / -8` for the value of largest magnitude,
/// `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_row_q4_0(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK) && out.len() == x.len() / QK * Q4_0_BYTES,
        "quantize_row_q4_0: bad sizes"
    );
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q4_0_BYTES)) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..QK / 2 {
            let q0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((xb[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            ob[2 + j] = q0 | (q1 << 4);
        }
    }
}

/// Q4_1 in ggml's layout (`q * d + m`, f16 `d` and `m`), with the scale and minimum refined
/// by least squares: start from ggml's reference choice (`d = (max - min) / 15`, `m = min`),
/// then up to three times refit `(d, m)` to the assigned levels and re-assign, keeping the best
/// fit. On Gaussian weights this cuts the RMS error by ~7% against the reference rule (~15%
/// against Q4_0); the bytes stay readable by any ggml Q4_1 reader.
pub fn quantize_row_q4_1(x: &[f32], out: &mut [u8]) {
    assert!(
        x.len().is_multiple_of(QK) && out.len() == x.len() / QK * Q4_1_BYTES,
        "quantize_row_q4_1: bad sizes"
    );
    for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(Q4_1_BYTES)) {
        let min = xb.iter().copied().fold(f32::INFINITY, f32::min);
        let max = xb.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut q = [0u8; QK];
        let (mut d, mut m) = ((max - min) / 15.0, min);
        let mut best = (f32::INFINITY, d, m);
        for _ in 0..4 {
            // Assign levels with the f16-rounded parameters that will be stored.
            let (dr, mr) = (f16::from_f32(d).to_f32(), f16::from_f32(m).to_f32());
            let id = if dr != 0.0 { 1.0 / dr } else { 0.0 };
            let mut err = 0.0;
            for (qi, &v) in q.iter_mut().zip(xb) {
                *qi = ((v - mr) * id).round().clamp(0.0, 15.0) as u8;
                let e = *qi as f32 * dr + mr - v;
                err += e * e;
            }
            if err < best.0 {
                best = (err, d, m);
            }
            // Least-squares (d, m) for these levels.
            let n = QK as f32;
            let (mut sq, mut sqq, mut sx, mut sqx) = (0f32, 0f32, 0f32, 0f32);
            for (&qi, &v) in q.iter().zip(xb) {
                let qf = qi as f32;
                sq += qf;
                sqq += qf * qf;
                sx += v;
                sqx += qf * v;
            }
            let den = n * sqq - sq * sq;
            if den <= 0.0 {
                break;
            }
            d = ((n * sqx - sq * sx) / den).max(0.0);
            m = (sx - d * sq) / n;
        }
        let (_, d, m) = best;
        let (dr, mr) = (f16::from_f32(d), f16::from_f32(m));
        ob[..2].copy_from_slice(&dr.to_le_bytes());
        ob[2..4].copy_from_slice(&mr.to_le_bytes());
        let (dr, mr) = (dr.to_f32(), mr.to_f32());
        let id = if dr != 0.0 { 1.0 / dr } else { 0.0 };
        for j in 0..QK / 2 {
            let level = |v: f32| ((v - mr) * id).round().clamp(0.0, 15.0) as u8;
            ob[4 + j] = level(xb[j]) | (level(xb[j + QK / 2]) << 4);
        }
    }
}

/// Weight `i` (< 32) of a Q4_1 block.
#[inline]
pub fn q4_1_value(block: &[u8], i: usize) -> f32 {
    let b = block[4 + i % (QK / 2)];
    let q = if i < QK / 2 { b & 0xF } else { b >> 4 };
    let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
    block_scale(block) * q as f32 + m
}

/// The f16 minimum of a Q4_1 block.
#[inline]
pub fn block_min(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[2], block[3]]).to_f32()
}

/// Weight `i` (< 32) of a Q8_0 block.
#[inline]
pub fn q8_0_value(block: &[u8], i: usize) -> f32 {
    block_scale(block) * (block[2 + i] as i8) as f32
}

/// Weight `i` (< 32) of a Q4_0 block.
#[inline]
pub fn q4_0_value(block: &[u8], i: usize) -> f32 {
    let b = block[2 + i % (QK / 2)];
    let q = if i < QK / 2 { b & 0xF } else { b >> 4 };
    block_scale(block) * (q as i32 - 8) as f32
}

/// The 5-bit level (0..32) of weight `i` (< 32) of a Q5_0/Q5_1 block whose fifth bits are at
/// `qh` and nibbles at `qs`: ggml's `((qs[j] & 0xF) | ((qh >> j) << 4) & 0x10)` and
/// `((qs[j] >> 4) | (qh >> (j + 12)) & 0x10)`.
#[inline]
fn q5_level(block: &[u8], qh: usize, qs: usize, i: usize) -> i32 {
    let h = u32::from_le_bytes([block[qh], block[qh + 1], block[qh + 2], block[qh + 3]]);
    let b = block[qs + i % (QK / 2)];
    let low = if i < QK / 2 { b & 0xF } else { b >> 4 };
    (low as u32 | (((h >> i) & 1) << 4)) as i32
}

/// The integer level of weight `i` (< 32) of a Q5_0, Q5_1 or IQ4_NL block, before its scale
/// (and Q5_1's minimum): what the integer dot products multiply.
#[inline]
pub fn level(format_ggml: crate::quant::GgmlType, block: &[u8], i: usize) -> i32 {
    use crate::quant::GgmlType as T;
    match format_ggml {
        T::Q5_0 => q5_level(block, 2, 6, i) - 16,
        T::Q5_1 => q5_level(block, 4, 8, i),
        T::IQ4_NL => {
            let b = block[2 + i % (QK / 2)];
            let q = if i < QK / 2 { b & 0xF } else { b >> 4 };
            super::kblocks::KVALUES_IQ4NL[q as usize] as i32
        }
        other => panic!("blocks::level: {other} has no plain integer level"),
    }
}

/// Weight `i` (< 32) of a Q5_0 block: `(q - 16) * d`.
#[inline]
pub fn q5_0_value(block: &[u8], i: usize) -> f32 {
    level(crate::quant::GgmlType::Q5_0, block, i) as f32 * block_scale(block)
}

/// Weight `i` (< 32) of a Q5_1 block: `q * d + m`.
#[inline]
pub fn q5_1_value(block: &[u8], i: usize) -> f32 {
    level(crate::quant::GgmlType::Q5_1, block, i) as f32 * block_scale(block) + block_min(block)
}

/// Weight `i` (< 32) of an IQ4_NL block: `d * kvalues_iq4nl[code]`.
#[inline]
pub fn iq4_nl_value(block: &[u8], i: usize) -> f32 {
    block_scale(block) * level(crate::quant::GgmlType::IQ4_NL, block, i) as f32
}

/// Activations quantised to 8 bits per 32 values, with a float32 scale: the right-hand side of
/// the integer dot products (kept in f32, not ggml's f16, since it never leaves the process).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(4))]
pub struct ActBlock {
    /// Scale: value = d * q.
    pub d: f32,
    /// Quantised values.
    pub qs: [i8; QK],
    /// `d * sum(qs)`: what a block format's per-block minimum multiplies (Q4_1).
    pub s: f32,
    /// `8 * sum(qs)`: Q4_0's offset, so its kernels multiply unsigned nibbles directly.
    pub sum8: i32,
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22`: adding 1.5 x 2^23 leaves
/// no fraction bits, so the FPU's own rounding does it. (`f32::round_ties_even` is a libm call
/// on baseline x86-64, which cost a tenth of prefill time in activation quantisation.)
#[inline(always)]
pub fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Quantises `x` (a multiple of 32 long) into `out` (one block per 32 values) exactly as ggml's
/// CPU backend quantises activations (`quantize_row_q8_0`/`_q8_1`): `q = round_even(x * 127 /
/// amax)`, the scale and `d * sum(q)` rounded to f16 as ggml stores them. Matching ggml here
/// makes a GGUF give llama.cpp's logits up to summation order, not up to a second, independent
/// quantisation noise.
pub fn quantize_act(x: &[f32], out: &mut [ActBlock]) {
    debug_assert!(x.len() == out.len() * QK);
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        ob.d = f16::from_f32(d).to_f32();
        let mut sum = 0i32;
        for (o, &v) in ob.qs.iter_mut().zip(xb) {
            *o = round_even(v * id) as i8;
            sum += *o as i32;
        }
        ob.s = f16::from_f32(d * sum as f32).to_f32();
        ob.sum8 = 8 * sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_and_q4_0_round_trip_within_a_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut q8 = vec![0u8; 3 * Q8_0_BYTES];
        quantize_row_q8_0(&x, &mut q8);
        let mut q4 = vec![0u8; 3 * Q4_0_BYTES];
        quantize_row_q4_0(&x, &mut q4);
        for (i, &v) in x.iter().enumerate() {
            let (b8, b4) = (&q8[i / QK * Q8_0_BYTES..], &q4[i / QK * Q4_0_BYTES..]);
            assert!((q8_0_value(b8, i % QK) - v).abs() <= block_scale(b8).abs() * 0.5 + 1e-3);
            // Q4_0 spans -8d..7d: the end opposite the largest magnitude clamps by up to one step.
            assert!((q4_0_value(b4, i % QK) - v).abs() <= block_scale(b4).abs() * 1.0 + 1e-2);
        }
    }

    #[test]
    fn q4_1_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 101) as f32 - 20.0) / 7.0)
            .collect();
        let mut q = vec![0u8; 2 * Q4_1_BYTES];
        quantize_row_q4_1(&x, &mut q);
        for (i, &v) in x.iter().enumerate() {
            let b = &q[i / QK * Q4_1_BYTES..];
            // f16 rounding of d and m adds a little to the half step.
            assert!(
                (q4_1_value(b, i % QK) - v).abs() <= block_scale(b) * 0.5 + 2e-2,
                "{i}"
            );
        }
    }

    #[test]
    fn q4_1_is_more_accurate_than_q4_0_on_gaussian_weights() {
        // Box-Muller normals from a fixed LCG.
        let mut seed = 42u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let x: Vec<f32> = (0..32 * 2000)
            .map(|_| {
                ((-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos())
                    as f32
            })
            .collect();
        let rms = |value: fn(&[u8], usize) -> f32, bytes: usize, q: &[u8]| {
            let e: f64 = x
                .iter()
                .enumerate()
                .map(|(i, &v)| (value(&q[i / QK * bytes..], i % QK) - v) as f64)
                .map(|e| e * e)
                .sum();
            (e / x.len() as f64).sqrt()
        };
        let mut q0 = vec![0u8; x.len() / QK * Q4_0_BYTES];
        quantize_row_q4_0(&x, &mut q0);
        let mut q1 = vec![0u8; x.len() / QK * Q4_1_BYTES];
        quantize_row_q4_1(&x, &mut q1);
        let (e0, e1) = (
            rms(q4_0_value, Q4_0_BYTES, &q0),
            rms(q4_1_value, Q4_1_BYTES, &q1),
        );
        assert!(e1 < 0.9 * e0, "q4_1 rms {e1} vs q4_0 {e0}");
    }

    #[test]
    fn q4_0_matches_ggml_layout() {
        // d = max / -8 with max = -8 (largest magnitude), so d = 1 and q = x + 8.
        let mut x = [0f32; 32];
        x[0] = -8.0;
        x[1] = 3.0;
        x[16] = 7.0;
        x[17] = -1.0;
        let mut q = [0u8; Q4_0_BYTES];
        quantize_row_q4_0(&x, &mut q);
        assert_eq!(block_scale(&q), 1.0);
        assert_eq!(q[2], 15 << 4, "weight 0 low nibble, weight 16 high nibble");
        assert_eq!(q[3], 11 | (7 << 4));
        assert_eq!(q[4], 8 | (8 << 4), "zeros map to 8");
    }
}
