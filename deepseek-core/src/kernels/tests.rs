//! Every SIMD level against the scalar reference, on random data with odd sizes and tails.

use super::*;
use crate::bytes::Bytes;
use crate::quant::kblocks::tests::{f32s, fixture, COLS as GCOLS, GOLDEN, ROWS as GROWS};
use crate::quant::{GgmlType, WeightDtype};

struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.f32().to_bits() >> 7) as u8).collect()
    }
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1.0)
}

/// The formats read as stored from GGUF files, with no quantiser of ours: tested on random
/// bytes.
const STORED: [Format; 9] = [
    Format::Q5_0,
    Format::Q5_1,
    Format::IQ4_NL,
    Format::Q2_K,
    Format::Q3_K,
    Format::Q4_K,
    Format::Q5_K,
    Format::Q6_K,
    Format::IQ4_XS,
];

/// Offsets of the f16 scales (and minimums) inside one block of `format`.
fn scale_offsets(format: &Format) -> &'static [usize] {
    match format {
        Format::Q5_0 | Format::IQ4_NL | Format::IQ4_XS => &[0],
        Format::Q5_1 | Format::Q4_K | Format::Q5_K => &[0, 2],
        Format::Q2_K => &[80, 82],
        Format::Q3_K => &[108],
        Format::Q6_K => &[208],
        other => panic!("{other:?} has no random form"),
    }
}

