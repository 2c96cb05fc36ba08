//! ggml's 256-weight super-blocks (the K-quants Q2_K..Q6_K and IQ4_XS): byte layouts with size
//! asserts, the exact scalar decode every kernel is tested against, and the Q8_K activations
//! their integer dot products take.
//!
//! Layouts are ggml's `block_q*_K` / `block_iq4_xs` (`ggml-common.h`) byte for byte, so GGUF
//! tensors are used as stored. The decoders repeat `dequantize_row_*`'s float operations in the
//! same order (`(d * scale) * q - (dmin * min)`, never fused), so they give ggml's values bit for
//! bit; `tests/fixtures/kquants/` holds llama.cpp's own output to prove it.

use half::f16;

/// Weights per super-block.
pub const QK_K: usize = 256;
/// Bytes of the 6-bit scale/min pairs of Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;
/// Bytes of one Q2_K super-block: 16 scale/min nibble pairs, 2-bit quants, f16 `d` and `dmin`.
pub const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 * 2;
/// Bytes of one Q3_K super-block: high-bit mask, 2-bit quants, 16 6-bit scales, f16 `d`.
pub const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
/// Bytes of one Q4_K super-block: f16 `d` and `dmin`, 8 6-bit scale/min pairs, nibbles.
pub const Q4_K_BYTES: usize = 2 * 2 + K_SCALE_SIZE + QK_K / 2;
/// Bytes of one Q5_K super-block: as Q4_K plus one high bit per weight.
pub const Q5_K_BYTES: usize = 2 * 2 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2;
/// Bytes of one Q6_K super-block: low nibbles, high 2-bit pairs, 16 i8 scales, f16 `d`.
pub const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
/// Bytes of one IQ4_XS super-block: f16 `d`, 8 6-bit scales (high 2 bits, low 4 bits), codes.
pub const IQ4_XS_BYTES: usize = 2 + 2 + QK_K / 64 + QK_K / 2;

// ggml's static_asserts (ggml-common.h), so a layout typo cannot pass silently.
const _: () = assert!(
    Q2_K_BYTES == 84
        && Q3_K_BYTES == 110
        && Q4_K_BYTES == 144
        && Q5_K_BYTES == 176
        && Q6_K_BYTES == 210
        && IQ4_XS_BYTES == 136
);

