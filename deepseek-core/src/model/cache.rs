//! The KV cache: per layer and token one fixed-width row, MLA's normalised latent and roped
//! `k_pe`, or grouped-query attention's roped K then V of every KV head.

/// Cached rows of every layer for the tokens a session has evaluated.
#[derive(Debug, Clone)]
pub struct KvCache {
    width: usize,
    layers: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of `width` values per token.
    pub fn new(layers: usize, width: usize) -> Self {
        KvCache {
            width,
            layers: vec![Vec::new(); layers],
            len: 0,
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            self.len = n;
            for l in &mut self.layers {
                l.truncate(n * self.width);
            }
        }
    }

    /// Bytes one token occupies across all layers.
    pub fn bytes_per_token(&self) -> usize {
        self.width * self.layers.len() * std::mem::size_of::<f32>()
    }

    /// Bytes actually held for the cached tokens.
    pub fn bytes_used(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.len() * std::mem::size_of::<f32>())
            .sum()
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> &mut Vec<f32> {
        &mut self.layers[layer]
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(self.layers.iter().all(|l| l.len() == n * self.width));
        self.len = n;
    }
}