/// A `rows x cols` matrix of `format` with random quant, scale and code bits, and random
/// finite f16 block scales of magnitude 1e-3..1e-2 (so products stay in a sane range).
fn random_stored(rng: &mut Rng, format: &Format, rows: usize, cols: usize) -> Weight {
    let bytes = format.block_bytes();
    let mut data = rng.bytes(rows * format.row_bytes(cols).unwrap());
    for b in data.chunks_exact_mut(bytes) {
        for &at in scale_offsets(format) {
            let v = (rng.f32() * 0.009).abs() + 0.001;
            let v = if rng.f32() < 0.0 { -v } else { v };
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    Weight::new(rows, cols, format.clone(), Bytes::owned(data)).unwrap()
}

/// Weights of every format, `rows x cols` (cols a multiple of 32 for the block formats, of 256
/// for the super-block ones).
fn weights(rng: &mut Rng, rows: usize, cols: usize) -> Vec<Weight> {
    let base = Weight::from_f32(rows, cols, &rng.vec(rows * cols));
    let mut ws = vec![
        base.clone(),
        base.convert(WeightDtype::BF16),
        base.convert(WeightDtype::F16),
    ];
    if cols.is_multiple_of(QK) {
        ws.push(base.convert(WeightDtype::Q8_0));
        ws.push(base.convert(WeightDtype::Q4_0));
        ws.push(base.convert(WeightDtype::Q4_1));
    }
    for format in STORED {
        if cols.is_multiple_of(format.info().block) {
            ws.push(random_stored(rng, &format, rows, cols));
        }
    }
    // FP8 with partial blocks: 3 x 5 scale grid of 64 x 48 blocks, avoiding NaN codes.
    let data: Vec<u8> = rng
        .bytes(rows * cols)
        .into_iter()
        .map(|b| if b & 0x7F == 0x7F { b ^ 1 } else { b })
        .collect();
    let block = [64, 48];
    let scales = rng.vec(rows.div_ceil(64) * cols.div_ceil(48));
    ws.push(Weight::fp8_from_parts(rows, cols, data, scales, block).unwrap());
    ws
}

#[test]
fn dot_and_axpy_match_scalar_on_every_length() {
    let mut rng = Rng(1);
    for isa in Isa::available() {
        for n in (0..70).chain([127, 1000, 1027]) {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let want = dot_with(Isa::Scalar, &a, &b);
            assert!(
                close(dot_with(isa, &a, &b), want, n as f32),
                "{isa:?} dot n={n}"
            );
            let mut y1 = rng.vec(n);
            let mut y2 = y1.clone();
            axpy_with(Isa::Scalar, 0.37, &a, &mut y1);
            axpy_with(isa, 0.37, &a, &mut y2);
            assert!(
                y1.iter().zip(&y2).all(|(p, q)| close(*p, *q, 1.0)),
                "{isa:?} axpy n={n}"
            );
        }
    }
}

#[test]
fn decode_matches_scalar_for_every_format_and_offset() {
    let mut rng = Rng(2);
    for (rows, cols) in [(3, 160), (130, 96), (5, 7), (2, 259), (16, 288)] {
        for w in weights(&mut rng, rows, cols) {
            for isa in Isa::available() {
                for row in [0, rows / 2, rows - 1] {
                    for (c0, len) in [
                        (0, cols),
                        (0, cols.min(128)),
                        (cols / 2, cols - cols / 2),
                        (1, cols - 1),
                    ] {
                        let mut want = vec![0f32; len];
                        let mut got = vec![0f32; len];
                        w.decode(row, c0, &mut want);
                        decode_with(isa, &w, row, c0, &mut got);
                        assert_eq!(
                            got,
                            want,
                            "{isa:?} {:?} {rows}x{cols} row {row} cols {c0}+{len}",
                            w.format()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn integer_dots_match_scalar() {
    let mut rng = Rng(3);
    for cols in [32, 64, 96, 4096 + 32] {
        let x = rng.vec(cols);
        let mut xq = vec![ActBlock::default(); cols / QK];
        blocks::quantize_act(&x, &mut xq);
        for w in weights(&mut rng, 2, cols)
            .into_iter()
            .filter(|w| w.format().is_block())
        {
            let want = dot_q_scalar(w.format(), w.row_bytes(1), &xq);
            for isa in Isa::available() {
                let got = dot_q_with(isa, w.format(), w.row_bytes(1), &xq);
                assert!(
                    close(got, want, cols as f32),
                    "{isa:?} {:?} cols {cols}: {got} vs {want}",
                    w.format()
                );
                // Four tokens at once: each lane equals its own single dot.
                let x2: Vec<f32> = x.iter().map(|v| -0.5 * v + 0.1).collect();
                let mut xq2 = vec![ActBlock::default(); cols / QK];
                blocks::quantize_act(&x2, &mut xq2);
                let four = dot4_q_with(isa, w.format(), w.row_bytes(1), [&xq, &xq2, &xq2, &xq]);
                let want2 = dot_q_scalar(w.format(), w.row_bytes(1), &xq2);
                for (k, (g, e)) in four.iter().zip([want, want2, want2, want]).enumerate() {
                    assert!(
                        close(*g, e, cols as f32),
                        "{isa:?} {:?} dot4 lane {k}: {g} vs {e}",
                        w.format()
                    );
                }
            }
            // And the integer dot is close to the float dot of the dequantised values.
            let mut wf = vec![0f32; cols];
            w.decode(1, 0, &mut wf);
            let exact = dot_with(Isa::Scalar, &wf, &x);
            assert!(
                (want - exact).abs() < 0.02 * (cols as f32).sqrt(),
                "{:?}: {want} vs {exact}",
                w.format()
            );
        }
    }
}

#[test]
fn tiles_match_scalar_dots() {
    let mut rng = Rng(9);
    for cols in [32, 96, 1024] {
        let xs: Vec<Vec<ActBlock>> = (0..4)
            .map(|_| {
                let mut q = vec![ActBlock::default(); cols / QK];
                blocks::quantize_act(&rng.vec(cols), &mut q);
                q
            })
            .collect();
        for dtype in [WeightDtype::Q8_0, WeightDtype::Q4_0] {
            let w = Weight::from_f32(4, cols, &rng.vec(4 * cols)).convert(dtype);
            let rows = [0, 1, 2, 3].map(|r| w.row_bytes(r));
            let x = [0, 1, 2, 3].map(|t| &xs[t][..]);
            for isa in Isa::available() {
                let Some(tile) = tile4x4_q_with(isa, w.format(), rows, x) else {
                    continue;
                };
                for r in 0..4 {
                    for t in 0..4 {
                        let want = dot_q_scalar(w.format(), rows[r], x[t]);
                        assert!(
                            close(tile[r][t], want, cols as f32),
                            "{isa:?} {dtype:?} r{r} t{t}: {} vs {want}",
                            tile[r][t]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn x8_formats_are_ggml_rows_interleaved_and_their_tiles_match_scalar_row_dots() {
    let mut rng = Rng(10);
    type Quantize = fn(&[f32], &mut [u8]);
    let cases: [(WeightDtype, Format, Quantize); 2] = [
        (WeightDtype::Q4_0, Format::Q4_0, blocks::quantize_row_q4_0),
        (WeightDtype::Q8_0, Format::Q8_0, blocks::quantize_row_q8_0),
    ];
    for (dtype, ggml, quantize) in cases {
        for cols in [32, 96, 1024 + 32] {
            let rows = 16;
            let values = rng.vec(rows * cols);
            let w = Weight::from_f32(rows, cols, &values).convert(dtype);
            assert_eq!(w.format().row_group(), X8, "{dtype:?}");
            // The same numbers as ggml rows, only moved.
            let plain: Vec<Vec<u8>> = values
                .chunks_exact(cols)
                .map(|row| {
                    let mut b = vec![0u8; cols / QK * ggml.block_bytes()];
                    quantize(row, &mut b);
                    b
                })
                .collect();
            for (r, b) in plain.iter().enumerate() {
                let (mut got, mut want) = (vec![0f32; cols], vec![0f32; cols]);
                w.decode(r, 0, &mut got);
                decode_blocks_with(Isa::Scalar, &ggml, b, &mut want);
                assert_eq!(got, want, "{dtype:?} row {r} cols {cols}");
            }
            let xs: Vec<Vec<ActBlock>> = (0..4)
                .map(|_| {
                    let mut q = vec![ActBlock::default(); cols / QK];
                    blocks::quantize_act(&rng.vec(cols), &mut q);
                    q
                })
                .collect();
            let x = [0, 1, 2, 3].map(|t| &xs[t][..]);
            for g in 0..rows / X8 {
                for isa in Isa::available() {
                    for nt in 1..=4 {
                        let tile = tile8_x8_with(isa, w.format(), w.group_bytes(g), x, nt);
                        for (t, row) in tile.iter().enumerate().take(nt) {
                            for (r, v) in row.iter().enumerate() {
                                let want = dot_q_scalar(&ggml, &plain[g * X8 + r], x[t]);
                                assert!(
                                    close(*v, want, cols as f32),
                                    "{isa:?} {dtype:?} cols {cols} g{g} nt{nt} t{t} r{r}: {v} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmuls_match_naive_products_for_every_format() {
    let mut rng = Rng(4);
    for (rows, cols, n) in [
        (1, 32, 1),
        (37, 160, 3),
        (9, 130, 2),
        (200, 64, 1),
        (5, 288, 4),
        (7, 64, 6),
        (14, 96, 9),
        (24, 96, 9),
        (16, 160, 5),
        (8, 32, 4),
    ] {
        for w in weights(&mut rng, rows, cols) {
            let dense = w.to_f32();
            let quantised = w.format().is_block();
            for isa in Isa::available() {
                for threads in [1, 2] {
                    let pool = Pool::new(threads).unwrap();
                    let rr = rows / 3..rows;
                    let x = rng.vec(n * cols);
                    let mut y = vec![f32::NAN; n * rr.len()];
                    matmul_with(isa, &pool, &w, rr.clone(), &x, n, &mut y);
                    for t in 0..n {
                        for (i, r) in rr.clone().enumerate() {
                            let terms = (0..cols)
                                .map(|c| dense[r * cols + c] as f64 * x[t * cols + c] as f64);
                            let want: f64 = terms.clone().sum();
                            let mag: f64 = terms.map(f64::abs).sum::<f64>().max(1.0);
                            // Block formats also quantise the activations (~0.4% per value).
                            let tol = if quantised { 0.01 * mag } else { 1e-6 * mag };
                            assert!(
                                (y[t * rr.len() + i] as f64 - want).abs() < tol,
                                "{isa:?} {:?} {rows}x{cols} t{t} r{r}",
                                w.format()
                            );
                        }
                    }
                    let xt = rng.vec(n * rr.len());
                    let mut yt = vec![f32::NAN; n * cols];
                    matmul_t_with(isa, &pool, &w, rr.clone(), &xt, n, &mut yt);
                    for t in 0..n {
                        for c in 0..cols {
                            let terms = rr.clone().enumerate().map(|(i, r)| {
                                dense[r * cols + c] as f64 * xt[t * rr.len() + i] as f64
                            });
                            let want: f64 = terms.clone().sum();
                            let mag: f64 = terms.map(f64::abs).sum::<f64>().max(1.0);
                            assert!(
                                (yt[t * cols + c] as f64 - want).abs() < 1e-6 * mag,
                                "{isa:?} {:?} transposed",
                                w.format()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn quantised_matmul_is_bit_identical_across_isas_up_to_block_order() {
    // Integer block sums are exact; only the float sum over blocks may be reordered.
    let mut rng = Rng(5);
    let w = Weight::from_f32(16, 256, &rng.vec(16 * 256)).convert(WeightDtype::Q4_0);
    let x = rng.vec(256);
    let pool = Pool::new(1).unwrap();
    let mut want = vec![0f32; 16];
    matmul_with(Isa::Scalar, &pool, &w, 0..16, &x, 1, &mut want);
    for isa in Isa::available() {
        let mut got = vec![0f32; 16];
        matmul_with(isa, &pool, &w, 0..16, &x, 1, &mut got);
        assert!(
            got.iter().zip(&want).all(|(a, b)| close(*a, *b, 10.0)),
            "{isa:?}"
        );
    }
}

#[test]
fn matmul_pair_equals_two_matmuls() {
    let mut rng = Rng(6);
    for (ra, rb, cols, n) in [
        (5, 7, 64, 1),
        (33, 2, 96, 3),
        (1, 1, 32, 2),
        (130, 60, 160, 1),
        (16, 8, 64, 5),
        (40, 24, 96, 2),
    ] {
        for dtype in [
            WeightDtype::Auto,
            WeightDtype::BF16,
            WeightDtype::Q8_0,
            WeightDtype::Q4_0,
            WeightDtype::Q4_1,
        ] {
            let a = Weight::from_f32(ra, cols, &rng.vec(ra * cols)).convert(dtype);
            let b = Weight::from_f32(rb, cols, &rng.vec(rb * cols)).convert(dtype);
            let x = rng.vec(n * cols);
            for threads in [1, 2] {
                let pool = Pool::new(threads).unwrap();
                let (mut wa, mut wb) = (vec![0f32; n * ra], vec![0f32; n * rb]);
                matmul(&pool, &a, 0..ra, &x, n, &mut wa);
                matmul(&pool, &b, 0..rb, &x, n, &mut wb);
                let (mut ga, mut gb) = (vec![f32::NAN; n * ra], vec![f32::NAN; n * rb]);
                matmul_pair(&pool, &a, &b, &x, n, &mut ga, &mut gb);
                assert_eq!(
                    (ga, gb),
                    (wa, wb),
                    "{dtype:?} {ra}+{rb}x{cols} n{n} t{threads}"
                );
            }
        }
    }
}

/// Q8_K activations of `x`.
fn act_k(x: &[f32]) -> Vec<ActBlockK> {
    let mut q = vec![ActBlockK::default(); x.len() / QK_K];
    kblocks::quantize_act_k(x, &mut q);
    q
}

/// `sum |w_i| * |x_i - xq_i|` (f64): how far quantising the activations alone can move the dot
/// product of the row `w` (decoded) with `x`.
fn act_error_bound(w: &[f32], x: &[f32], xq: &[f32]) -> f64 {
    w.iter()
        .zip(x.iter().zip(xq))
        .map(|(&w, (&x, &q))| (w as f64).abs() * (x as f64 - q as f64).abs())
        .sum()
}

#[test]
fn integer_dots_equal_ggml_vec_dot_on_llama_cpp_rows() {
    // llama-quantize's rows, ggml's own activation blocks, ggml's own x86 dot products: the
    // integer sums must be the same, so only float rounding may differ.
    let x = f32s(&fixture("act.f32"));
    let xk = act_k(&x);
    // ggml's block_q8_0 (f16 d) and block_q8_1 (f16 d and s), as our 32-blocks.
    let q8 = |name: &str, bytes: usize| -> Vec<ActBlock> {
        fixture(name)
            .chunks_exact(bytes)
            .map(|b| {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                let qs: [i8; QK] = std::array::from_fn(|i| b[bytes - QK + i] as i8);
                let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                let s = if bytes == 36 {
                    half::f16::from_le_bytes([b[2], b[3]]).to_f32()
                } else {
                    d * sum as f32
                };
                ActBlock {
                    d,
                    qs,
                    s,
                    sum8: 8 * sum,
                }
            })
            .collect()
    };
    let (x8_0, x8_1) = (q8("act_q8_0.bin", 34), q8("act_q8_1.bin", 36));
    for (ty, name) in GOLDEN {
        let format = Format::from_ggml(ty).unwrap();
        let w = Weight::new(
            GROWS,
            GCOLS,
            format.clone(),
            Bytes::owned(fixture(&format!("{name}.bin"))),
        )
        .unwrap();
        let want = f32s(&fixture(&format!("{name}.dot")));
        let dense = f32s(&fixture(&format!("{name}.f32")));
        for (r, &want) in want.iter().enumerate() {
            let mag: f32 = dense[r * GCOLS..][..GCOLS]
                .iter()
                .zip(&x)
                .map(|(w, x)| (w * x).abs())
                .sum();
            let got = match format.info().activation {
                Activation::Q8K => kquant::dot_k_scalar(&format, w.row_bytes(r), &xk),
                _ if ty == GgmlType::Q5_1 => dot_q_scalar(&format, w.row_bytes(r), &x8_1),
                _ => dot_q_scalar(&format, w.row_bytes(r), &x8_0),
            };
            assert!(
                (got - want).abs() <= 1e-5 * mag.max(1e-30),
                "{ty} row {r}: ours {got} vs ggml {want}"
            );
        }
    }
}

#[test]
fn scalar_integer_dots_are_decode_dot_x_within_the_activation_rounding() {
    // The bound is exact: the integer dot equals sum(w * x_quantised) up to float rounding, so
    // it differs from sum(w * x) by at most sum(|w| * |x - x_quantised|).
    let mut rng = Rng(11);
    for format in STORED {
        for cols in [256, 512, 256 * 9] {
            let w = random_stored(&mut rng, &format, 3, cols);
            let x: Vec<f32> = rng.vec(cols).iter().map(|v| v * 3.0).collect();
            let (mut wf, mut xq) = (vec![0f32; cols], vec![0f32; cols]);
            let k = format.info().activation == Activation::Q8K;
            let (xk, x8) = if k {
                let q = act_k(&x);
                for (o, (b, i)) in xq
                    .iter_mut()
                    .zip(q.iter().flat_map(|b| (0..QK_K).map(move |i| (b, i))))
                {
                    *o = b.d * b.qs[i] as f32;
                }
                (q, vec![])
            } else {
                let mut q = vec![ActBlock::default(); cols / QK];
                blocks::quantize_act(&x, &mut q);
                for (o, (b, i)) in xq
                    .iter_mut()
                    .zip(q.iter().flat_map(|b| (0..QK).map(move |i| (b, i))))
                {
                    *o = b.d * b.qs[i] as f32;
                }
                (vec![], q)
            };
            for r in 0..3 {
                w.decode(r, 0, &mut wf);
                let exact: f64 = wf.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = wf
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let got = if k {
                    kquant::dot_k_scalar(&format, w.row_bytes(r), &xk)
                } else {
                    dot_q_scalar(&format, w.row_bytes(r), &x8)
                };
                let bound = act_error_bound(&wf, &x, &xq) + 1e-5 * mag;
                assert!(
                    (got as f64 - exact).abs() <= bound,
                    "{format:?} cols {cols} row {r}: {got} vs {exact} (bound {bound})"
                );
                // And the bound is tight enough to mean something: a few % of the magnitude.
                assert!(
                    bound < 0.05 * mag.max(1e-30),
                    "{format:?}: bound {bound} vs {mag}"
                );
            }
        }
    }
}

#[test]
fn super_block_kernels_match_scalar_for_1_to_4_tokens() {
    let mut rng = Rng(12);
    for format in STORED
        .into_iter()
        .filter(|f| f.info().activation == Activation::Q8K)
    {
        for cols in [256, 768, 256 * 17] {
            let w = random_stored(&mut rng, &format, 2, cols);
            let mut wf = vec![0f32; cols];
            w.decode(1, 0, &mut wf);
            let xv: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(cols)).collect();
            let xs: Vec<Vec<ActBlockK>> = xv.iter().map(|v| act_k(v)).collect();
            let x: Vec<&[ActBlockK]> = xs.iter().map(|v| &v[..]).collect();
            let want: Vec<f32> = x
                .iter()
                .map(|xt| kquant::dot_k_scalar(&format, w.row_bytes(1), xt))
                .collect();
            let mag: Vec<f32> = xv
                .iter()
                .map(|xt| wf.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum())
                .collect();
            for isa in Isa::available() {
                for nt in 1..=4 {
                    let mut got = vec![f32::NAN; nt];
                    kquant::dot_k_with(isa, &format, w.row_bytes(1), &x[..nt], &mut got);
                    for (t, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= 1e-5 * mag[t].max(1e-30),
                            "{isa:?} {format:?} cols {cols} nt {nt} t {t}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn stored_format_matmuls_match_scalar_for_odd_rows_and_1_to_9_tokens() {
    let mut rng = Rng(13);
    for format in STORED {
        for (rows, cols) in [(7, 256), (13, 512), (1, 256), (16, 256), (24, 512)] {
            // As loaded: 8-row groups interleaved where the format has an x8 form.
            let w = random_stored(&mut rng, &format, rows, cols).convert(WeightDtype::Auto);
            let dense = w.to_f32();
            let (rr, pool) = (rows / 3..rows, Pool::new(2).unwrap());
            for n in 1..=9 {
                let x = rng.vec(n * cols);
                let mut want = vec![f32::NAN; n * rr.len()];
                matmul_with(Isa::Scalar, &pool, &w, rr.clone(), &x, n, &mut want);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; n * rr.len()];
                    matmul_with(isa, &pool, &w, rr.clone(), &x, n, &mut got);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        // Only the float order differs: relative to sum |w x|.
                        let (t, r) = (i / rr.len(), rr.start + i % rr.len());
                        let mag: f32 = dense[r * cols..][..cols]
                            .iter()
                            .zip(&x[t * cols..][..cols])
                            .map(|(a, b)| (a * b).abs())
                            .sum();
                        assert!(
                            (g - e).abs() <= 1e-5 * mag.max(1e-30),
                            "{isa:?} {format:?} {rows}x{cols} n {n} at {i}: {g} vs {e}"
                        );
                    }
                }
                // matmul_pair shares one quantisation of x between the two matrices.
                let b = random_stored(&mut rng, &format, 5, cols);
                let (mut ya, mut yb) = (vec![0f32; n * rows], vec![0f32; n * 5]);
                matmul_pair(&pool, &w, &b, &x, n, &mut ya, &mut yb);
                let (mut wa, mut wb) = (vec![0f32; n * rows], vec![0f32; n * 5]);
                matmul(&pool, &w, 0..rows, &x, n, &mut wa);
                matmul(&pool, &b, 0..5, &x, n, &mut wb);
                assert_eq!((ya, yb), (wa, wb), "{format:?} pair n {n}");
            }
        }
    }
}

#[test]
fn kx8_formats_are_ggml_rows_interleaved_and_their_tiles_match_scalar_row_dots() {
    let mut rng = Rng(14);
    for (format, x8) in [
        (Format::Q4_K, Format::Q4_Kx8),
        (Format::Q6_K, Format::Q6_Kx8),
    ] {
        for cols in [256, 512, 256 * 5] {
            let rows = 16;
            let plain = random_stored(&mut rng, &format, rows, cols);
            let w = plain.convert(WeightDtype::Auto);
            assert_eq!(
                std::mem::discriminant(w.format()),
                std::mem::discriminant(&x8),
                "{format:?} with 16 rows loads as its x8 form"
            );
            // The same bits, only moved: decode and the GGUF bytes come back unchanged.
            assert_eq!(w.to_f32(), plain.to_f32(), "{x8:?} decode");
            let (ty, bytes) = w.to_ggml().unwrap();
            assert_eq!(
                (ty, &bytes[..]),
                (format.info().ggml.unwrap(), plain.data())
            );
            let mut part = vec![0f32; 300.min(cols - 3)];
            let mut want = part.clone();
            w.decode(9, 3, &mut part);
            plain.decode(9, 3, &mut want);
            assert_eq!(part, want, "{x8:?} partial decode");
            // Tiles against the scalar dot of each plain row.
            let xs: Vec<Vec<ActBlockK>> = (0..4).map(|_| act_k(&rng.vec(cols))).collect();
            let x = [0, 1, 2, 3].map(|t| &xs[t][..]);
            for g in 0..rows / X8 {
                for isa in Isa::available() {
                    for nt in 1..=4 {
                        let tile = kquant::tile8_kx8_with(isa, w.format(), w.group_bytes(g), x, nt);
                        for (t, row) in tile.iter().enumerate().take(nt) {
                            for (r, v) in row.iter().enumerate() {
                                let pr = plain.row_bytes(g * X8 + r);
                                let want = kquant::dot_k_scalar(&format, pr, x[t]);
                                let mut wf = vec![0f32; cols];
                                plain.decode(g * X8 + r, 0, &mut wf);
                                let mag: f32 =
                                    wf.iter()
                                        .zip(xs[t].iter().flat_map(|b| {
                                            b.qs.iter().map(move |&q| b.d * q as f32)
                                        }))
                                        .map(|(a, b)| (a * b).abs())
                                        .sum();
                                assert!(
                                    (v - want).abs() <= 1e-5 * mag.max(1e-30),
                                    "{isa:?} {x8:?} cols {cols} g{g} nt{nt} t{t} r{r}: {v} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn q5_0x8_is_ggml_rows_interleaved_and_its_tiles_match_scalar_row_dots() {
    let mut rng = Rng(15);
    for cols in [32, 96, 1024 + 32] {
        let rows = 16;
        let plain = random_stored(&mut rng, &Format::Q5_0, rows, cols);
        let w = plain.convert(WeightDtype::Auto);
        assert!(matches!(w.format(), Format::Q5_0x8));
        assert_eq!(w.to_f32(), plain.to_f32());
        assert_eq!(&w.to_ggml().unwrap().1[..], plain.data());
        let xs: Vec<Vec<ActBlock>> = (0..4)
            .map(|_| {
                let mut q = vec![ActBlock::default(); cols / QK];
                blocks::quantize_act(&rng.vec(cols), &mut q);
                q
            })
            .collect();
        let x = [0, 1, 2, 3].map(|t| &xs[t][..]);
        for g in 0..rows / X8 {
            for isa in Isa::available() {
                for nt in 1..=4 {
                    let tile = tile8_x8_with(isa, w.format(), w.group_bytes(g), x, nt);
                    for (t, row) in tile.iter().enumerate().take(nt) {
                        for (r, v) in row.iter().enumerate() {
                            let want =
                                dot_q_scalar(&Format::Q5_0, plain.row_bytes(g * X8 + r), x[t]);
                            assert!(
                                close(*v, want, cols as f32 * 0.1),
                                "{isa:?} cols {cols} g{g} nt{nt} t{t} r{r}: {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn for_each_part_hands_out_disjoint_parts() {
    let pool = Pool::new(2).unwrap();
    let mut buf = vec![0f32; 100];
    let bounds = [0, 10, 10, 55, 100];
    pool.for_each_part(&mut buf, &bounds, 1 << 20, |i, part| {
        part.iter_mut().for_each(|v| *v += i as f32 + 1.0)
    });
    let want: Vec<f32> = (0..100)
        .map(|j| {
            if j < 10 {
                1.0
            } else if j < 55 {
                3.0
            } else {
                4.0
            }
        })
        .collect();
    assert_eq!(buf, want);
}