/// ggml's `kvalues_iq4nl`: the 16 levels of IQ4_NL and IQ4_XS codes.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (< 8) of Q4_K / Q5_K.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 16 signed scales of a Q3_K super-block (6 bits each, minus 32): low nibbles in bytes
/// 0..8 (scales 0..8 low, 8..16 high nibble), top 2 bits in bytes 8..12.
#[inline]
pub fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    std::array::from_fn(|k| {
        let low = if k < 8 { s[k] & 0xF } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// The 6-bit scale (before `- 32`) of 32-weight sub-block `ib` of an IQ4_XS super-block.
#[inline]
pub fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
    let high = ((scales_h >> (2 * ib)) & 3) as u8;
    (low | (high << 4)) as i32
}

/// Weight `i` (< 256) of a Q2_K super-block.
pub fn q2_k_value(b: &[u8], i: usize) -> f32 {
    let (n, j, l) = (i / 128, i % 128 / 32, i % 32);
    let q = (b[16 + 32 * n + l] >> (2 * j)) & 3;
    let sc = b[8 * n + 2 * j + l / 16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
    dl * q as f32 - ml
}

/// ggml's `dequantize_row_q2_K` for one super-block.
pub fn q2_k_decode(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (k, o) in out[..QK_K].chunks_exact_mut(16).enumerate() {
        // Sub-block k: half n, shift pair j, bytes 0..16 or 16..32 of the half's 32 quants.
        let (n, j, h) = (k / 8, k % 8 / 2, k % 2);
        let sc = b[k];
        let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
        let q = &b[16 + 32 * n + 16 * h..][..16];
        for (v, &qb) in o.iter_mut().zip(q) {
            *v = dl * ((qb >> (2 * j)) & 3) as f32 - ml;
        }
    }
}

/// Weight `i` (< 256) of a Q3_K super-block.
pub fn q3_k_value(b: &[u8], i: usize) -> f32 {
    let (n, j, l) = (i / 128, i % 128 / 32, i % 32);
    let q = ((b[32 + 32 * n + l] >> (2 * j)) & 3) as i32;
    let high = b[l] & (1 << (4 * n + j)) != 0;
    let scale = q3_k_scales(&b[96..108])[8 * n + 2 * j + l / 16];
    let dl = f16_at(b, 108) * (scale as i32) as f32;
    dl * (q - if high { 0 } else { 4 }) as f32
}

/// ggml's `dequantize_row_q3_K` for one super-block.
pub fn q3_k_decode(b: &[u8], out: &mut [f32]) {
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (k, o) in out[..QK_K].chunks_exact_mut(16).enumerate() {
        let (n, j, h) = (k / 8, k % 8 / 2, k % 2);
        let dl = d * (scales[k] as i32) as f32;
        let mask = 1u8 << (4 * n + j);
        for (l, v) in (16 * h..16 * h + 16).zip(o.iter_mut()) {
            let q = ((b[32 + 32 * n + l] >> (2 * j)) & 3) as i32;
            let high = if b[l] & mask != 0 { 0 } else { 4 };
            *v = dl * (q - high) as f32;
        }
    }
}

/// Weight `i` (< 256) of a Q4_K super-block.
pub fn q4_k_value(b: &[u8], i: usize) -> f32 {
    let (j, l) = (i / 32, i % 32);
    let q = b[16 + 32 * (j / 2) + l];
    let q = if j % 2 == 0 { q & 0xF } else { q >> 4 };
    let (sc, m) = scale_min_k4(j, &b[4..16]);
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    (d * sc as f32) * q as f32 - dmin * m as f32
}

/// ggml's `dequantize_row_q4_K` for one super-block.
pub fn q4_k_decode(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &b[4..16]);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let q = &b[16 + 32 * (j / 2)..][..32];
        let shift = 4 * (j % 2);
        for (v, &qb) in o.iter_mut().zip(q) {
            *v = d1 * ((qb >> shift) & 0xF) as f32 - m1;
        }
    }
}

/// Weight `i` (< 256) of a Q5_K super-block.
pub fn q5_k_value(b: &[u8], i: usize) -> f32 {
    let (j, l) = (i / 32, i % 32);
    let q = b[48 + 32 * (j / 2) + l];
    let q = if j % 2 == 0 { q & 0xF } else { q >> 4 } | (((b[16 + l] >> j) & 1) << 4);
    let (sc, m) = scale_min_k4(j, &b[4..16]);
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    (d * sc as f32) * q as f32 - dmin * m as f32
}

/// ggml's `dequantize_row_q5_K` for one super-block.
pub fn q5_k_decode(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, &b[4..16]);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let shift = 4 * (j % 2);
        for (l, v) in o.iter_mut().enumerate() {
            let q = ((b[48 + 32 * (j / 2) + l] >> shift) & 0xF) | (((b[16 + l] >> j) & 1) << 4);
            *v = d1 * q as f32 - m1;
        }
    }
}

/// Weight `i` (< 256) of a Q6_K super-block.
pub fn q6_k_value(b: &[u8], i: usize) -> f32 {
    let (n, k, l) = (i / 128, i % 128 / 32, i % 32);
    let ql = b[64 * n + 32 * (k % 2) + l];
    let low = if k < 2 { ql & 0xF } else { ql >> 4 };
    let high = (b[128 + 32 * n + l] >> (2 * k)) & 3;
    let q = (low | (high << 4)) as i32 - 32;
    let sc = b[192 + 8 * n + 2 * k + l / 16] as i8;
    f16_at(b, 208) * sc as f32 * q as f32
}

