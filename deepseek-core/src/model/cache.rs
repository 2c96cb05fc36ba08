//! The KV cache and its rules: per layer and token one fixed-width row (MLA's normalised latent
//! and roped `k_pe`, or grouped-query attention's roped K then V of every KV head) stored in the
//! session's [`CacheDtype`], appended at a position, read back as runs of rows, truncated.
//!
//! Rows live in pages of [`PAGE`] tokens, so the cache grows without copying what it holds and
//! its memory is within a page of what the tokens need; pages are shared copy-on-write, so a
//! forked session reuses its parent's prefix without recomputing or copying it. Attention code
//! never sees the pages or resizes anything: it appends rows and reads [`KvRows`].

use std::ops::Range;
use std::sync::Arc;

use crate::kernels::attention::{self, CacheDtype, KvRows, Seg};

/// Tokens per page.
pub const PAGE: usize = 256;

/// Where each separately read part of a row lives: the parts (a latent and a RoPE key, or each
/// KV head's K and V) in order, each padded to the format's block so a Q8_0 block never
/// straddles two of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLayout {
    dtype: CacheDtype,
    /// Each part's width as the model writes it.
    widths: Vec<usize>,
    /// Each part's place in the stored row (padded).
    segs: Vec<Seg>,
    /// Values per stored row (padded).
    width: usize,
}

impl RowLayout {
    /// Parts of `widths` values, stored in `dtype`.
    pub fn new(widths: &[usize], dtype: CacheDtype) -> Self {
        let a = dtype.align();
        let mut col = 0;
        let segs = widths
            .iter()
            .map(|&w| {
                let s = Seg {
                    col,
                    width: w.next_multiple_of(a),
                };
                col += s.width;
                s
            })
            .collect();
        RowLayout {
            dtype,
            widths: widths.to_vec(),
            segs,
            width: col,
        }
    }

    /// The storage format.
    pub fn dtype(&self) -> CacheDtype {
        self.dtype
    }

    /// Part `i` in the stored row.
    pub fn seg(&self, i: usize) -> Seg {
        self.segs[i]
    }

    /// Parts `i..j` as one segment (they are contiguous).
    pub fn span(&self, parts: Range<usize>) -> Seg {
        let (a, b) = (self.segs[parts.start], self.segs[parts.end - 1]);
        Seg {
            col: a.col,
            width: b.col + b.width - a.col,
        }
    }

    /// Part `i`'s width as the model writes it (before padding).
    pub fn part_width(&self, i: usize) -> usize {
        self.widths[i]
    }

    /// Number of parts.
    pub fn parts(&self) -> usize {
        self.widths.len()
    }

    /// Values per stored row, padding included.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Values per row as the model writes it (parts back to back, no padding).
    pub fn input_width(&self) -> usize {
        self.widths.iter().sum()
    }

    /// Bytes per stored row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes(self.width)
    }

    /// Writes `values` (parts back to back) into the padded layout `out` (`width()` floats),
    /// padding with zeros: how a query must be laid out to be dotted with stored rows.
    pub fn place(&self, values: &[f32], out: &mut [f32]) {
        let mut at = 0;
        for (s, &w) in self.segs.iter().zip(&self.widths) {
            out[s.col..s.col + w].copy_from_slice(&values[at..at + w]);
            out[s.col + w..s.col + s.width].fill(0.0);
            at += w;
        }
    }
}

/// One layer's cached rows.
#[derive(Debug, Clone)]
pub struct LayerCache {
    layout: RowLayout,
    /// `PAGE` rows each; shared with forks until written.
    pages: Vec<Arc<Vec<u8>>>,
    len: usize,
}

impl LayerCache {
    /// An empty cache of rows in `layout`.
    pub fn new(layout: RowLayout) -> Self {
        LayerCache {
            layout,
            pages: Vec::new(),
            len: 0,
        }
    }

