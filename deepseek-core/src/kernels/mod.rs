//! Compute over [`Weight`]s: matrix products, dot products and the thread pool.
//!
//! The only place that matches on a weight's format to compute. Each product decodes a weight
//! row a chunk at a time into a stack buffer and reuses it for every token, so weights are read
//! once per call whatever the number of tokens, and nothing is allocated. Knows no layers.

mod pool;

pub use pool::Pool;

use std::ops::Range;

use crate::quant::Weight;

/// Columns decoded per step; a multiple of FP8's 128-wide blocks keeps segments whole.
const CHUNK: usize = 128;

/// `y[t, r] = sum_c x[t, c] * W[rows.start + r, c]` for `t < n`.
///
/// `x` is `[n, w.cols()]`, `y` is `[n, rows.len()]`, both row-major.
pub fn matmul(pool: &Pool, w: &Weight, rows: Range<usize>, x: &[f32], n: usize, y: &mut [f32]) {
    let (cols, m) = (w.cols(), rows.len());
    assert!(
        rows.end <= w.rows() && x.len() == n * cols && y.len() == n * m,
        "matmul: shape mismatch"
    );
    let out = SyncPtr(y.as_mut_ptr());
    pool.for_each_range(m, cols * n, |r| {
        let mut buf = [0f32; CHUNK];
        for i in r {
            let row = rows.start + i;
            for t in 0..n {
                // SAFETY: each task owns a disjoint set of output columns `i`; see Pool::for_each_range.
                unsafe { *out.at(t * m + i) = 0.0 };
            }
            let mut c0 = 0;
            while c0 < cols {
                let len = CHUNK.min(cols - c0);
                let wrow = &mut buf[..len];
                w.decode(row, c0, wrow);
                for t in 0..n {
                    let d = dot(wrow, &x[t * cols + c0..][..len]);
                    // SAFETY: as above.
                    unsafe { *out.at(t * m + i) += d };
                }
                c0 += len;
            }
        }
    });
}

/// `y[t, c] = sum_r x[t, r] * W[rows.start + r, c]` for `t < n`: the product with `W[rows]^T`.
///
/// `x` is `[n, rows.len()]`, `y` is `[n, w.cols()]`.
pub fn matmul_t(pool: &Pool, w: &Weight, rows: Range<usize>, x: &[f32], n: usize, y: &mut [f32]) {
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
                w.decode(row, c0, wrow);
                for t in 0..n {
                    // SAFETY: as above.
                    let yt = unsafe { std::slice::from_raw_parts_mut(out.at(t * cols + c0), len) };
                    axpy(x[t * m + i], wrow, yt);
                }
            }
        }
    });
}

/// Dot product with eight independent partial sums (lets the compiler vectorise without
/// reassociating: the order is fixed, so results are reproducible).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let ac = a.chunks_exact(8);
    let bc = b.chunks_exact(8);
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
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
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matmul_and_transpose_match_naive_on_odd_sizes() {
        let mut seed = 7;
        for &(rows, cols, n) in &[
            (1, 1, 1),
            (5, 130, 3),
            (33, 257, 2),
            (7, 128, 5),
            (300, 19, 1),
        ] {
            let wv = rand_vec(rows * cols, &mut seed);
            let w = Weight::from_f32(rows, cols, &wv);
            for threads in [1, 2] {
                let pool = Pool::new(threads).unwrap();
                let lo = rows / 3;
                let rr = lo..rows;
                let x = rand_vec(n * cols, &mut seed);
                let mut y = vec![f32::NAN; n * rr.len()];
                matmul(&pool, &w, rr.clone(), &x, n, &mut y);
                for t in 0..n {
                    for (i, r) in rr.clone().enumerate() {
                        let want: f64 = (0..cols)
                            .map(|c| wv[r * cols + c] as f64 * x[t * cols + c] as f64)
                            .sum();
                        assert!(
                            (y[t * rr.len() + i] as f64 - want).abs() < 1e-4,
                            "{rows}x{cols} t{t} r{r}"
                        );
                    }
                }
                let xt = rand_vec(n * rr.len(), &mut seed);
                let mut yt = vec![f32::NAN; n * cols];
                matmul_t(&pool, &w, rr.clone(), &xt, n, &mut yt);
                for t in 0..n {
                    for c in 0..cols {
                        let want: f64 = rr
                            .clone()
                            .enumerate()
                            .map(|(i, r)| wv[r * cols + c] as f64 * xt[t * rr.len() + i] as f64)
                            .sum();
                        assert!((yt[t * cols + c] as f64 - want).abs() < 1e-4);
                    }
                }
            }
        }
    }
}