/// ggml's `dequantize_row_q6_K` for one super-block.
pub fn q6_k_decode(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for (s, o) in out[..QK_K].chunks_exact_mut(16).enumerate() {
        // Sixteen weights: half n, quarter k, lanes l0..l0 + 16 of the quarter.
        let (n, k, l0) = (s / 8, s % 8 / 2, 16 * (s % 2));
        let sc = b[192 + 8 * n + 2 * k + s % 2] as i8;
        let ds = d * sc as f32;
        for (l, v) in (l0..l0 + 16).zip(o.iter_mut()) {
            let ql = b[64 * n + 32 * (k % 2) + l];
            let low = if k < 2 { ql & 0xF } else { ql >> 4 };
            let high = (b[128 + 32 * n + l] >> (2 * k)) & 3;
            *v = ds * ((low | (high << 4)) as i32 - 32) as f32;
        }
    }
}

/// Weight `i` (< 256) of an IQ4_XS super-block.
pub fn iq4_xs_value(b: &[u8], i: usize) -> f32 {
    let (ib, j) = (i / 32, i % 32);
    let dl = f16_at(b, 0) * (iq4_xs_scale(b, ib) - 32) as f32;
    let q = b[8 + 16 * ib + j % 16];
    let q = if j < 16 { q & 0xF } else { q >> 4 };
    dl * KVALUES_IQ4NL[q as usize] as f32
}

/// ggml's `dequantize_row_iq4_xs` for one super-block.
pub fn iq4_xs_decode(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (ib, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
        let dl = d * (iq4_xs_scale(b, ib) - 32) as f32;
        let q = &b[8 + 16 * ib..][..16];
        for (j, &qb) in q.iter().enumerate() {
            o[j] = dl * KVALUES_IQ4NL[(qb & 0xF) as usize] as f32;
            o[j + 16] = dl * KVALUES_IQ4NL[(qb >> 4) as usize] as f32;
        }
    }
}

/// Activations quantised as ggml's `block_q8_K`: 256 int8 values, a float32 scale and the sums
/// of each 16 values, which the K-quants' minimums (Q2_K, Q4_K, Q5_K) and offsets (Q3_K, Q6_K)
/// multiply instead of touching every weight.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct ActBlockK {
    /// Quantised values (first, so 32-byte loads of them are aligned).
    pub qs: [i8; QK_K],
    /// `sum(qs[16 k..16 k + 16])` for each k.
    pub bsums: [i16; QK_K / 16],
    /// Scale: value = d * q.
    pub d: f32,
}