    /// The row layout.
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `rows` (`[n, layout.input_width()]`, parts back to back) as positions
    /// `pos..pos + n`, forgetting whatever was cached from `pos` on.
    ///
    /// # Panics
    /// If `pos` is beyond the cached tokens (positions are never skipped) or `rows` is not whole
    /// rows: both are bugs of the caller, not bad input.
    pub fn append(&mut self, pos: usize, rows: &[f32]) {
        let iw = self.layout.input_width();
        assert!(
            pos <= self.len && iw > 0 && rows.len().is_multiple_of(iw),
            "LayerCache::append: {} values at position {pos} of {} cached",
            rows.len(),
            self.len
        );
        let rb = self.layout.row_bytes();
        let dtype = self.layout.dtype;
        let mut pad = [0f32; 32];
        for (t, row) in rows.chunks_exact(iw).enumerate() {
            let p = pos + t;
            if p / PAGE == self.pages.len() {
                self.pages.push(Arc::new(vec![0u8; PAGE * rb]));
            }
            // A page shared with a fork is copied before its first write.
            let page = Arc::make_mut(&mut self.pages[p / PAGE]);
            let out = &mut page[(p % PAGE) * rb..][..rb];
            let mut at = 0;
            for (i, s) in self.layout.segs.iter().enumerate() {
                let w = self.layout.widths[i];
                let dst = &mut out[dtype.bytes(s.col)..][..dtype.bytes(s.width)];
                let full = w - w % dtype.align();
                attention::encode(dtype, &row[at..at + full], &mut dst[..dtype.bytes(full)]);
                if full < s.width {
                    // The last, partial block: zero-padded.
                    let tail = &mut pad[..s.width - full];
                    tail.fill(0.0);
                    tail[..w - full].copy_from_slice(&row[at + full..at + w]);
                    attention::encode(dtype, tail, &mut dst[dtype.bytes(full)..]);
                }
                at += w;
            }
        }
        self.len = pos + rows.len() / iw;
        self.pages.truncate(self.len.div_ceil(PAGE));
    }

    /// The cached rows of `range`, as runs of consecutive rows (one per page touched).
    ///
    /// # Panics
    /// If `range` reaches beyond the cached tokens.
    pub fn rows(&self, range: Range<usize>) -> impl Iterator<Item = KvRows<'_>> + '_ {
        assert!(
            range.end <= self.len,
            "LayerCache::rows: {range:?} of {} cached",
            self.len
        );
        let rb = self.layout.row_bytes();
        let (start, end) = (range.start, range.end);
        let pages = if start < end {
            start / PAGE..end.div_ceil(PAGE)
        } else {
            0..0
        };
        pages.map(move |p| {
            let lo = start.max(p * PAGE);
            let hi = end.min((p + 1) * PAGE);
            KvRows {
                data: &self.pages[p][(lo - p * PAGE) * rb..(hi - p * PAGE) * rb],
                row_bytes: rb,
                first: lo,
            }
        })
    }

    /// Part `part` of the rows of `range`, decoded to f32 into `out` (`[range.len(), seg
    /// width]`, padding included).
    pub fn decode(&self, range: Range<usize>, part: usize, out: &mut [f32]) {
        let s = self.layout.seg(part);
        let dtype = self.layout.dtype;
        let (b0, nb) = (dtype.bytes(s.col), dtype.bytes(s.width));
        let mut rows_out = out.chunks_exact_mut(s.width);
        for run in self.rows(range) {
            for j in 0..run.len() {
                let o = rows_out
                    .next()
                    .expect("LayerCache::decode: output too short");
                attention::decode(dtype, &run.row(j)[b0..b0 + nb], o);
            }
        }
    }

    /// Forgets every token from `len` on (nothing if fewer are cached).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.pages.truncate(len.div_ceil(PAGE));
        }
    }

    /// Bytes held by the pages (whole pages: at most one partly used).
    pub fn bytes(&self) -> usize {
        self.pages.len() * PAGE * self.layout.row_bytes()
    }

    /// Appends rows already encoded in this layout (`row_bytes()` each): restoring a saved
    /// cache.
    pub(crate) fn append_raw(&mut self, data: &[u8]) {
        let rb = self.layout.row_bytes();
        assert!(
            rb > 0 && data.len().is_multiple_of(rb),
            "LayerCache::append_raw: partial row"
        );
        for row in data.chunks_exact(rb) {
            let p = self.len;
            if p / PAGE == self.pages.len() {
                self.pages.push(Arc::new(vec![0u8; PAGE * rb]));
            }
            let page = Arc::make_mut(&mut self.pages[p / PAGE]);
            page[(p % PAGE) * rb..][..rb].copy_from_slice(row);
            self.len += 1;
        }
    }
}

/// Cached rows of every layer for the tokens a session has evaluated.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    layout: RowLayout,
}

