//! Every SIMD level against the scalar reference, on random data with odd sizes and tails.

use super::*;
use crate::quant::WeightDtype;

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

/// `full`, or under Miri (an interpreter, about 10^4 times slower) the `miri` cases: each test's
/// smallest and most awkward sizes, enough to run every unsafe path on every ISA Miri has.
fn sizes<T: Copy>(full: &[T], miri: &[T]) -> Vec<T> {
    if cfg!(miri) { miri } else { full }.to_vec()
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1.0)
}

/// Weights of every format, `rows x cols` (cols a multiple of 32 for the block formats).
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
        let full: Vec<usize> = (0..70).chain([127, 1000, 1027]).collect();
        for n in sizes(&full, &[0, 1, 7, 8, 9, 16, 17, 33]) {
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
    let full = [(3, 160), (130, 96), (5, 7), (2, 259), (16, 288)];
    for (rows, cols) in sizes(&full, &[(3, 96), (5, 7)]) {
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
    for cols in sizes(&[32, 64, 96, 4096 + 32], &[32, 96]) {
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
    for cols in sizes(&[32, 96, 1024], &[32, 64]) {
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
        for cols in sizes(&[32, 96, 1024 + 32], &[32]) {
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
    let full = [
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
    ];
    for (rows, cols, n) in sizes(&full, &[(1, 32, 1), (9, 33, 2), (16, 64, 5)]) {
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
    let cols = if cfg!(miri) { 64 } else { 256 };
    let w = Weight::from_f32(16, cols, &rng.vec(16 * cols)).convert(WeightDtype::Q4_0);
    let x = rng.vec(cols);
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
    let full = [
        (5, 7, 64, 1),
        (33, 2, 96, 3),
        (1, 1, 32, 2),
        (130, 60, 160, 1),
        (16, 8, 64, 5),
        (40, 24, 96, 2),
    ];
    for (ra, rb, cols, n) in sizes(&full, &[(1, 1, 32, 2), (9, 8, 32, 5)]) {
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