impl Default for ActBlockK {
    fn default() -> Self {
        ActBlockK {
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
            d: 0.0,
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`: `iscale = -127 / x_max` for the value of largest magnitude,
/// `q = min(127, round_even(iscale * x))`, `d = 1 / iscale` (values stay in -127..=127, so the
/// kernels' sign tricks never meet -128).
pub fn quantize_act_k(x: &[f32], out: &mut [ActBlockK]) {
    debug_assert!(x.len() == out.len() * QK_K);
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *ob = ActBlockK::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (o, &v) in ob.qs.iter_mut().zip(xb) {
            *o = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, q) in ob.bsums.iter_mut().zip(ob.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        ob.d = 1.0 / iscale;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bytes::Bytes;
    use crate::quant::{Format, GgmlType, Weight};

    /// A file of `tests/fixtures/kquants/` (llama.cpp's output, see tools/make_kquant_fixtures.py).
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kquants/");
        std::fs::read(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The formats with goldens, by the ggml type llama-quantize was asked for.
    pub(crate) const GOLDEN: [(GgmlType, &str); 9] = [
        (GgmlType::Q4_K, "q4_k"),
        (GgmlType::Q6_K, "q6_k"),
        (GgmlType::Q5_K, "q5_k"),
        (GgmlType::Q3_K, "q3_k"),
        (GgmlType::Q2_K, "q2_k"),
        (GgmlType::IQ4_NL, "iq4_nl"),
        (GgmlType::IQ4_XS, "iq4_xs"),
        (GgmlType::Q5_0, "q5_0"),
        (GgmlType::Q5_1, "q5_1"),
    ];
    pub(crate) const ROWS: usize = 8;
    pub(crate) const COLS: usize = 256;

    #[test]
    fn decode_equals_llama_cpp_bit_for_bit() {
        for (ty, name) in GOLDEN {
            let format = Format::from_ggml(ty).unwrap_or_else(|| panic!("{ty} maps to no format"));
            assert_eq!(format.info().ggml, Some(ty));
            assert_eq!(
                (format.info().block, format.block_bytes()),
                (ty.block_size(), ty.block_bytes()),
                "{ty}: block size and bytes agree with ggml's type table"
            );
            let want = f32s(&fixture(&format!("{name}.f32")));
            let w = Weight::new(
                ROWS,
                COLS,
                format.clone(),
                Bytes::owned(fixture(&format!("{name}.bin"))),
            )
            .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            // Whole rows (block decoders), every weight on its own (block_value), and ranges
            // that start and end inside blocks.
            assert_eq!(bits(&w.to_f32()), bits(&want), "{ty} rows");
            let (value, bytes) = (format.block_value().unwrap(), format.block_bytes());
            let block = format.info().block;
            for (i, &v) in want.iter().enumerate() {
                let (r, c) = (i / COLS, i % COLS);
                let b = &w.row_bytes(r)[c / block * bytes..][..bytes];
                assert_eq!(
                    value(b, c % block).to_bits(),
                    v.to_bits(),
                    "{ty} weight {r},{c}"
                );
            }
            for (c0, len) in [(1, 100), (37, 219), (255, 1), (0, 31), (100, 156)] {
                let mut got = vec![f32::NAN; len];
                w.decode(3, c0, &mut got);
                assert_eq!(
                    bits(&got),
                    bits(&want[3 * COLS + c0..][..len]),
                    "{ty} {c0}+{len}"
                );
            }
            // The ggml bytes come back unchanged for a GGUF writer.
            let (gty, data) = w.to_ggml().unwrap();
            assert_eq!((gty, &data[..]), (ty, &fixture(&format!("{name}.bin"))[..]));
        }
    }

    #[test]
    fn q8_k_activations_equal_ggml_quantize_row_q8_k_ref() {
        let x = f32s(&fixture("act.f32"));
        let mut ours = vec![ActBlockK::default(); x.len() / QK_K];
        quantize_act_k(&x, &mut ours);
        // ggml's block_q8_K: f32 d, 256 x i8, 16 x i16.
        let want = fixture("act_q8_k.bin");
        for (b, o) in want.chunks_exact(4 + QK_K + 32).zip(&ours) {
            assert_eq!(o.d.to_bits(), u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            assert!(o
                .qs
                .iter()
                .zip(&b[4..4 + QK_K])
                .all(|(&q, &w)| q as u8 == w));
            for (k, s) in o.bsums.iter().enumerate() {
                assert_eq!(*s, i16::from_le_bytes([b[260 + 2 * k], b[261 + 2 * k]]));
            }
        }
    }

    #[test]
    fn q3_k_scales_unpack_as_ggml_documents() {
        // Scale k = (low nibble) | (2 high bits) << 4, minus 32; set each field to its index.
        let mut s = [0u8; 12];
        for k in 0..16u8 {
            let v = k * 4 + 3; // 6 bits, distinct low and high parts
            let (lo, hi) = (v & 0xF, v >> 4);
            s[(k % 8) as usize] |= if k < 8 { lo } else { lo << 4 };
            s[8 + (k % 4) as usize] |= hi << (2 * (k / 4));
        }
        let got = q3_k_scales(&s);
        for k in 0..16 {
            assert_eq!(got[k] as i32, (k as i32 * 4 + 3) - 32, "scale {k}");
        }
    }
}