impl KvCache {
    /// An empty cache for `layers` layers of rows in `layout`.
    pub fn new(layers: usize, layout: RowLayout) -> Self {
        KvCache {
            layers: vec![LayerCache::new(layout.clone()); layers],
            layout,
        }
    }

    /// The row layout every layer uses.
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    /// The storage format.
    pub fn dtype(&self) -> CacheDtype {
        self.layout.dtype
    }

    /// Layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Tokens cached (every layer holds the same).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len())
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything after the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(n));
    }

    /// Bytes one token occupies across all layers.
    pub fn bytes_per_token(&self) -> usize {
        self.layout.row_bytes() * self.layers.len()
    }

    /// Bytes the pages hold for the cached tokens (whole pages).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Layer `l`.
    pub fn layer(&self, l: usize) -> &LayerCache {
        &self.layers[l]
    }

    pub(crate) fn layer_mut(&mut self, l: usize) -> &mut LayerCache {
        &mut self.layers[l]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, width: usize, seed: f32) -> Vec<f32> {
        (0..n * width)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 3.0)
            .collect()
    }

    #[test]
    fn append_read_truncate_follow_positions_across_pages() {
        for dtype in CacheDtype::ALL {
            // Odd parts: padded to 32 for Q8_0, stored as is otherwise.
            let layout = RowLayout::new(&[40, 8], dtype);
            let mut c = LayerCache::new(layout.clone());
            let x = rows(PAGE + 40, 48, 0.5);
            c.append(0, &x[..10 * 48]);
            c.append(10, &x[10 * 48..]);
            assert_eq!(c.len(), PAGE + 40);
            assert_eq!(c.bytes(), 2 * PAGE * layout.row_bytes());
            let runs: Vec<_> = c.rows(PAGE - 3..PAGE + 5).collect();
            assert_eq!(runs.len(), 2, "{dtype}: a run per page");
            assert_eq!((runs[0].first, runs[0].len()), (PAGE - 3, 3));
            assert_eq!((runs[1].first, runs[1].len()), (PAGE, 5));
            // Decoded parts equal what was written, up to the format's rounding.
            let s = layout.seg(0);
            let mut got = vec![0f32; 6 * s.width];
            c.decode(PAGE - 3..PAGE + 3, 0, &mut got);
            for (t, g) in got.chunks_exact(s.width).enumerate() {
                let want = &x[(PAGE - 3 + t) * 48..][..40];
                for (a, b) in g[..40].iter().zip(want) {
                    assert!((a - b).abs() <= 3.0 / 100.0, "{dtype}: {a} vs {b}");
                }
                assert!(g[40..].iter().all(|v| *v == 0.0), "{dtype}: padding");
            }
            // Rewriting from a position forgets what followed.
            c.append(PAGE + 1, &x[..48]);
            assert_eq!(c.len(), PAGE + 2);
            c.truncate(7);
            assert_eq!((c.len(), c.bytes()), (7, PAGE * layout.row_bytes()));
            assert_eq!(c.rows(0..7).map(|r| r.len()).sum::<usize>(), 7);
            assert_eq!(c.rows(3..3).count(), 0);
        }
    }

    #[test]
    fn forks_share_pages_until_they_write() {
        let layout = RowLayout::new(&[64], CacheDtype::BF16);
        let mut a = LayerCache::new(layout);
        a.append(0, &rows(PAGE + 10, 64, 0.1));
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.pages[0], &b.pages[0]));
        b.append(PAGE + 10, &rows(1, 64, 0.9));
        assert!(
            Arc::ptr_eq(&a.pages[0], &b.pages[0]),
            "full page stays shared"
        );
        assert!(
            !Arc::ptr_eq(&a.pages[1], &b.pages[1]),
            "written page is copied"
        );
        let first = |c: &LayerCache, p| c.rows(p..p + 1).next().unwrap().data.to_vec();
        assert_eq!(first(&a, PAGE + 9), first(&b, PAGE + 9));
        assert_eq!(a.len(), PAGE + 10);
        a.append(PAGE + 10, &rows(1, 64, 0.2));
        assert_ne!(first(&a, PAGE + 10), first(&b, PAGE + 10));
    }

    #[test]
    #[should_panic(expected = "position 5 of 3")]
    fn skipping_positions_is_a_bug() {
        let mut c = LayerCache::new(RowLayout::new(&[8], CacheDtype::F32));
        c.append(0, &[0.0; 24]);
        c.append(5, &[0.0; 8]);
    }
}
